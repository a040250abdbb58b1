"""numba kernels behind ``unigram_trainer``: substring counting, lattice edges and pruning losses.

Imported lazily by ``unigram_trainer``. Words and pieces are code-point arrays laid end to end
(``offsets[w]`` is where word w starts); strings are found through ``core.string_table``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..core.string_table import VALUE, extend_hash, insert, lookup, new_slots, room


@njit(cache=True)
def digamma(x):
    """ψ(x) by the recurrence ψ(x) = ψ(x+1) − 1/x and the asymptotic series (x > 0)."""
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return result + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


@njit(cache=True)
def digamma_scores(counts):
    """ψ(count) − ψ(Σ counts), the total summed left to right."""
    total = 0.0
    for c in counts:
        total += c
    logsum = digamma(total)
    out = np.empty_like(counts)
    for i in range(counts.shape[0]):
        out[i] = digamma(counts[i]) - logsum
    return out


@njit(cache=True)
def log_shares(counts):
    """log(count) − log(Σ counts) for each (non-negative integer) count."""
    log_total = math.log(float(counts.sum()))
    out = np.empty(counts.shape[0], dtype=np.float64)
    for i in range(counts.shape[0]):
        out[i] = math.log(float(counts[i])) - log_total
    return out


@njit(cache=True)
def stable_order(keys):
    """The permutation that sorts the small non-negative integers ``keys``, ties in index order
    (a counting sort: what ``np.argsort(keys, kind="stable")`` gives, in linear time)."""
    top = 0
    for k in keys:
        top = max(top, k)
    start = np.zeros(top + 2, dtype=np.int64)
    for k in keys:
        start[k + 1] += 1
    for k in range(1, top + 2):
        start[k] += start[k - 1]
    out = np.empty(keys.shape[0], dtype=np.int64)
    for i in range(keys.shape[0]):
        out[start[keys[i]]] = i
        start[keys[i]] += 1
    return out


@njit(cache=True)
def substring_occurrences(cp, offsets, weights, max_len, boundary):
    """Every substring of 1..``max_len`` characters of every word (never holding ``boundary``
    after its first character). Returns the distinct substrings of two characters or more as
    rows of (start in ``cp`` of one occurrence, length, weighted count), and every occurrence
    as a row of (word, start, end, substring row — or -1 - code point for a single character)
    in word, start, end order."""
    slots = new_slots(1 << 16)
    entries = np.empty((1 << 16, 3), dtype=np.int64)
    occurrences = np.empty((cp.shape[0] * 4 + 16, 4), dtype=np.int64)
    n = 0
    n_occ = 0
    for w in range(offsets.shape[0] - 1):
        lo, hi = offsets[w], offsets[w + 1]
        for i in range(lo, hi):
            occurrences = room(occurrences, n_occ + max_len)
            occurrences[n_occ, 0], occurrences[n_occ, 1], occurrences[n_occ, 2] = w, i - lo, i + 1 - lo
            occurrences[n_occ, 3] = -1 - cp[i]
            n_occ += 1
            h = extend_hash(np.uint64(0), cp[i])
            for j in range(i + 1, min(hi, i + max_len)):
                if cp[j] == boundary:
                    break
                h = extend_hash(h, cp[j])
                slot, r = lookup(slots, entries, cp, h, cp, i, j - i + 1)
                if r == -1:
                    entries = room(entries, n + 1)
                    slots = insert(slots, entries, n, slot, h, i, j - i + 1, 0)
                    r = n
                    n += 1
                entries[r, VALUE] += weights[w]
                occurrences[n_occ, 0], occurrences[n_occ, 1], occurrences[n_occ, 2] = w, i - lo, j + 1 - lo
                occurrences[n_occ, 3] = r
                n_occ += 1
    return entries[:n], occurrences[:n_occ]


@njit(cache=True)
def piece_table(cp, offsets):
    """A string table (slots, entries) of the pieces ``cp[offsets[p]:offsets[p+1]]`` and of all
    their prefixes; an entry's value is the piece id, or -1 for a prefix that is no piece."""
    n_pieces = offsets.shape[0] - 1
    slots = new_slots(2 * n_pieces)
    entries = np.empty((2 * n_pieces + 16, 3), dtype=np.int64)
    n = 0
    for p in range(n_pieces):
        lo, hi = offsets[p], offsets[p + 1]
        h = np.uint64(0)
        for j in range(lo, hi):
            h = extend_hash(h, cp[j])
            slot, r = lookup(slots, entries, cp, h, cp, lo, j - lo + 1)
            if r == -1:
                entries = room(entries, n + 1)
                slots = insert(slots, entries, n, slot, h, lo, j - lo + 1, -1)
                r = n
                n += 1
            if j == hi - 1:
                entries[r, VALUE] = p
    return slots, entries[:n]


