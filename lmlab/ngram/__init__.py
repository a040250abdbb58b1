"""lmlab.ngram: count-based language models (unigram reference, n-gram family, ARPA, pruning).

Its names are imported on first use (``lmlab.core.lazy``), so that ``lmlab --help`` can list the
smoothings (``lmlab.ngram.smoothing``, numpy only) without importing the torch-backed models.
"""

from ..core.lazy import lazy_exports

#: the names this package exports, and the module each lives in
EXPORTS = {"NgramCounts": "counts", "count_ngrams": "counts", "NgramLM": "model", "corpus_counts": "model",
           "fit_jm_lambdas": "model", "fit_word_model": "model", "SMOOTHINGS": "smoothing", "estimate": "smoothing", "UnigramLM": "unigram"}

__all__ = sorted(EXPORTS)
__getattr__ = lazy_exports(__name__, EXPORTS)
