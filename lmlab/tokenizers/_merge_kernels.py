"""numba kernels behind ``bpe_trainer``: the whole merge loop of BPE and of WordPiece on integer arrays.

Imported lazily by ``bpe_trainer`` (numba's import and the cached kernels' load cost a few tenths
of a second, which ``import lmlab.tokenizers`` should not pay). The words are one int32 array of
symbol ids laid end to end (``offsets[w]`` is where word w starts; a merge shrinks a word in
place); a pair (a, b) is the int64 key ``a * key_base + b`` and gets a dense index on first
sight; the words holding a pair are a linked list of nodes per pair (a word may be listed more
than once: a per-step mark makes each word count once, as a set would).

A merged token's text is the concatenation of its parts' texts (the right part loses the
continuation prefix); when that text is already a token (two merge paths can spell the same
string) the existing id is reused, as HF ``tokenizers`` does. Texts are code-point arrays,
found through a hash of their code points (checked element by element, so collisions are
harmless).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import types
from numba.typed import Dict

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True)
def _grow(array, need):
    """``array`` itself when it holds ``need`` items, else a copy with twice the room."""
    if need <= array.shape[0]:
        return array
    out = np.empty(max(need, 2 * array.shape[0]), dtype=array.dtype)
    out[:array.shape[0]] = array
    return out


@njit(cache=True)
def _text_hash(cp, lo, hi):
    h = _FNV_OFFSET
    for i in range(lo, hi):
        h = (h ^ np.uint64(cp[i])) * _FNV_PRIME
    return np.int64(h >> np.uint64(1))


@njit(cache=True)
def _same_text(cp, lo1, hi1, lo2, hi2):
    if hi1 - lo1 != hi2 - lo2:
        return False
    for k in range(hi1 - lo1):
        if cp[lo1 + k] != cp[lo2 + k]:
            return False
    return True


@njit(cache=True)
def _starts_with(cp, lo, prefix):
    for k in range(prefix.shape[0]):
        if cp[lo + k] != prefix[k]:
            return False
    return True


@njit(cache=True)
def _find_text(texts, cp, off, lo, hi):
    """Id of the token whose text is ``cp[lo:hi]``, or -1; also the free hash slot to file it under."""
    h = _text_hash(cp, lo, hi)
    while h in texts:
        t = texts[h]
        if _same_text(cp, off[t], off[t + 1], lo, hi):
            return t, h
        h += 1
    return -1, h


# --- an open-addressing hash table int64 -> int64 (keys >= 0; -1 marks a free slot) ---------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _slot(table_keys, key):
    """The slot holding ``key``, or the free slot where it would go (linear probing)."""
    mask = table_keys.shape[0] - 1
    i = np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(24)) & mask
    while table_keys[i] != key and table_keys[i] != -1:
        i = (i + 1) & mask
    return i


@njit(cache=True)
def _rehash(table_keys, table_values):
    """The same table with twice the slots."""
    keys = np.full(2 * table_keys.shape[0], -1, dtype=np.int64)
    values = np.empty(2 * table_keys.shape[0], dtype=np.int64)
    for j in range(table_keys.shape[0]):
        if table_keys[j] != -1:
            i = _slot(keys, table_keys[j])
            keys[i] = table_keys[j]
            values[i] = table_values[j]
    return keys, values


# --- a binary heap of (priority, key) pairs, smallest first ----------------------------------

@njit(cache=True, inline="always")
def _before(p1, k1, p2, k2):
    return p1 < p2 or (p1 == p2 and k1 < k2)


@njit(cache=True)
def _heap_push(prio, keys, size, p, k):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(p, k, prio[parent], keys[parent]):
            break
        prio[i] = prio[parent]
        keys[i] = keys[parent]
        i = parent
    prio[i] = p
    keys[i] = k


@njit(cache=True)
def _heap_pop(prio, keys, size):
    """Remove the top of a heap of ``size`` items (the caller reads it first)."""
    size -= 1
    p, k = prio[size], keys[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(prio[child + 1], keys[child + 1], prio[child], keys[child]):
            child += 1
        if not _before(prio[child], keys[child], p, k):
            break
        prio[i] = prio[child]
        keys[i] = keys[child]
        i = child
    prio[i] = p
    keys[i] = k


# --- the words and their pairs -----------------------------------------------------------------

# columns of the pair table: the two symbols, the weighted count, the head of the list of words
# holding the pair, the last word put on that list, the last merge step that gave it occurrences
A, B, COUNT, HEAD, LAST_WORD, GAINED_AT = 0, 1, 2, 3, 4, 5
WORD, NEXT = 0, 1  # columns of a list node


@njit(cache=True)
def _grow_rows(table, need, fill):
    if need <= table.shape[0]:
        return table
    out = np.full((max(need, 2 * table.shape[0]), table.shape[1]), fill, dtype=table.dtype)
    out[:table.shape[0]] = table
    return out


@njit(cache=True, inline="always")
def _pair(table_keys, table_values, pairs, n_pairs, key, key_base):
    """Index of the pair with ``key`` (a new row when unseen; room must be there): (index, n_pairs)."""
    slot = _slot(table_keys, key)
    if table_keys[slot] != -1:
        return table_values[slot], n_pairs
    table_keys[slot], table_values[slot] = key, n_pairs
    pairs[n_pairs, A], pairs[n_pairs, B], pairs[n_pairs, COUNT] = key // key_base, key % key_base, 0
    pairs[n_pairs, HEAD], pairs[n_pairs, LAST_WORD], pairs[n_pairs, GAINED_AT] = -1, -1, -1
    return n_pairs, n_pairs + 1


@njit(cache=True, inline="always")
def _note_word(pairs, p, w, nodes, n_nodes):
    """Put word ``w`` on pair ``p``'s list (once in a row); returns the node count."""
    if pairs[p, LAST_WORD] == w:
        return n_nodes
    pairs[p, LAST_WORD] = w
    nodes[n_nodes, WORD], nodes[n_nodes, NEXT] = w, pairs[p, HEAD]
    pairs[p, HEAD] = n_nodes
    return n_nodes + 1


