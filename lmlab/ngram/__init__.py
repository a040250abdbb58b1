"""lmlab.ngram: count-based language models."""

from .unigram import UnigramLM

__all__ = ["UnigramLM"]
