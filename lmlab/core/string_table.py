"""A string table for numba kernels: strings (runs of integers — code points or UTF-8 bytes — in a
store array) mapped to rows, through open addressing on a polynomial hash of their elements.

Every hash hit is checked element by element, so strings that share a hash never get confused.
``slots[k] = (hash, row)`` (row -1: free); ``entries[r] = (start, length, value)`` says where row
r's string lies in its store and what it maps to. Used by the tokenizer trainers and the ARPA
reader; import it from numba code only (numba is imported here).
"""

from __future__ import annotations

import numpy as np
from numba import njit

START, LENGTH, VALUE = 0, 1, 2
_MULTIPLIER = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def extend_hash(h, code):
    """The hash of a string extended by one element (start from ``np.uint64(0)``)."""
    return (h ^ np.uint64(code)) * _MULTIPLIER


@njit(cache=True, inline="always")
def _home(h, mask):
    return np.int64((h * _GOLDEN) >> np.uint64(20)) & mask


@njit(cache=True, inline="always")
def same(store, lo, text, text_lo, n):
    """``store[lo:lo+n]`` equals ``text[text_lo:text_lo+n]``."""
    for k in range(n):
        if store[lo + k] != text[text_lo + k]:
            return False
    return True


@njit(cache=True)
def new_slots(n):
    """Slots for ``n`` strings at a load under one half."""
    size = 16
    while size < 2 * n:
        size *= 2
    slots = np.empty((size, 2), dtype=np.int64)
    slots[:, 1] = -1
    return slots


@njit(cache=True)
def lookup(slots, entries, store, h, text, lo, n):
    """(slot, row) of the string ``text[lo:lo+n]`` with hash ``h``; row -1 (and the free slot
    where it would go) when absent."""
    mask = slots.shape[0] - 1
    key = np.int64(h)
    slot = _home(h, mask)
    while True:
        r = slots[slot, 1]
        if r == -1:
            return slot, -1
        if slots[slot, 0] == key and entries[r, LENGTH] == n and same(store, entries[r, START], text, lo, n):
            return slot, r
        slot = (slot + 1) & mask


@njit(cache=True)
def insert(slots, entries, n_rows, slot, h, start, length, value):
    """File row ``n_rows`` (``entries`` must have room: see ``room``) in the free ``slot``
    found by ``lookup``; returns the slots (new ones when they had to grow)."""
    entries[n_rows, START], entries[n_rows, LENGTH], entries[n_rows, VALUE] = start, length, value
    slots[slot, 0], slots[slot, 1] = np.int64(h), n_rows
    if 2 * (n_rows + 1) <= slots.shape[0]:
        return slots
    grown = new_slots(slots.shape[0])
    mask = grown.shape[0] - 1
    for old in range(slots.shape[0]):
        if slots[old, 1] != -1:
            k = _home(np.uint64(slots[old, 0]), mask)
            while grown[k, 1] != -1:
                k = (k + 1) & mask
            grown[k, 0], grown[k, 1] = slots[old, 0], slots[old, 1]
    return grown


@njit(cache=True)
def room(rows, n):
    """``rows`` (a 2-D array) with room for at least ``n`` rows (doubled when full)."""
    if n <= rows.shape[0]:
        return rows
    out = np.empty((max(n, 2 * rows.shape[0]), rows.shape[1]), dtype=rows.dtype)
    out[:rows.shape[0]] = rows
    return out