@njit(cache=True)
def _index_pairs(syms, offsets, weights, key_base):
    """The pair table of the words as they are: (table keys, table values, pairs, n_pairs, nodes, n_nodes)."""
    n_syms = syms.shape[0]
    size = 16
    while size < 4 * n_syms:
        size *= 2
    table_keys = np.full(size, -1, dtype=np.int64)
    table_values = np.empty(size, dtype=np.int64)
    pairs = np.empty((n_syms + 16, 6), dtype=np.int64)
    nodes = np.empty((n_syms + 16, 2), dtype=np.int64)
    n_pairs = n_nodes = 0
    for w in range(offsets.shape[0] - 1):
        for i in range(offsets[w], offsets[w + 1] - 1):
            p, n_pairs = _pair(table_keys, table_values, pairs, n_pairs, syms[i] * key_base + syms[i + 1], key_base)
            pairs[p, COUNT] += weights[w]
            n_nodes = _note_word(pairs, p, w, nodes, n_nodes)
    return table_keys, table_values, pairs, n_pairs, nodes, n_nodes


@njit(cache=True, inline="always")
def _merge_word(syms, s, L, w, n, a, b, new, step, key_base, table_keys, table_values, pairs, n_pairs,
                nodes, n_nodes, gained, n_gained):
    """Replace every (a, b) in word ``w`` (symbols ``syms[s:s+L]``, weight ``n``) by ``new``, left to
    right, updating the pair counts and lists; the caller makes room for ``L`` more pairs, nodes
    and gained pairs. Returns (new length, merges made, n_pairs, n_nodes, n_gained)."""
    merged = 0
    i = 0
    while True:
        while i < L and syms[s + i] != a:
            i += 1
        if i + 1 >= L:
            break
        if syms[s + i + 1] != b:
            i += 1
            continue
        for side in range(2):  # the pair on the left of the occurrence, then the one on its right
            if side == 0:
                if i == 0:
                    continue
                old_key = syms[s + i - 1] * key_base + a
                new_key = syms[s + i - 1] * key_base + new
            else:
                if i + 2 >= L:
                    continue
                old_key = b * key_base + syms[s + i + 2]
                new_key = new * key_base + syms[s + i + 2]
            pairs[table_values[_slot(table_keys, old_key)], COUNT] -= n
            q, n_pairs = _pair(table_keys, table_values, pairs, n_pairs, new_key, key_base)
            pairs[q, COUNT] += n
            n_nodes = _note_word(pairs, q, w, nodes, n_nodes)
            if pairs[q, GAINED_AT] != step:
                pairs[q, GAINED_AT] = step
                gained[n_gained] = q
                n_gained += 1
        syms[s + i] = new
        for k in range(i + 1, L - 1):
            syms[s + k] = syms[s + k + 1]
        L -= 1
        merged += n
        i += 1
    return L, merged, n_pairs, n_nodes, n_gained


