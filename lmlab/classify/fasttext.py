"""A fastText-style classifier (Joulin et al., 2016): averaged word and hashed-bigram vectors → softmax.

Words seen in training get their own rows; every word n-gram (n ≤ ``word_ngrams``) is hashed
into one of ``buckets`` extra rows with fastText's rule (FNV-1a word hashes combined by
h·116049371 + h'), so unseen n-grams cost nothing. Trained by SGD with a linearly decaying
rate in a numba kernel, one pass per epoch over the examples in order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from ..core.optional import import_optional
from ..core.validate import check_number
from .base import ClassifierMixin, class_weights, encode_labels
from .features import tokenize_all

_MASK64 = (1 << 64) - 1
EOS = "</s>"  # fastText ends every line with this token; it takes part in the n-grams


def fnv1a(word: str) -> int:
    """fastText's 32-bit FNV-1a hash of a word's UTF-8 bytes (bytes taken as signed chars)."""
    h = 2166136261
    for b in word.encode("utf-8"):
        h ^= (b - 256 if b > 127 else b) & 0xFFFFFFFF
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def _kernels():
    return import_optional("lmlab.classify._kernels", "numba", "the fastText-style classifier")


class FastTextClassifier(ClassifierMixin):
    """Bag of words + hashed word n-grams, ``dim``-dimensional, softmax output."""

    kind = "fasttext"

    def __init__(self, dim: int = 10, epochs: int = 5, lr: float = 0.1, word_ngrams: int = 2,
                 buckets: int = 2_000_000, min_count: int = 1, class_weight: str = "none", seed: int = 0) -> None:
        self.dim = int(check_number("dim", dim, low=1, integer=True))
        self.epochs = int(check_number("epochs", epochs, low=1, integer=True))
        self.lr = float(check_number("lr", lr, low=0, low_inclusive=False))
        self.word_ngrams = int(check_number("word_ngrams", word_ngrams, low=1, integer=True))
        self.buckets = int(check_number("buckets", buckets, low=1, integer=True))
        self.min_count = int(check_number("min_count", min_count, low=1, integer=True))
        self.class_weight = class_weight
        self.seed = seed
        self.classes = None
        self.vocab: dict[str, int] = {}

    def _rows(self, docs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Input-row ids of every document, flattened, with offsets."""
        vocab, v, buckets = self.vocab, len(self.vocab), self.buckets
        hashes: dict[str, int] = {}
        rows: list[int] = []
        offsets = [0]
        for d in docs:
            d = d + [EOS]
            hs = [hashes.get(w) or hashes.setdefault(w, fnv1a(w)) for w in d]
            rows.extend(vocab[w] for w in d if w in vocab)
            for i in range(len(d)):
                h = hs[i]
                for j in range(i + 1, min(len(d), i + self.word_ngrams)):
                    h = (h * 116049371 + hs[j]) & _MASK64
                    rows.append(v + h % buckets)
            offsets.append(len(rows))
        return np.array(rows, dtype=np.int64), np.array(offsets, dtype=np.int64)

    def fit(self, texts: Sequence[str], labels: Sequence) -> FastTextClassifier:
        k = _kernels()
        self.classes, y = encode_labels(texts, labels)
        weights = class_weights(y, len(self.classes), self.class_weight)[y].astype(np.float64)
        docs = tokenize_all(texts, "training texts")
        counts = Counter(w for d in docs for w in d)
        counts[EOS] = len(docs)
        self.vocab = {w: i for i, w in enumerate(w for w, c in counts.items() if c >= self.min_count)}
        rows, offsets = self._rows(docs)
        rng = np.random.default_rng(self.seed)
        self.input = rng.uniform(-1 / self.dim, 1 / self.dim, (len(self.vocab) + self.buckets, self.dim)).astype(np.float32)
        self.output = np.zeros((len(self.classes), self.dim), dtype=np.float32)
        tokens = np.array([len(d) + 1 for d in docs], dtype=np.float64)
        position = (np.cumsum(tokens) - tokens) / tokens.sum()
        self.loss = float(k.train_fasttext(self.input, self.output, rows, offsets, y, weights, position,
                                           self.epochs, self.lr))
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        rows, offsets = self._rows(tokenize_all(texts))
        sums = np.add.reduceat(self.input[rows], offsets[:-1], axis=0) if len(rows) else \
            np.zeros((len(offsets) - 1, self.dim), dtype=np.float32)
        lengths = np.diff(offsets)
        sums[lengths == 0] = 0  # reduceat copies the next row for empty spans
        hidden = sums / np.maximum(lengths, 1)[:, None]
        z = hidden @ self.output.T
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {"dim": self.dim, "epochs": self.epochs, "lr": self.lr, "word_ngrams": self.word_ngrams,
                  "buckets": self.buckets, "min_count": self.min_count, "class_weight": self.class_weight,
                  "seed": self.seed, "classes": self.classes, "vocab": list(self.vocab)}
        return config, {"input": torch.from_numpy(self.input), "output": torch.from_numpy(self.output)}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> FastTextClassifier:
        keys = ("dim", "epochs", "lr", "word_ngrams", "buckets", "min_count", "class_weight", "seed")
        model = cls(**{key: config[key] for key in keys})
        model.classes = list(config["classes"])
        model.vocab = {w: i for i, w in enumerate(config["vocab"])}
        model.input, model.output = tensors["input"].numpy(), tensors["output"].numpy()
        return model
