"""numba kernel behind ``WordLevelTokenizer.train_encode``: one pass over a UTF-8 file's bytes that
splits lines into words, files every word in a ``core.string_table`` (rows by first appearance, the
special tokens first) and counts it — the vocabulary's counts and the corpus's encoding at once.

It covers the files where bytes alone decide the split: ASCII white space only (space, \\t, \\v, \\f,
\\r between words, \\n between lines). A file with any other character that Python or HF count as
white space (\\x1c–\\x1f, U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F,
U+3000) or with bytes that are not UTF-8 returns a status instead, and the caller takes the general
path (which reads such files, or names the bad byte). Imported lazily: numba's import and the
cached kernels' load cost a few tenths of a second.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..core.string_table import LENGTH, START, VALUE, extend_hash, insert, lookup, new_slots, room

OK, NOT_UTF8, OTHER_WHITESPACE = 0, 1, 2


@njit(cache=True, inline="always")
def _is_space(b):
    return b == 32 or 9 <= b <= 13


@njit(cache=True)
def check_bytes(buf, begin):
    """(status, tokens): ``NOT_UTF8`` or ``OTHER_WHITESPACE`` when the fast path does not apply, else
    ``OK`` and the number of ids ``scan`` writes (every word, plus one end of sentence per line with a word)."""
    n = buf.shape[0]
    i = begin
    tokens = 0
    in_word = False
    line_has_word = False
    while i < n:
        b = buf[i]
        if b < 0x80:
            if 0x1C <= b <= 0x1F:
                return OTHER_WHITESPACE, 0
            if _is_space(b):
                in_word = False
                if b == 10:
                    if line_has_word:
                        tokens += 1
                    line_has_word = False
            elif not in_word:
                in_word = True
                line_has_word = True
                tokens += 1
            i += 1
            continue
        # a multi-byte character: its length from the lead byte, then its continuation bytes
        if 0xC2 <= b <= 0xDF:
            size, low, high = 2, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            size = 3
            low = 0xA0 if b == 0xE0 else 0x80
            high = 0x9F if b == 0xED else 0xBF  # no surrogates
        elif 0xF0 <= b <= 0xF4:
            size = 4
            low = 0x90 if b == 0xF0 else 0x80
            high = 0x8F if b == 0xF4 else 0xBF  # nothing past U+10FFFF
        else:
            return NOT_UTF8, 0
        if i + size > n or not (low <= buf[i + 1] <= high):
            return NOT_UTF8, 0
        for k in range(2, size):
            if not (0x80 <= buf[i + k] <= 0xBF):
                return NOT_UTF8, 0
        c1 = buf[i + 1]
        if b == 0xC2 and (c1 == 0x85 or c1 == 0xA0):
            return OTHER_WHITESPACE, 0
        if size == 3:
            c2 = buf[i + 2]
            if b == 0xE1 and c1 == 0x9A and c2 == 0x80:
                return OTHER_WHITESPACE, 0
            if b == 0xE2 and c1 == 0x80 and (c2 <= 0x8A or c2 == 0xA8 or c2 == 0xA9 or c2 == 0xAF):
                return OTHER_WHITESPACE, 0
            if b == 0xE2 and c1 == 0x81 and c2 == 0x9F:
                return OTHER_WHITESPACE, 0
            if b == 0xE3 and c1 == 0x80 and c2 == 0x80:
                return OTHER_WHITESPACE, 0
        if not in_word:
            in_word = True
            line_has_word = True
            tokens += 1
        i += size
    if line_has_word:
        tokens += 1
    return OK, tokens


@njit(cache=True)
def scan(buf, begin, special_ends, eos_row, tokens):
    """Words of ``buf[begin:]`` (checked by ``check_bytes``) as rows of a string table whose first rows
    are the special tokens (``buf[special_ends[s-1]:special_ends[s]]``, the first starting at 0).

    Returns (ids int32[tokens]: each line's word rows then ``eos_row``, blank lines skipped;
    entries [rows, 3]: (start, length, count as a word) per row)."""
    n_special = special_ends.shape[0]
    slots = new_slots(1024)
    entries = np.zeros((1024, 3), dtype=np.int64)
    start = 0
    for s in range(n_special):
        h = np.uint64(0)
        for k in range(start, special_ends[s]):
            h = extend_hash(h, buf[k])
        slot, r = lookup(slots, entries, buf, h, buf, start, special_ends[s] - start)
        slots = insert(slots, entries, s, slot, h, start, special_ends[s] - start, 0)
        start = special_ends[s]
    rows = n_special
    ids = np.empty(tokens, dtype=np.int32)
    t = 0
    n = buf.shape[0]
    i = begin
    line_has_word = False
    while i < n:
        b = buf[i]
        if _is_space(b):
            if b == 10 and line_has_word:
                ids[t] = eos_row
                t += 1
                line_has_word = False
            i += 1
            continue
        lo = i
        h = np.uint64(0)
        while i < n and not _is_space(buf[i]):
            h = extend_hash(h, buf[i])
            i += 1
        slot, r = lookup(slots, entries, buf, h, buf, lo, i - lo)
        if r == -1:
            entries = room(entries, rows + 1)
            slots = insert(slots, entries, rows, slot, h, lo, i - lo, 0)
            r = rows
            rows += 1
        entries[r, VALUE] += 1
        ids[t] = r
        t += 1
        line_has_word = True
    if line_has_word:
        ids[t] = eos_row
    return ids, entries[:rows]


__all__ = ["LENGTH", "NOT_UTF8", "OK", "OTHER_WHITESPACE", "START", "VALUE", "check_bytes", "scan"]