@njit(cache=True)
def _merge_pair(p, new, step, syms, offsets, wlen, weights, word_mark, key_base, table_keys, table_values,
                pairs, n_pairs, nodes, n_nodes, gained):
    """Merge pair ``p`` into ``new`` in every word on its list (the list is emptied first, so words
    that gain the pair during this step wait for a later one). Returns (merges made, table keys,
    table values, pairs, n_pairs, nodes, n_nodes, gained, n_gained); the arrays may be new ones."""
    a, b = pairs[p, A], pairs[p, B]
    node = pairs[p, HEAD]
    pairs[p, HEAD], pairs[p, LAST_WORD] = -1, -1
    merged = 0
    n_gained = 0
    while node != -1:
        w = nodes[node, WORD]
        node = nodes[node, NEXT]
        if word_mark[w] == step:
            continue
        word_mark[w] = step
        L = wlen[w]
        pairs = _grow_rows(pairs, n_pairs + L, 0)
        nodes = _grow_rows(nodes, n_nodes + L, 0)
        gained = _grow(gained, n_gained + L)
        if 2 * (n_pairs + L) > table_keys.shape[0]:
            table_keys, table_values = _rehash(table_keys, table_values)
        L, m, n_pairs, n_nodes, n_gained = _merge_word(syms, offsets[w], L, w, weights[w], a, b, new, step,
                                                       key_base, table_keys, table_values, pairs, n_pairs,
                                                       nodes, n_nodes, gained, n_gained)
        wlen[w] = L
        merged += m
    return merged, table_keys, table_values, pairs, n_pairs, nodes, n_nodes, gained, n_gained


@njit(cache=True)
def _word_lengths(offsets):
    out = np.empty(offsets.shape[0] - 1, dtype=np.int64)
    for w in range(out.shape[0]):
        out[w] = offsets[w + 1] - offsets[w]
    return out


# --- token texts ---------------------------------------------------------------------------------

@njit(cache=True)
def _text_index(cp, cp_off, n_tokens):
    texts = Dict.empty(key_type=types.int64, value_type=types.int64)
    for t in range(n_tokens):
        _, slot = _find_text(texts, cp, cp_off, cp_off[t], cp_off[t + 1])
        texts[slot] = t
    return texts


@njit(cache=True)
def _merged_token(a, b, prefix, texts, cp, cp_off, n_tokens):
    """Id of the text of a followed by b (without b's continuation prefix), a new id when unseen.
    Returns (id, code points, offsets, n_tokens)."""
    lo_b, hi_b = cp_off[b], cp_off[b + 1]
    if prefix.shape[0] > 0 and hi_b - lo_b >= prefix.shape[0] and _starts_with(cp, lo_b, prefix):
        lo_b += prefix.shape[0]
    len_a = cp_off[a + 1] - cp_off[a]
    start = cp_off[n_tokens]
    end = start + len_a + hi_b - lo_b
    cp = _grow(cp, end)
    cp[start:start + len_a] = cp[cp_off[a]:cp_off[a + 1]]
    cp[start + len_a:end] = cp[lo_b:hi_b]
    new, slot = _find_text(texts, cp, cp_off, start, end)
    if new < 0:
        new = n_tokens
        texts[slot] = new
        n_tokens += 1
        cp_off = _grow(cp_off, n_tokens + 1)
        cp_off[n_tokens] = end
    return new, cp, cp_off, n_tokens


