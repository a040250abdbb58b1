"""Text encoders for model-based metrics (BERTScore, MAUVE), by name.

An entry of ``ENCODERS`` is a factory returning an object with ``tokens(texts)`` →
``[(tokens, array[T, D])]`` and ``sentences(texts)`` → ``array[N, D]``. Built in is
``hash``: character-trigram feature hashing, a deterministic, dependency-free baseline
for smoke tests; the MiniLM sentence encoder registers itself here as ``minilm``.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from ..core.registry import Registry

ENCODERS: Registry = Registry("text encoder")


class HashingEncoder:
    """Each word is the sum of its hashed character trigrams ("<ca", "cat", "at>") in ``dim`` buckets."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def word(self, word: str) -> np.ndarray:
        vec = np.zeros(self.dim)
        padded = f"<{word.lower()}>"
        for i in range(max(len(padded) - 2, 1)):
            h = zlib.crc32(padded[i:i + 3].encode("utf-8"))
            vec[h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return vec

    def tokens(self, texts: list[str]) -> list[tuple[list[str], np.ndarray]]:
        out = []
        for text in texts:
            words = re.findall(r"\w+|[^\w\s]", text)
            out.append((words, np.array([self.word(w) for w in words]).reshape(len(words), self.dim)))
        return out

    def sentences(self, texts: list[str]) -> np.ndarray:
        return np.array([emb.mean(axis=0) if len(emb) else np.zeros(self.dim) for _, emb in self.tokens(texts)])


ENCODERS.register("hash", HashingEncoder)


def _minilm():
    """all-MiniLM-L6-v2 (``lmlab.embeddings``): word-piece vectors for BERTScore, sentences for MAUVE."""
    from ..embeddings.sentence import sentence_encoder

    return sentence_encoder("minilm")


ENCODERS.register("minilm", _minilm)
