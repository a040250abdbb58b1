"""numba kernels for word2vec: one call trains on a job of sentences, without the GIL.

Imported lazily (numba is optional). Updates are Hogwild, as in the C tool: threads share
the weight matrices and write to them without locks. Random numbers come from the C tool's
linear congruential generator so a job is reproducible from its seed.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LCG_MUL = np.uint64(25214903917)
LCG_ADD = np.uint64(11)


@njit(nogil=True, fastmath=True, cache=True, inline="always")
def _next(rnd):
    return rnd * LCG_MUL + LCG_ADD


@njit(nogil=True, fastmath=True, cache=True)
def ns_update(l1, syn1neg, target, negatives, alpha, neu1e):
    """One negative-sampling step for input vector ``l1``: the true ``target`` then ``negatives``.

    Adds the gradient step for ``l1`` to ``neu1e`` and updates the output rows in place;
    the loss is -log σ(l1·u_target) - Σ log σ(-l1·u_neg).
    """
    size = l1.shape[0]
    for d in range(negatives.shape[0] + 1):
        if d == 0:
            t = target
            label = 1.0
        else:
            t = negatives[d - 1]
            if t < 0:
                continue
            label = 0.0
        row = syn1neg[t]
        f = np.float32(0.0)
        for c in range(size):
            f += l1[c] * row[c]
        g = np.float32((label - 1.0 / (1.0 + math.exp(-f))) * alpha)
        for c in range(size):
            neu1e[c] += g * row[c]
            row[c] += g * l1[c]


@njit(nogil=True, fastmath=True, cache=True)
def hs_update(l1, syn1, points, codes, alpha, neu1e):
    """One hierarchical-softmax step for input ``l1`` along a word's Huffman path.

    The loss is -Σ_k log σ((1 - 2·code_k) · l1·v_point_k).
    """
    size = l1.shape[0]
    for k in range(points.shape[0]):
        row = syn1[points[k]]
        f = np.float32(0.0)
        for c in range(size):
            f += l1[c] * row[c]
        g = np.float32((1.0 - codes[k] - 1.0 / (1.0 + math.exp(-f))) * alpha)
        for c in range(size):
            neu1e[c] += g * row[c]
            row[c] += g * l1[c]


@njit(nogil=True, cache=True)
def _draw_negatives(cum_table, target, negative, rnd, out):
    """Fill ``out`` with noise words from ``cum_table``; a draw equal to the target becomes -1
    (skipped, as in the C tool). Returns the new random state."""
    top = np.uint64(cum_table[-1])
    for k in range(negative):
        rnd = _next(rnd)
        t = np.searchsorted(cum_table, np.int64((rnd >> np.uint64(16)) % top), side="right")
        out[k] = -1 if t == target else t
    return rnd


@njit(nogil=True, fastmath=True, cache=True)
def train_job(syn0, syn1neg, syn1, ids, starts, keep, cum_table, hs_points, hs_codes, hs_len,
              skipgram, negative, window, alpha0, alpha1, seed):
    """Train on sentences ``starts[i]:starts[i+1]`` of ``ids``; alpha decays linearly alpha0 → alpha1.

    ``keep[w]`` is the probability of keeping word w (frequent-word subsampling). The window
    is drawn uniformly in 1..window per centre word. Returns the number of words kept.
    """
    size = syn0.shape[1]
    neu1e = np.zeros(size, dtype=np.float32)
    neu1 = np.zeros(size, dtype=np.float32)
    negs = np.zeros(max(negative, 1), dtype=np.int64)
    rnd = np.uint64(seed)
    total = starts[-1] - starts[0]
    done = 0
    kept_words = 0
    longest = 0
    for s in range(starts.shape[0] - 1):
        longest = max(longest, starts[s + 1] - starts[s])
    sent = np.empty(longest, dtype=np.int64)
    for s in range(starts.shape[0] - 1):
        n = 0
        for p in range(starts[s], starts[s + 1]):
            w = ids[p]
            rnd = _next(rnd)
            if keep[w] < 1.0 and keep[w] < np.float64(rnd & np.uint64(0xFFFF)) / 65536.0:
                continue
            sent[n] = w
            n += 1
        kept_words += n
        alpha = alpha0 + (alpha1 - alpha0) * (done / max(total, 1))
        done += starts[s + 1] - starts[s]
        for i in range(n):
            word = sent[i]
            rnd = _next(rnd)
            b = np.int64(rnd % np.uint64(window))
            lo = max(0, i - window + b)
            hi = min(n, i + window + 1 - b)
            if skipgram:
                for j in range(lo, hi):
                    if j == i:
                        continue
                    l1 = syn0[sent[j]]
                    neu1e[:] = 0.0
                    if negative > 0:
                        rnd = _draw_negatives(cum_table, word, negative, rnd, negs)
                        ns_update(l1, syn1neg, word, negs, alpha, neu1e)
                    if hs_len[word] > 0:
                        hs_update(l1, syn1, hs_points[word, :hs_len[word]], hs_codes[word, :hs_len[word]],
                                  alpha, neu1e)
                    for c in range(size):
                        l1[c] += neu1e[c]
            else:
                count = hi - lo - 1
                if count == 0:
                    continue
                neu1[:] = 0.0
                for j in range(lo, hi):
                    if j != i:
                        row = syn0[sent[j]]
                        for c in range(size):
                            neu1[c] += row[c]
                for c in range(size):
                    neu1[c] /= count
                neu1e[:] = 0.0
                if negative > 0:
                    rnd = _draw_negatives(cum_table, word, negative, rnd, negs)
                    ns_update(neu1, syn1neg, word, negs, alpha, neu1e)
                if hs_len[word] > 0:
                    hs_update(neu1, syn1, hs_points[word, :hs_len[word]], hs_codes[word, :hs_len[word]],
                              alpha, neu1e)
                for j in range(lo, hi):
                    if j != i:
                        row = syn0[sent[j]]
                        for c in range(size):
                            row[c] += neu1e[c]
    return kept_words