# --- BPE -----------------------------------------------------------------------------------------

@njit(cache=True)
def bpe_merges(syms, offsets, weights, cp, cp_off, n_tokens, vocab_size, min_frequency, prefix, key_base):
    """Learn BPE merges until ``vocab_size`` tokens: the most frequent pair first, ties to the
    smallest (a, b) ids. Returns the merges as [a, b, new] rows.

    The heap is lazy, as in the reference algorithm (and HF's): an entry whose count went stale
    is re-pushed with the current count when it surfaces, and a pair enters it again only when
    a merge gives it new occurrences."""
    syms = syms.copy()
    wlen = _word_lengths(offsets)
    table_keys, table_values, pairs, n_pairs, nodes, n_nodes = _index_pairs(syms, offsets, weights, key_base)
    texts = _text_index(cp, cp_off, n_tokens)
    cp_off = _grow(cp_off, n_tokens + 1)
    heap_prio = np.empty(max(n_pairs, 16), dtype=np.int64)
    heap_key = np.empty(max(n_pairs, 16), dtype=np.int64)
    size = 0
    for p in range(n_pairs):
        if pairs[p, COUNT] > 0:
            _heap_push(heap_prio, heap_key, size, -pairs[p, COUNT], pairs[p, A] * key_base + pairs[p, B])
            size += 1
    merges = np.empty(3 * max(vocab_size - n_tokens, 1), dtype=np.int64)  # [a, b, new] rows
    n_merges = 0
    word_mark = np.full(offsets.shape[0] - 1, -1, dtype=np.int64)
    gained = np.empty(64, dtype=np.int64)
    while size > 0 and n_tokens < vocab_size:
        neg, key = heap_prio[0], heap_key[0]
        _heap_pop(heap_prio, heap_key, size)
        size -= 1
        p = table_values[_slot(table_keys, key)]
        current = pairs[p, COUNT]
        if -neg != current:
            if current > 0:
                _heap_push(heap_prio, heap_key, size, -current, key)
                size += 1
            continue
        if current < 1 or current < min_frequency:
            break
        a, b = pairs[p, A], pairs[p, B]
        new, cp, cp_off, n_tokens = _merged_token(a, b, prefix, texts, cp, cp_off, n_tokens)
        merges = _grow(merges, 3 * n_merges + 3)
        merges[3 * n_merges], merges[3 * n_merges + 1], merges[3 * n_merges + 2] = a, b, new
        n_merges += 1
        _, table_keys, table_values, pairs, n_pairs, nodes, n_nodes, gained, n_gained = _merge_pair(
            p, new, n_merges, syms, offsets, wlen, weights, word_mark, key_base, table_keys, table_values,
            pairs, n_pairs, nodes, n_nodes, gained)
        heap_prio = _grow(heap_prio, size + n_gained)
        heap_key = _grow(heap_key, size + n_gained)
        for g in range(n_gained):
            q = gained[g]
            if pairs[q, COUNT] > 0:
                _heap_push(heap_prio, heap_key, size, -pairs[q, COUNT], pairs[q, A] * key_base + pairs[q, B])
                size += 1
    return merges[:3 * n_merges].reshape(n_merges, 3)


# --- WordPiece: an indexed heap on count(ab) / (count(a)·count(b)) ---------------------------------

@njit(cache=True, inline="always")
def _ranks_before(p, q, score, snap, keys):
    """Pair p comes before q: higher score, then higher count, then smaller (a, b)."""
    if score[p] != score[q]:
        return score[p] > score[q]
    if snap[p] != snap[q]:
        return snap[p] > snap[q]
    return keys[p] < keys[q]


@njit(cache=True)
def _sift_up(heap, where, i, score, snap, keys):
    p = heap[i]
    while i > 0:
        parent = (i - 1) >> 1
        q = heap[parent]
        if not _ranks_before(p, q, score, snap, keys):
            break
        heap[i] = q
        where[q] = i
        i = parent
    heap[i] = p
    where[p] = i


