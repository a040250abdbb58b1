"""Padded, length-bucketed batches of labelled token ids for the trainer, shuffled or class-balanced.

``source.batch(index)`` is a pure function of the index (the trainer's contract), so a resumed
run sees the same batches. Batches are planned a chunk of ``bucket`` batches at a time: the
chunk's examples are drawn (the next slice of a per-epoch permutation, or with class-balanced
probabilities), sorted by length and cut into batches, whose order is then shuffled — each
batch holds texts of similar length, so little of it is padding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from ..core.validate import check_choice, check_number
from ..data.loaders import pad_batch

SAMPLERS = ("shuffle", "balanced")


def balanced_probabilities(y: np.ndarray) -> np.ndarray:
    """Per-example sampling probabilities under which every class is drawn equally often."""
    counts = np.bincount(y)
    p = 1.0 / counts[y]
    return p / p.sum()


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id rows into (ids [B, T], mask [B, T] with 1 for real tokens): ``pad_batch``, 0/1 mask."""
    ids, mask = pad_batch(rows, pad_id)
    return ids, mask.long()


class LabeledBatches:
    """Batches ``{"input", "mask", "label"}`` of ``batch_size`` examples for ``lmlab.train.train``."""

    def __init__(self, rows: Sequence[Sequence[int]], labels: np.ndarray, *, batch_size: int, pad_id: int,
                 sampler: str = "shuffle", bucket: int = 50, seed: int = 0) -> None:
        self.rows, self.labels = list(rows), np.asarray(labels, dtype=np.int64)
        self.lengths = np.array([len(r) for r in self.rows])
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self.sampler = check_choice("sampler", sampler, SAMPLERS)
        self.bucket = int(check_number("bucket", bucket, low=1, integer=True))
        self.pad_id, self.seed = pad_id, seed
        self.probabilities = balanced_probabilities(self.labels) if sampler == "balanced" else None

    @property
    def batches_per_epoch(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def _drawn(self, chunk: int) -> np.ndarray:
        """The example indices of one chunk (``bucket`` batches' worth)."""
        size = self.bucket * self.batch_size
        if self.probabilities is not None:
            rng = np.random.default_rng([self.seed, chunk])
            return rng.choice(len(self.rows), size=size, p=self.probabilities)
        n, start = len(self.rows), chunk * size
        out = [self._permutation(e)[max(start - e * n, 0):start + size - e * n]
               for e in range(start // n, (start + size - 1) // n + 1)]
        return np.concatenate(out)

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one source lives as long as its training run)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 1 << 20, epoch]).permutation(len(self.rows))

    @functools.lru_cache(maxsize=2)  # noqa: B019
    def _plan(self, chunk: int) -> list[np.ndarray]:
        drawn = self._drawn(chunk)
        drawn = drawn[np.argsort(self.lengths[drawn], kind="stable")]
        batches = [drawn[i:i + self.batch_size] for i in range(0, len(drawn), self.batch_size)]
        order = np.random.default_rng([self.seed, 2 << 20, chunk]).permutation(len(batches))
        return [batches[i] for i in order]

    def indices(self, index: int) -> np.ndarray:
        """The example indices of batch ``index``."""
        return self._plan(index // self.bucket)[index % self.bucket]

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict:
        pick = self.indices(index)[rank::world]
        ids, mask = pad_rows([self.rows[i] for i in pick], self.pad_id)
        return {"input": ids, "mask": mask, "label": torch.from_numpy(self.labels[pick])}
