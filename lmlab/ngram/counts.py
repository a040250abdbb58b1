"""Vectorised n-gram counting: every order up to N from one array of token ids.

Sentences are laid end to end, each as ``<s> w1 … wk </s>``; an n-gram never crosses a
sentence start and never ends at ``<s>`` (KenLM's convention: one ``<s>``, no padding).
Order 1 is dense (index = id). An n-gram of order n > 1 is stored as the packed int64 key
``prefix_index * V + last_word``, where ``prefix_index`` is the row of its first n-1 words
in the order n-1 table; keys are sorted, so every order is a sorted array searched with
``np.searchsorted`` — never a dict per n-gram. Order n is counted from order n-1 (numba,
``_kernels``): the positions sorted by their (n-1)-gram, shifted by one, are the positions
grouped by their n-gram's prefix, so only the small groups need sorting by word.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError
from ..core.machine import parallel_workers
from ..core.progress import progress
from ..core.validate import check_number


@dataclass
class NgramCounts:
    """Raw counts of every order; ``keys[n-1]``/``counts[n-1]``/``suffix[n-1]`` describe order n.

    ``suffix[n-1][i]`` is the row of n-gram i without its first word in order n-1
    (for order 1 it is empty). ``counts[0][w]`` counts the predicted occurrences of id w.
    """

    vocab_size: int
    keys: list[np.ndarray]
    counts: list[np.ndarray]
    suffix: list[np.ndarray]
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    #: per lower order, the row of the n-gram that lmplz flushes last (see ``kenlm_last_rows``)
    kenlm_last: list[int] | None = None

    @property
    def order(self) -> int:
        return len(self.keys)

    def sizes(self) -> list[int]:
        """Number of distinct n-grams of each order (order 1: ids seen as a predicted token)."""
        return [int((self.counts[0] > 0).sum())] + [len(k) for k in self.keys[1:]]


def lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of each query key in the sorted ``keys``, or -1 (negative queries are never found)."""
    if len(keys) == 0:
        return np.full(np.shape(query), -1, dtype=np.int64)
    flat = np.ravel(query)
    if flat.size > 1 << 14 and (np.diff(flat) < 0).any():
        # binary searches in ascending query order walk the keys' cache lines in order: sort first
        order = np.argsort(flat)
        pos = np.empty(flat.size, dtype=np.int64)
        pos[order] = np.searchsorted(keys, flat[order])
        pos = pos.reshape(np.shape(query))
    else:
        pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, len(keys) - 1)
    found = (keys[pos] == query) & (query >= 0)
    return np.where(found, pos, -1)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class KeyIndex:
    """An open-addressing hash of sorted n-gram keys → rows: O(1) vectorised lookups for scoring.

    Linear probing at load ≤ 0.5, built and queried a whole array at a time (one numpy pass
    per probe step); ``find`` returns what ``lookup`` does, several times faster on big tables.
    """

    def __init__(self, keys: np.ndarray) -> None:
        bits = max(4, int(2 * len(keys)).bit_length())
        self.shift = np.uint64(64 - bits)
        self.mask = (1 << bits) - 1
        self.slot_key = np.full(1 << bits, -1, dtype=np.int64)
        self.slot_row = np.zeros(1 << bits, dtype=np.int64)
        pending = np.arange(len(keys))
        home = self._hash(keys)
        probe = 0
        while pending.size:
            slot = (home[pending] + probe) & self.mask
            free = self.slot_key[slot] == -1
            taken, first = np.unique(slot[free], return_index=True)  # one winner per free slot
            winners = pending[free][first]
            self.slot_key[taken] = keys[winners]
            self.slot_row[taken] = winners
            placed = np.zeros(len(keys), dtype=bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            probe += 1

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _GOLDEN) >> self.shift).astype(np.int64)

    def find(self, query: np.ndarray) -> np.ndarray:
        """Row of each query key, or -1 (negative queries are never found)."""
        flat = np.ravel(query)
        out = np.full(flat.shape, -1, dtype=np.int64)
        where = np.flatnonzero(flat >= 0)
        q = flat[where]
        home = self._hash(q)
        probe = 0
        while where.size:
            slot = (home + probe) & self.mask
            k = self.slot_key[slot]
            hit = k == q
            out[where[hit]] = self.slot_row[slot[hit]]
            go_on = ~hit & (k != -1)
            where, q, home = where[go_on], q[go_on], home[go_on]
            probe += 1
        return out.reshape(np.shape(query))


def suffix_rows(keys: list[np.ndarray], vocab_size: int) -> list[np.ndarray]:
    """For every order, the row of each n-gram's suffix (first word dropped) one order down, or -1."""
    out = [np.empty(0, dtype=np.int64)]
    for n in range(2, len(keys) + 1):
        prefix, word = np.divmod(keys[n - 1], vocab_size)
        if n == 2:
            out.append(word.astype(np.int64))
        else:
            inner = out[n - 2][prefix]  # suffix of the prefix, one order further down
            out.append(np.where(inner >= 0, lookup(keys[n - 2], inner * vocab_size + word), -1))
    return out


def words_of(keys: list[np.ndarray], vocab_size: int, n: int) -> np.ndarray:
    """The ids of every order-n n-gram as an [count, n] array."""
    if n == 1:
        return keys[0][:, None]
    prefix, word = np.divmod(keys[n - 1], vocab_size)
    return np.hstack([words_of(keys, vocab_size, n - 1)[prefix], word[:, None]])


def open_sentences(ids: np.ndarray, bos_id: int, eos_id: int) -> np.ndarray:
    """``ids`` (sentences each ending with ``eos_id``, end to end) with ``bos_id`` opening every sentence."""
    ends = np.flatnonzero(ids == eos_id)
    return np.insert(ids, np.concatenate([[0], ends[:-1] + 1]).astype(np.int64), bos_id) if len(ends) else ids