@njit(cache=True)
def _sift_down(heap, where, i, size, score, snap, keys):
    p = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _ranks_before(heap[child + 1], heap[child], score, snap, keys):
            child += 1
        q = heap[child]
        if not _ranks_before(q, p, score, snap, keys):
            break
        heap[i] = q
        where[q] = i
        i = child
    heap[i] = p
    where[p] = i


@njit(cache=True)
def _heap_update(heap, where, size, p, score, snap, keys):
    """Put pair p (with its score and count just set) at its place, entering or leaving the heap
    as its count is positive or not; returns the new size."""
    i = where[p]
    if snap[p] < 1:
        if i < 0:
            return size
        where[p] = -1
        size -= 1
        if i != size:
            moved = heap[size]
            heap[i] = moved
            where[moved] = i
            _sift_up(heap, where, i, score, snap, keys)
            if where[moved] == i:
                _sift_down(heap, where, i, size, score, snap, keys)
        return size
    if i < 0:
        heap[size] = p
        where[p] = size
        _sift_up(heap, where, size, score, snap, keys)
        return size + 1
    _sift_up(heap, where, i, score, snap, keys)
    _sift_down(heap, where, where[p], size, score, snap, keys)
    return size


@njit(cache=True)
def _list_pair(sym_head, snodes, n_snodes, q, sym):
    """Put pair q on symbol ``sym``'s list; returns (nodes, n_snodes) (the nodes may be new)."""
    snodes = _grow_rows(snodes, n_snodes + 1, 0)
    snodes[n_snodes, 0], snodes[n_snodes, 1] = q, sym_head[sym]
    sym_head[sym] = n_snodes
    return snodes, n_snodes + 1


@njit(cache=True)
def _rescore_symbol(sym, sym_head, snodes, listed, pairs, sym_count, heap, where, size, score, snap, keys):
    """Re-score every live pair on ``sym``'s list and drop the dead ones from it; returns the heap size."""
    node = sym_head[sym]
    prev = -1
    while node != -1:
        q = snodes[node, 0]
        nxt = snodes[node, 1]
        if pairs[q, COUNT] > 0:
            c = pairs[q, COUNT]
            score[q] = c / (sym_count[pairs[q, A]] * sym_count[pairs[q, B]])
            snap[q] = c
            size = _heap_update(heap, where, size, q, score, snap, keys)
            prev = node
        else:
            listed[q, 0 if pairs[q, A] == sym else 1] = 0
            if prev == -1:
                sym_head[sym] = nxt
            else:
                snodes[prev, 1] = nxt
            if where[q] >= 0:
                snap[q] = 0
                size = _heap_update(heap, where, size, q, score, snap, keys)
        node = nxt
    return size