@njit(cache=True, inline="always")
def _find(table, piece_cp, h, text, lo, n):
    """The piece id of ``text[lo:lo+n]`` (hash ``h``) in ``table`` (see ``piece_table``), -1 for a
    prefix of some piece that is no piece, -2 when absent."""
    slots, entries = table
    _, r = lookup(slots, entries, piece_cp, h, text, lo, n)
    return -2 if r == -1 else entries[r, VALUE]


@njit(cache=True)
def lattice_edges(cp, offsets, piece_cp, table, max_len):
    """Every (word, start, end, piece) where a piece spells ``word[start:end]``, in word, start,
    end order (a start stops extending as soon as the text is no prefix of any piece)."""
    cap = cp.shape[0] * 4 + 16
    out = np.empty((cap, 4), dtype=np.int64)
    n = 0
    for w in range(offsets.shape[0] - 1):
        lo, hi = offsets[w], offsets[w + 1]
        for b in range(lo, hi):
            h = np.uint64(0)
            for e in range(b, min(hi, b + max_len)):
                h = extend_hash(h, cp[e])
                p = _find(table, piece_cp, h, cp, b, e - b + 1)
                if p == -2:
                    break
                if p >= 0:
                    if n == out.shape[0]:
                        grown = np.empty((2 * n, 4), dtype=np.int64)
                        grown[:n] = out
                        out = grown
                    out[n, 0], out[n, 1], out[n, 2], out[n, 3] = w, b - lo, e + 1 - lo, p
                    n += 1
    return out[:n]


@njit(cache=True)
def pruning_losses(piece_cp, piece_off, table, scores, freq, users, total, required):
    """For every piece, how much the corpus log-likelihood drops without it (Kudo 2018; as
    SentencePiece): its best segmentation without itself (Viterbi over the other pieces, ties
    to the earliest start) replaces its ``freq`` Viterbi uses. ``users[i]`` is the summed count
    of the words whose best segmentation uses piece i. Required pieces (and unused ones, -inf)
    are marked with NaN and -inf as the trainer expects."""
    n_pieces = piece_off.shape[0] - 1
    loss = np.empty(n_pieces, dtype=np.float64)
    longest = 1
    for p in range(n_pieces):
        longest = max(longest, piece_off[p + 1] - piece_off[p])
    best = np.empty(longest + 1, dtype=np.float64)
    back_start = np.empty(longest + 1, dtype=np.int64)
    back_id = np.empty(longest + 1, dtype=np.int64)
    log_total = math.log(total)
    for i in range(n_pieces):
        if required[i]:
            loss[i] = np.nan
            continue
        if freq[i] == 0:
            loss[i] = -np.inf
            continue
        lo, hi = piece_off[i], piece_off[i + 1]
        L = hi - lo
        best[0] = 0.0
        for e in range(1, L + 1):
            best[e] = -np.inf
        # relaxing by start, then end, gives each end the first (earliest) start among the best, as
        # the Viterbi of ``Unigram.tokenize`` does
        for b in range(L):
            if best[b] == -np.inf:
                continue
            h = np.uint64(0)
            for e in range(b + 1, L + 1):
                h = extend_hash(h, piece_cp[lo + e - 1])
                p = _find(table, piece_cp, h, piece_cp, lo + b, e - b)
                if p == -2:
                    break
                if p >= 0 and p != i and best[b] + scores[p] > best[e]:
                    best[e] = best[b] + scores[p]
                    back_start[e], back_id[e] = b, p
        n_alt = 0
        e = L
        while e > 0:
            n_alt += 1
            e = back_start[e]
        logsum_alt = math.log(total + freq[i] * (n_alt - 1))
        logprob_alt = 0.0
        e = L
        while e > 0:  # summed from the last piece to the first, as the reference trainer did
            a = back_id[e]
            logprob_alt += math.log(freq[a] + freq[i]) - logsum_alt if freq[a] + freq[i] > 0 else -1e9
            e = back_start[e]
        f = users[i] / total
        loss[i] = f * (math.log(freq[i]) - log_total - logprob_alt)
    return loss


@njit(cache=True)
def segmentation_counts(choice, lengths, starts, pieces, counts, n_pieces):
    """Walk every word's best segmentation back from its end (``choice[w, e]``: the edge ending
    there): how often each piece is used (weighted by word counts) and the summed count of the
    words that use it."""
    freq = np.zeros(n_pieces, dtype=np.float64)
    users = np.zeros(n_pieces, dtype=np.int64)
    last_user = np.full(n_pieces, -1, dtype=np.int64)
    for w in range(lengths.shape[0]):
        e = lengths[w]
        while e > 0:
            k = choice[w, e]
            p = pieces[k]
            freq[p] += counts[w]
            if last_user[p] != w:
                last_user[p] = w
                users[p] += np.int64(counts[w])
            e = starts[k]
    return freq, users