def count_ngrams(tokens: np.ndarray, order: int, vocab_size: int, *, bos_id: int, eos_id: int | None = None,
                 unk_id: int | None = None, pad_id: int | None = None) -> NgramCounts:
    """Count all orders 1..``order`` of ``tokens`` (sentences each starting with ``bos_id``)."""
    from . import _kernels

    check_number("order", order, low=1, integer=True)
    tokens = np.asarray(tokens, dtype=np.int64)
    starts = np.flatnonzero(tokens == bos_id)
    words = (tokens != bos_id) & (tokens != eos_id) if eos_id is not None else tokens != bos_id
    if not words.any():
        raise DataError("the corpus has no tokens to count (only empty sentences)", "train on a non-empty corpus")
    if starts[0] != 0:
        raise DataError("the token stream must begin with <s>")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise DataError(f"token ids must lie in 0..{vocab_size - 1}")
    # distance of every position from its sentence's <s>
    sentence = np.cumsum(tokens == bos_id) - 1
    depth = np.arange(len(tokens)) - starts[sentence]
    keys = [np.arange(vocab_size, dtype=np.int64)]
    counts = [np.bincount(tokens[depth >= 1], minlength=vocab_size).astype(np.int64)]
    suffix = [np.empty(0, dtype=np.int64)]
    rows = tokens  # row of the n-gram ending at each position (order 1: the id itself)
    last = kenlm_last_position(tokens, starts[sentence], order, bos_id, eos_id, unk_id)
    kenlm_last = [int(tokens[last])]
    by_row = _kernels.sort_by(tokens, vocab_size, np.arange(len(tokens)))  # positions in order-1 row order
    workers = parallel_workers(len(tokens))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for n in progress(range(2, order + 1), desc="counting n-grams", unit="order"):
            uniq, cnt, new_rows, first, by_row = next_order(tokens, depth, rows, by_row, n, vocab_size, pool, workers)
            keys.append(uniq)
            counts.append(cnt)
            suffix.append(rows[first])  # the (n-1)-gram ending at the same position
            rows = new_rows
            kenlm_last.append(int(rows[last]))
    return NgramCounts(vocab_size, keys, counts, suffix, bos_id=bos_id, eos_id=eos_id, unk_id=unk_id,
                       pad_id=pad_id, kenlm_last=kenlm_last[:-1])


def next_order(tokens: np.ndarray, depth: np.ndarray, rows: np.ndarray, by_row: np.ndarray, n: int,
               vocab_size: int, pool: ThreadPoolExecutor, workers: int) -> tuple[np.ndarray, ...]:
    """Order n from order n-1 (``_kernels.next_order``), ``by_row`` cut into ``workers`` ranges at
    prefix-group boundaries and counted on the pool's threads (the kernel releases the GIL); the
    ranges' n-grams follow each other in key order, so joining them keeps every table sorted.
    Returns (keys, counts, the row of the n-gram ending at each position or -1, one position of
    each n-gram, the positions ordered by n-gram row)."""
    from . import _kernels

    new_rows = np.full(len(tokens), -1, dtype=np.int64)
    cuts = [0]
    for w in range(1, workers):
        cuts.append(max(cuts[-1], _kernels.group_boundary(rows, by_row, len(by_row) * w // workers)))
    cuts.append(len(by_row))
    parts = list(pool.map(lambda lo, hi: _kernels.next_order(tokens, depth, rows, by_row, lo, hi, n, vocab_size,
                                                             new_rows), cuts[:-1], cuts[1:]))
    offset = 0
    for part_keys, _, _, positions in parts:
        if offset:
            new_rows[positions] += offset  # each range numbered its n-grams from 0
        offset += len(part_keys)
    if len(parts) == 1:
        part_keys, part_counts, first, positions = parts[0]
        return part_keys, part_counts, new_rows, first, positions
    return (*(np.concatenate([part[k] for part in parts]) for k in range(2)), new_rows,
            *(np.concatenate([part[k] for part in parts]) for k in (2, 3)))


def kenlm_last_position(tokens: np.ndarray, start: np.ndarray, order: int, bos_id: int, eos_id: int | None,
                        unk_id: int | None) -> int:
    """The position where the last ``order``-gram in lmplz's suffix order ends.

    lmplz numbers words <unk> 0, <s> 1, </s> 2, then by first appearance, and sorts n-grams by
    their last word, then the one before, …, padding sentence starts with <s>. Its discount
    statistics (``adjust_counts.cc``) add the lower-order suffixes of this one n-gram with their
    raw counts instead of their adjusted counts; ``smoothing`` reproduces that for parity.
    """
    from . import _kernels

    vocab = int(tokens.max()) + 1
    first = _kernels.first_positions(tokens, vocab)
    specials = np.array([i for i in (unk_id, bos_id, eos_id) if i is not None and i < vocab], dtype=np.int64)
    first[specials] = len(tokens)  # numbered apart, below
    seen = np.flatnonzero(first < len(tokens))
    by_appearance = seen[np.argsort(first[seen])]  # positions are distinct: no ties
    rank = np.zeros(vocab, dtype=np.int64)
    rank[by_appearance] = np.arange(len(by_appearance)) + 3
    for special, r in ((unk_id, 0), (bos_id, 1), (eos_id, 2)):
        if special is not None and special < vocab:
            rank[special] = r
    candidates = np.flatnonzero(tokens != bos_id)
    for k in range(order):
        at = candidates - k
        key = np.where(at >= start[candidates], rank[tokens[np.maximum(at, 0)]], rank[bos_id])
        candidates = candidates[key == key.max()]
    return int(candidates[0])