@njit(cache=True)
def wordpiece_merges(syms, offsets, weights, cp, cp_off, n_tokens, vocab_size, prefix, key_base):
    """Learn WordPiece merges until ``vocab_size`` tokens: each step merges the pair with the
    highest count(ab) / (count(a)·count(b)), ties to the higher count(ab), then the smallest
    (a, b) ids. Returns the merges as [a, b, new] rows.

    A merge lowers count(a) and count(b), which raises the score of every pair holding a or b;
    those pairs (found through per-symbol lists, pruned of dead pairs as they are walked) are
    re-scored in an indexed heap, so the heap always holds every live pair at its exact score."""
    syms = syms.copy()
    wlen = _word_lengths(offsets)
    table_keys, table_values, pairs, n_pairs, nodes, n_nodes = _index_pairs(syms, offsets, weights, key_base)
    texts = _text_index(cp, cp_off, n_tokens)
    cp_off = _grow(cp_off, n_tokens + 1)
    sym_count = np.zeros(key_base, dtype=np.int64)
    for w in range(offsets.shape[0] - 1):
        for i in range(offsets[w], offsets[w + 1]):
            sym_count[syms[i]] += weights[w]
    cap = pairs.shape[0]
    score = np.zeros(cap, dtype=np.float64)
    snap = np.zeros(cap, dtype=np.int64)
    keys = np.zeros(cap, dtype=np.int64)
    where = np.full(cap, -1, dtype=np.int64)
    listed = np.zeros((cap, 2), dtype=np.int8)  # on the list of its first / second symbol
    heap = np.empty(cap, dtype=np.int64)
    sym_head = np.full(key_base, -1, dtype=np.int64)
    snodes = np.empty((2 * n_pairs + 16, 2), dtype=np.int64)
    n_snodes = 0
    size = 0
    for p in range(n_pairs):
        a, b = pairs[p, A], pairs[p, B]
        keys[p] = a * key_base + b
        snodes, n_snodes = _list_pair(sym_head, snodes, n_snodes, p, a)
        listed[p, 0] = 1
        if b != a:
            snodes, n_snodes = _list_pair(sym_head, snodes, n_snodes, p, b)
            listed[p, 1] = 1
        c = pairs[p, COUNT]
        if c > 0:
            score[p] = c / (sym_count[a] * sym_count[b])
            snap[p] = c
            size = _heap_update(heap, where, size, p, score, snap, keys)
    merges = np.empty(3 * max(vocab_size - n_tokens, 1), dtype=np.int64)
    n_merges = 0
    word_mark = np.full(offsets.shape[0] - 1, -1, dtype=np.int64)
    gained = np.empty(64, dtype=np.int64)
    while size > 0 and n_tokens < vocab_size:
        p = heap[0]
        snap[p] = 0
        size = _heap_update(heap, where, size, p, score, snap, keys)
        a, b = pairs[p, A], pairs[p, B]
        new, cp, cp_off, n_tokens = _merged_token(a, b, prefix, texts, cp, cp_off, n_tokens)
        merges = _grow(merges, 3 * n_merges + 3)
        merges[3 * n_merges], merges[3 * n_merges + 1], merges[3 * n_merges + 2] = a, b, new
        n_merges += 1
        first_new = n_pairs
        merged, table_keys, table_values, pairs, n_pairs, nodes, n_nodes, gained, n_gained = _merge_pair(
            p, new, n_merges, syms, offsets, wlen, weights, word_mark, key_base, table_keys, table_values,
            pairs, n_pairs, nodes, n_nodes, gained)
        if pairs.shape[0] > score.shape[0]:
            cap = pairs.shape[0]
            score, snap, keys = _grow(score, cap), _grow(snap, cap), _grow(keys, cap)
            where, heap = _grow(where, cap), _grow(heap, cap)
            listed = _grow_rows(listed, cap, 0)
        for q in range(first_new, n_pairs):
            keys[q] = pairs[q, A] * key_base + pairs[q, B]
            snap[q], where[q], listed[q, 0], listed[q, 1] = 0, -1, 0, 0
        pairs[p, COUNT] = 0
        sym_count[a] -= merged
        sym_count[b] -= merged
        sym_count[new] += merged
        for g in range(n_gained):
            q = gained[g]
            if listed[q, 0] == 0:
                snodes, n_snodes = _list_pair(sym_head, snodes, n_snodes, q, pairs[q, A])
                listed[q, 0] = 1
            if pairs[q, B] != pairs[q, A] and listed[q, 1] == 0:
                snodes, n_snodes = _list_pair(sym_head, snodes, n_snodes, q, pairs[q, B])
                listed[q, 1] = 1
        size = _rescore_symbol(a, sym_head, snodes, listed, pairs, sym_count, heap, where, size, score, snap, keys)
        if b != a:
            size = _rescore_symbol(b, sym_head, snodes, listed, pairs, sym_count, heap, where, size, score, snap,
                                   keys)
        if new != a and new != b:  # its list holds the gained pairs (and, for a reused id, its old ones)
            size = _rescore_symbol(new, sym_head, snodes, listed, pairs, sym_count, heap, where, size, score,
                                   snap, keys)
    return merges[:3 * n_merges].reshape(n_merges, 3)
