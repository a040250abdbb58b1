"""numba kernels behind ``arpa``: parse ARPA sections from raw bytes and format them back.

Imported lazily by ``arpa``. Reading works on the file's bytes: fields are separated by ASCII
white space, numbers are parsed exactly when they have at most 19 significant digits and a
decimal exponent within ±22 (Clinger's fast path: one correctly rounded multiplication or
division by an exact power of ten — every number lmplz, SRILM or lmlab write), and words are
found in the unigram section through ``core.string_table``. Anything else — another number
syntax, Unicode white space, a malformed line, a word without a unigram — makes the kernel
give up, and the reader falls back to its line-by-line parser, which names the problem.

Writing formats each number as ``%.7g`` does (the same text for every value from 1e-16 to
1e7, log-probabilities and backoffs among them) and copies the words' UTF-8 bytes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..core.string_table import extend_hash, insert, lookup, new_slots, room, same

_POW10 = np.array([10.0 ** k for k in range(23)])
_NEG_POW10 = np.array([10.0 ** -k for k in range(9)])
_INT_POW10 = np.array([10 ** k for k in range(19)], dtype=np.int64)
_FAST_DIGITS = 19
_OK, _GIVE_UP = 0, 1


@njit(cache=True, inline="always")
def _is_space(b):
    return b == 32 or 9 <= b <= 13 or 28 <= b <= 31


@njit(cache=True)
def _unicode_space(buf, i, hi):
    """A multi-byte UTF-8 white space character (one Python's ``str.split`` splits on) starts at i."""
    b = buf[i]
    if b == 0xC2 and i + 1 < hi:
        return buf[i + 1] == 0x85 or buf[i + 1] == 0xA0
    if b == 0xE1 and i + 2 < hi:
        return buf[i + 1] == 0x9A and buf[i + 2] == 0x80
    if b == 0xE2 and i + 2 < hi:
        c, d = buf[i + 1], buf[i + 2]
        return (c == 0x80 and (0x80 <= d <= 0x8A or d == 0xA8 or d == 0xA9 or d == 0xAF)) or (c == 0x81 and d == 0x9F)
    if b == 0xE3 and i + 2 < hi:
        return buf[i + 1] == 0x80 and buf[i + 2] == 0x80
    return False


@njit(cache=True)
def parse_number(buf, lo, hi):
    """(value, ok) of the decimal number ``buf[lo:hi]``; ok is False for anything the fast path
    cannot give exactly (the caller then parses it another way)."""
    i = lo
    negative = False
    if i < hi and (buf[i] == 45 or buf[i] == 43):  # - +
        negative = buf[i] == 45
        i += 1
    mantissa = np.uint64(0)
    digits = 0
    exponent = 0
    seen = False
    while i < hi and 48 <= buf[i] <= 57:
        seen = True
        if mantissa != 0 or buf[i] != 48:
            digits += 1
            if digits > _FAST_DIGITS:
                return 0.0, False
            mantissa = mantissa * np.uint64(10) + np.uint64(buf[i] - 48)
        i += 1
    if i < hi and buf[i] == 46:  # .
        i += 1
        while i < hi and 48 <= buf[i] <= 57:
            seen = True
            if mantissa != 0 or buf[i] != 48:
                digits += 1
                if digits > _FAST_DIGITS:
                    return 0.0, False
                mantissa = mantissa * np.uint64(10) + np.uint64(buf[i] - 48)
            exponent -= 1
            i += 1
    if not seen:
        return 0.0, False
    if i < hi and (buf[i] == 101 or buf[i] == 69):  # e E
        i += 1
        sign = 1
        if i < hi and (buf[i] == 45 or buf[i] == 43):
            sign = -1 if buf[i] == 45 else 1
            i += 1
        if i == hi:
            return 0.0, False
        e = 0
        while i < hi and 48 <= buf[i] <= 57:
            e = min(e * 10 + (buf[i] - 48), 10_000)
            i += 1
        exponent += sign * e
    if i != hi or mantissa > np.uint64(1 << 53):
        return 0.0, False
    if mantissa == 0:
        return -0.0 if negative else 0.0, True
    if exponent < -22 or exponent > 22:
        return 0.0, False
    value = float(mantissa)
    value = value * _POW10[exponent] if exponent >= 0 else value / _POW10[-exponent]
    return -value if negative else value, True


@njit(cache=True, nogil=True)
def parse_section(buf, lo, hi, n, expected, word_slots, word_rows):
    """Parse the ``expected`` lines of an n-gram section ``buf[lo:hi]``: returns (status,
    log10 probabilities, log10 backoffs (0 where absent), words). For n = 1 the words are the
    [start, end) byte spans of each unigram; for n > 1, rows of unigram indices found through
    the table (``word_slots``, ``word_rows`` over ``buf``). Status 1: the fast path gave up."""
    probs = np.zeros(expected, dtype=np.float64)
    bows = np.zeros(expected, dtype=np.float64)
    width = 2 if n == 1 else n
    words = np.zeros((expected, width), dtype=np.int64)
    field_lo = np.empty(n + 3, dtype=np.int64)
    field_hi = np.empty(n + 3, dtype=np.int64)
    previous_lo = np.zeros(n, dtype=np.int64)  # where each word of the previous line was looked up
    previous_hi = np.zeros(n, dtype=np.int64)
    line = 0
    i = lo
    while i < hi:
        n_fields = 0
        while i < hi and buf[i] != 10:  # one line: its fields
            if _is_space(buf[i]):
                i += 1
                continue
            if n_fields == n + 2:
                return _GIVE_UP, probs, bows, words
            start = i
            while i < hi and buf[i] != 10 and not _is_space(buf[i]):
                if buf[i] >= 0xC2 and _unicode_space(buf, i, hi):
                    return _GIVE_UP, probs, bows, words
                i += 1
            field_lo[n_fields], field_hi[n_fields] = start, i
            n_fields += 1
        i += 1
        if n_fields == 0:
            continue
        if n_fields < n + 1 or line == expected:
            return _GIVE_UP, probs, bows, words
        value, ok = parse_number(buf, field_lo[0], field_hi[0])
        if not ok:
            return _GIVE_UP, probs, bows, words
        probs[line] = value
        if n_fields == n + 2:
            value, ok = parse_number(buf, field_lo[n + 1], field_hi[n + 1])
            if not ok:
                return _GIVE_UP, probs, bows, words
            bows[line] = value
        if n == 1:
            words[line, 0], words[line, 1] = field_lo[1], field_hi[1]
        else:
            for j in range(n):
                a, b = field_lo[1 + j], field_hi[1 + j]
                if line > 0 and b - a == previous_hi[j] - previous_lo[j] and same(buf, previous_lo[j], buf, a, b - a):
                    words[line, j] = words[line - 1, j]  # sorted files repeat words from line to line
                    continue
                previous_lo[j], previous_hi[j] = a, b
                h = np.uint64(0)
                for k in range(a, b):
                    h = extend_hash(h, buf[k])
                _, r = lookup(word_slots, word_rows, buf, h, buf, a, b - a)
                if r == -1:
                    return _GIVE_UP, probs, bows, words
                words[line, j] = r
        line += 1
    if line != expected:
        return _GIVE_UP, probs, bows, words
    return _OK, probs, bows, words


@njit(cache=True)
def word_table(buf, spans):
    """A string table of the unigrams (byte spans of ``buf``), row = unigram index; returns
    (slots, rows, index of the first unigram listed twice or -1)."""
    slots = new_slots(spans.shape[0])
    rows = np.empty((spans.shape[0] + 1, 3), dtype=np.int64)
    for w in range(spans.shape[0]):
        a, b = spans[w, 0], spans[w, 1]
        h = np.uint64(0)
        for k in range(a, b):
            h = extend_hash(h, buf[k])
        slot, r = lookup(slots, rows, buf, h, buf, a, b - a)
        if r != -1:
            return slots, rows, w
        rows = room(rows, w + 1)
        slots = insert(slots, rows, w, slot, h, a, b - a, w)
    return slots, rows, -1


# --- writing -----------------------------------------------------------------------------------

@njit(cache=True)
def _put_int(out, pos, value, width):
    """Write the non-negative ``value`` with exactly ``width`` digits at ``pos``."""
    for k in range(width - 1, -1, -1):
        out[pos + k] = 48 + value % 10
        value //= 10
    return pos + width


@njit(cache=True, inline="always")
def _decimal_exponent(value):
    """floor(log10(value)) for a positive finite value (possibly one off next to a power of ten,
    which the caller corrects)."""
    if 1.0 <= value < 1e8:
        e = 0
        while e < 7 and value >= _POW10[e + 1]:
            e += 1
        return e
    if 1e-8 <= value < 1.0:
        e = -1
        while value < _NEG_POW10[-e]:
            e -= 1
        return e
    return int(math.floor(math.log10(value)))


@njit(cache=True, inline="always")
def _split(a):
    c = 134217729.0 * a  # Veltkamp: 2**27 + 1
    high = c - (c - a)
    return high, a - high


@njit(cache=True)
def _scaled(value, scale):
    """value · 10**scale rounded half to even to an integer. Exact for 0 ≤ scale ≤ 22, which covers
    1e-16 ≤ value < 1e7 (the product is carried as two doubles, Dekker's exact product, so ties
    and near-ties round as ``printf`` does); elsewhere the rounded product, rounded again."""
    if scale < 0:
        return int(np.rint(value / 10.0 ** -scale))
    if scale > 22:  # in two steps: 10**scale alone may overflow
        return int(np.rint(value * _POW10[22] * 10.0 ** (scale - 22)))
    power = _POW10[scale]
    product = value * power
    a_hi, a_lo = _split(value)
    b_hi, b_lo = _split(power)
    error = ((a_hi * b_hi - product) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo  # product + error is exact
    k = np.rint(product)
    above = (product - k) - 0.5 + error  # sign of (exact - k - 1/2)
    below = (product - k) + 0.5 + error  # sign of (exact - k + 1/2)
    digits = int(k)
    if above > 0 or (above == 0 and digits % 2 == 1):
        digits += 1
    elif below < 0 or (below == 0 and digits % 2 == 1):
        digits -= 1
    return digits


@njit(cache=True)
def format_g7(out, pos, value):
    """Write ``value`` as ``%.7g`` does (7 significant digits, trailing zeros dropped, exponent
    form below 1e-4 or from 1e7); returns the new position."""
    if value != value:
        for c in (110, 97, 110):  # nan
            out[pos] = c
            pos += 1
        return pos
    if value < 0 or (value == 0 and math.copysign(1.0, value) < 0):
        out[pos] = 45
        pos += 1
        value = -value
    if value == math.inf:
        for c in (105, 110, 102):  # inf
            out[pos] = c
            pos += 1
        return pos
    if value == 0:
        out[pos] = 48
        return pos + 1
    e = _decimal_exponent(value)
    digits = _scaled(value, 6 - e)
    if digits >= 10_000_000:  # e was one too small (or rounding carried into an eighth digit)
        e += 1
        digits = _scaled(value, 6 - e)
    elif digits < 1_000_000:  # e was one too large
        e -= 1
        digits = _scaled(value, 6 - e)
    significant = 7
    while significant > 1 and digits % 10 == 0:
        digits //= 10
        significant -= 1
    if -4 <= e < 7:
        if e >= 0:
            whole = significant if significant > e + 1 else e + 1
            if significant <= e + 1:  # an integer: the digits, then zeros
                pos = _put_int(out, pos, digits, significant)
                for _ in range(e + 1 - significant):
                    out[pos] = 48
                    pos += 1
                return pos
            head = digits // _INT_POW10[significant - e - 1]
            pos = _put_int(out, pos, head, e + 1)
            out[pos] = 46
            pos += 1
            return _put_int(out, pos, digits % _INT_POW10[significant - e - 1], whole - e - 1)
        out[pos], out[pos + 1] = 48, 46  # 0.
        pos += 2
        for _ in range(-e - 1):
            out[pos] = 48
            pos += 1
        return _put_int(out, pos, digits, significant)
    pos = _put_int(out, pos, digits // _INT_POW10[significant - 1], 1)
    if significant > 1:
        out[pos] = 46
        pos += 1
        pos = _put_int(out, pos, digits % _INT_POW10[significant - 1], significant - 1)
    out[pos] = 101  # e
    out[pos + 1] = 45 if e < 0 else 43
    pos += 2
    return _put_int(out, pos, abs(e), 2 if abs(e) < 100 else 3)


@njit(cache=True, nogil=True)
def format_section(probs, prefix, word, bows, with_bows, vocab_bytes, vocab_offsets, prev_out, prev_spans, lo, hi):
    """Lines ``lo:hi`` of one ARPA section as UTF-8 bytes, ``prob<TAB>w1 … wn[<TAB>bow]``, and the
    [start, end) of each line's words in them. Line i's words are those of line ``prefix[i]`` of the
    previous section (``prev_spans`` into ``prev_out``; -1: none) followed by vocabulary entry
    ``word[i]``, so no n-gram's words are ever gathered one by one. Ranges are independent: threads
    can format the parts of a section side by side."""
    rows = hi - lo
    size = 0
    for i in range(lo, hi):
        size += 2 * 16 + 4 + vocab_offsets[word[i] + 1] - vocab_offsets[word[i]]
        if prefix[i] >= 0:
            size += prev_spans[prefix[i], 1] - prev_spans[prefix[i], 0]
    out = np.empty(size, dtype=np.uint8)
    spans = np.empty((rows, 2), dtype=np.int64)
    pos = 0
    for i in range(lo, hi):
        pos = format_g7(out, pos, probs[i])
        out[pos] = 9
        pos += 1
        spans[i - lo, 0] = pos
        p = prefix[i]
        if p >= 0:
            for k in range(prev_spans[p, 0], prev_spans[p, 1]):
                out[pos] = prev_out[k]
                pos += 1
            out[pos] = 32
            pos += 1
        w = word[i]
        for k in range(vocab_offsets[w], vocab_offsets[w + 1]):
            out[pos] = vocab_bytes[k]
            pos += 1
        spans[i - lo, 1] = pos
        if with_bows:
            out[pos] = 9
            pos = format_g7(out, pos + 1, bows[i])
        out[pos] = 10
        pos += 1
    return out[:pos], spans
