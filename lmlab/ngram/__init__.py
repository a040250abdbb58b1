"""lmlab.ngram: count-based language models (unigram reference, n-gram family, ARPA, pruning)."""

from .counts import NgramCounts, count_ngrams
from .model import NgramLM, corpus_counts, fit_jm_lambdas
from .smoothing import SMOOTHINGS, estimate
from .unigram import UnigramLM

__all__ = ["NgramCounts", "NgramLM", "SMOOTHINGS", "UnigramLM", "corpus_counts", "count_ngrams", "estimate",
           "fit_jm_lambdas"]
