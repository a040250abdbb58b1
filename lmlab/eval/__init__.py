"""lmlab.eval: metrics and evaluation."""

from .lm_metrics import LMScore, bits_per_unit, cross_entropy_nats, evaluate_lm, perplexity

__all__ = ["LMScore", "bits_per_unit", "cross_entropy_nats", "evaluate_lm", "perplexity"]
