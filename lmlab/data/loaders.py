"""Batches for training, each a pure function of the step number (so resuming is exact and every
data-parallel rank can take its own rows of the same global batch).

* ``RandomWindows`` — random contiguous windows of ``context + 1`` ids (GPT-style pretraining);
* ``ContiguousStream`` — the token stream cut into ``batch_size`` parallel streams read in
  order, window after window (truncated BPTT: the hidden state carries across windows);
* ``pad_batch`` / ``length_buckets`` — right-padded sentence batches with masks, grouped by
  length so that little padding is wasted.

A batch is a dict: ``input`` [B, T], ``target`` [B, T] (long tensors) and, for streams,
``reset`` (True at the start of a pass: carried state must be cleared).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..core.errors import ConfigError, DataError
from ..core.seed import make_generator
from ..core.validate import check_number


def shuffled_batch(rows: int, batch_size: int, index: int, seed: int = 0) -> list[int]:
    """The row numbers of batch ``index`` when ``rows`` rows are cut into whole batches of ``batch_size``
    and reshuffled at every pass through them (seeded by ``seed`` and the pass number): a pure
    function of ``index``, so a resumed run sees the same batches."""
    epoch, k = divmod(index, rows // batch_size)
    order = list(range(rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[k * batch_size:(k + 1) * batch_size]


def rank_rows(batch_size: int, rank: int, world: int) -> range:
    if batch_size % world:
        raise ConfigError(f"the batch of {batch_size} rows cannot be split over {world} processes",
                          "use a batch size divisible by the number of processes")
    return range(rank, batch_size, world)


class RandomWindows:
    """Windows at uniformly random offsets; step ``s`` always gives the same global batch."""

    def __init__(self, tokens, batch_size: int, context: int, seed: int = 0) -> None:
        self.tokens, self.batch_size, self.context, self.seed = tokens, batch_size, context, seed
        check_number("batch_size", batch_size, low=1, integer=True)
        check_number("context", context, low=1, integer=True)
        if len(tokens) < context + 1:
            raise DataError(f"only {len(tokens)} tokens: too few for windows of {context} + 1",
                            "use a shorter context or more data")

    def batch(self, step: int, rank: int = 0, world: int = 1) -> dict:
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.context, size=self.batch_size)
        rows = np.stack([self.tokens.read(int(starts[r]), self.context + 1) for r in rank_rows(self.batch_size, rank, world)])
        ids = torch.from_numpy(rows.astype(np.int64))
        return {"input": ids[:, :-1], "target": ids[:, 1:]}


class ContiguousStream:
    """``batch_size`` equal streams read in order, ``bptt`` tokens at a time, looping forever."""

    def __init__(self, tokens, batch_size: int, bptt: int) -> None:
        check_number("batch_size", batch_size, low=1, integer=True)
        check_number("bptt", bptt, low=1, integer=True)
        self.tokens, self.batch_size, self.bptt = tokens, batch_size, bptt
        self.stream_length = (len(tokens) - 1) // batch_size
        if self.stream_length < 2:
            raise DataError(f"only {len(tokens)} tokens for {batch_size} streams", "use a smaller batch")
        self.windows_per_pass = -(-self.stream_length // bptt)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> dict:
        window = step % self.windows_per_pass
        start = window * self.bptt
        length = min(self.bptt, self.stream_length - start)
        rows = [self.tokens.read(r * self.stream_length + start, length + 1)
                for r in rank_rows(self.batch_size, rank, world)]
        ids = torch.from_numpy(np.stack(rows).astype(np.int64))
        return {"input": ids[:, :-1], "target": ids[:, 1:], "reset": window == 0}


class ShuffledRows:
    """Which of ``n`` items make batch ``index``: passes over the items one after another, each in a
    fresh permutation seeded by ``seed + pass`` (or in order), so a batch is a pure function of its index."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        check_number("batch_size", batch_size, low=1, integer=True)
        if n < 1:
            raise DataError("there are no rows to draw batches from", "give at least one example")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int) -> list[int]:
        """The item order of pass ``epoch`` (the latest pass is cached)."""
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(self.n, generator=make_generator(self.seed + epoch)).tolist()
                            if self.shuffle else list(range(self.n))}
        return self._orders[epoch]

    def indices(self, index: int, rank: int = 0, world: int = 1) -> list[int]:
        """Item indices of batch ``index`` for process ``rank`` of ``world`` (each its own rows)."""
        start = (index * world + rank) * self.batch_size
        return [self.order(epoch)[at] for epoch, at in
                (divmod(position, self.n) for position in range(start, start + self.batch_size))]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, left: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into ``ids`` [B, T] and ``mask`` [B, T] (True = real token); ``left``: left-pad
    them instead (rows right-aligned, as a decoder continues them)."""
    if not sequences:
        raise DataError("an empty batch cannot be padded")
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for row, seq in enumerate(sequences):
        at = slice(length - len(seq), length) if left else slice(0, len(seq))
        ids[row, at] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, at] = True
    return ids, mask


def length_buckets(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int, *,
                   seed: int | None = 0, bucket_factor: int = 50) -> Iterator[dict]:
    """Padded sentence batches: shuffled, then sorted by length within pools of
    ``batch_size × bucket_factor`` sentences, so each batch holds similar lengths. Each batch
    has ``input``/``target`` (shifted by one) and ``mask`` over the targets."""
    check_number("batch_size", batch_size, low=1, integer=True)
    order = np.arange(len(sequences))
    if seed is not None:
        np.random.default_rng(seed).shuffle(order)
    pool = batch_size * bucket_factor
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i:i + pool], key=lambda j: len(sequences[j]))
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    if seed is not None:
        np.random.default_rng(seed + 1).shuffle(batches)
    for rows in batches:
        seqs = [sequences[j] for j in rows if len(sequences[j]) >= 2]
        if not seqs:
            continue
        ids, mask = pad_batch(seqs, pad_id)
        yield {"input": ids[:, :-1], "target": ids[:, 1:], "mask": mask[:, 1:]}
