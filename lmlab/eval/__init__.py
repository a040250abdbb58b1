"""lmlab.eval: metrics and evaluation."""

from .lm_metrics import (
    LMScore,
    bits_per_unit,
    comparability_note,
    cross_entropy_nats,
    evaluate_lm,
    perplexity,
    windows,
)

__all__ = ["LMScore", "bits_per_unit", "comparability_note", "cross_entropy_nats", "evaluate_lm", "perplexity",
           "windows"]
