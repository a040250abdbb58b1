"""lmlab.eval: metrics and evaluation.

Its names are imported on first use (``lmlab.core.lazy``), so that a light metric module
(``lmlab.eval.bleu``, whose choices ``lmlab --help`` lists) does not import torch.
"""

from ..core.lazy import lazy_exports

#: the names this package exports, and the module each lives in
EXPORTS = {name: "lm_metrics" for name in ("LMScore", "bits_per_unit", "comparability_note", "cross_entropy_nats",
                                            "evaluate_lm", "perplexity", "windows")}

__all__ = sorted(EXPORTS)
__getattr__ = lazy_exports(__name__, EXPORTS)
