"""numba kernels for n-gram tables: linear-time sorting of small integer keys, lookups of
ascending queries in a sorted table by one merge pass, and counting order n from order n-1.

Imported lazily (numba loads in a few tenths of a second). Word ids and table rows are small
non-negative integers, so a counting sort (one pass to count, one to place) orders them in
O(n + buckets) where ``np.argsort`` needs O(n log n); sorting n-grams by their words is a
least-significant-digit radix sort of such passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def sort_by(values, n_buckets, perm):
    """``perm`` reordered stably by ``values[perm]`` (each in 0..n_buckets-1): a counting sort."""
    start = np.zeros(n_buckets + 1, dtype=np.int64)
    for i in range(perm.shape[0]):
        start[values[perm[i]] + 1] += 1
    for b in range(n_buckets):
        start[b + 1] += start[b]
    out = np.empty_like(perm)
    for i in range(perm.shape[0]):
        v = values[perm[i]]
        out[start[v]] = perm[i]
        start[v] += 1
    return out


@njit(cache=True, nogil=True)
def lexicographic_order(columns, n_buckets):
    """The permutation sorting the rows of ``columns`` (ids in 0..n_buckets-1) lexicographically,
    ties in row order (a radix sort, last column first); the identity when they are sorted."""
    rows, width = columns.shape
    perm = np.arange(rows)
    ordered = True
    for i in range(1, rows):
        for j in range(width):
            if columns[i, j] != columns[i - 1, j]:
                if columns[i, j] < columns[i - 1, j]:
                    ordered = False
                break
        if not ordered:
            break
    if ordered:
        return perm
    for j in range(width - 1, -1, -1):
        perm = sort_by(columns[:, j], n_buckets, perm)
    return perm


@njit(cache=True)
def extend_rows(keys, rows, grams, perm, j, vocab_size):
    """Rows in ``keys`` (the sorted packed keys of order j + 1) of the first j + 1 words of the
    n-grams ``grams[perm]``, given ``rows``, the rows of their first j words (-1: none, never
    found). ``perm`` sorts the n-grams by their words, so the queries ascend: one merge pass."""
    out = np.full(rows.shape[0], -1, dtype=np.int64)
    k = 0
    for i in range(rows.shape[0]):
        if rows[i] < 0:
            continue
        q = rows[i] * vocab_size + grams[perm[i], j]
        while k < keys.shape[0] and keys[k] < q:
            k += 1
        if k < keys.shape[0] and keys[k] == q:
            out[i] = k
    return out


@njit(cache=True)
def _sort_group(positions, lo, hi, tokens):
    """Stable sort of ``positions[lo:hi]`` by token."""
    if hi - lo <= 32:  # insertion sort: most groups hold a handful of positions
        for i in range(lo + 1, hi):
            p = positions[i]
            t = tokens[p]
            j = i - 1
            while j >= lo and tokens[positions[j]] > t:
                positions[j + 1] = positions[j]
                j -= 1
            positions[j + 1] = p
        return
    group = positions[lo:hi].copy()
    positions[lo:hi] = group[np.argsort(tokens[group], kind="mergesort")]


@njit(cache=True, nogil=True)
def first_positions(tokens, vocab_size):
    """The first position of every id in ``tokens`` (``len(tokens)`` for ids that never occur): what
    ``np.unique(tokens, return_index=True)`` finds by sorting, in one pass."""
    first = np.full(vocab_size, tokens.shape[0], dtype=np.int64)
    for i in range(tokens.shape[0] - 1, -1, -1):
        first[tokens[i]] = i
    return first


@njit(cache=True, nogil=True)
def group_boundary(rows, by_row, s):
    """The first index at or after ``s`` where ``rows[by_row[i]]`` changes (or ``len(by_row)``): a place
    to split ``by_row`` so that no n-gram prefix group straddles the cut."""
    while 0 < s < by_row.shape[0] and rows[by_row[s]] == rows[by_row[s - 1]]:
        s += 1
    return min(max(s, 0), by_row.shape[0])


@njit(cache=True, nogil=True)
def next_order(tokens, depth, rows, by_row, lo, hi, n, vocab_size, new_rows):
    """Count order n from order n-1 over ``by_row[lo:hi]``. ``rows[p]``: the row of the (n-1)-gram
    ending at position p (-1 for none); ``by_row``: those positions ordered by that row (ties by
    position); ``lo``/``hi`` must not cut a group of equal rows (``group_boundary``).

    The n-gram ending at p is (row of the (n-1)-gram ending at p-1, token p), so the positions
    after ``by_row`` are already grouped by their n-gram's prefix; sorting each group by token
    orders them by n-gram. Returns (sorted packed keys ``prefix * vocab_size + token``, counts,
    one position of each n-gram, the positions ordered by n-gram: the next order's ``by_row``) and
    sets ``new_rows[p]``, for each of those positions, to its n-gram's row counted from 0 in this
    range. Ranges are independent (no shared writes), so two threads can count two halves."""
    size = tokens.shape[0]
    positions = np.empty(hi - lo, dtype=np.int64)
    m = 0
    for i in range(lo, hi):
        p = by_row[i] + 1
        if p < size and depth[p] >= n - 1:
            positions[m] = p
            m += 1
    positions = positions[:m]
    start = 0
    for i in range(1, m + 1):
        if i == m or rows[positions[i] - 1] != rows[positions[start] - 1]:
            if i - start > 1:
                _sort_group(positions, start, i, tokens)
            start = i
    keys = np.empty(m, dtype=np.int64)
    counts = np.empty(m, dtype=np.int64)
    first = np.empty(m, dtype=np.int64)
    u = -1
    last_key = -1
    for i in range(m):
        p = positions[i]
        key = rows[p - 1] * vocab_size + tokens[p]
        if key != last_key:
            u += 1
            keys[u] = key
            counts[u] = 0
            first[u] = p
            last_key = key
        counts[u] += 1
        new_rows[p] = u
    return keys[:u + 1], counts[:u + 1], first[:u + 1], positions
