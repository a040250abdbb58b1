"""numba kernel for the fastText-style classifier (imported lazily: numba is optional)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(nogil=True, fastmath=True, cache=True)
def train_fasttext(inp, out, rows, offsets, labels, weights, position, epochs, lr0):
    """SGD over all examples for ``epochs`` passes, as fastText's supervised softmax.

    The hidden vector is the mean of the example's input rows; its gradient is divided by the
    row count and added to every row. ``position[e]`` is the share of an epoch's tokens read
    before example e: the rate decays linearly to 0 with tokens read, as in fastText.
    """
    dim = inp.shape[1]
    k = out.shape[0]
    n_all = labels.shape[0]
    hidden = np.zeros(dim, dtype=np.float32)
    grad = np.zeros(dim, dtype=np.float32)
    logits = np.zeros(k, dtype=np.float32)
    loss = 0.0
    for epoch in range(epochs):
        for e in range(n_all):
            lr = lr0 * (1.0 - (epoch + position[e]) / epochs) * weights[e]
            lo, hi = offsets[e], offsets[e + 1]
            n = hi - lo
            if n == 0:
                continue
            hidden[:] = 0.0
            for p in range(lo, hi):
                row = inp[rows[p]]
                for c in range(dim):
                    hidden[c] += row[c]
            for c in range(dim):
                hidden[c] /= n
            top = -1e30
            for j in range(k):
                s = np.float32(0.0)
                for c in range(dim):
                    s += out[j, c] * hidden[c]
                logits[j] = s
                top = max(top, s)
            z = 0.0
            for j in range(k):
                logits[j] = math.exp(logits[j] - top)
                z += logits[j]
            grad[:] = 0.0
            for j in range(k):
                p = logits[j] / z
                g = np.float32(lr * ((1.0 if j == labels[e] else 0.0) - p))
                for c in range(dim):
                    grad[c] += g * out[j, c]
                    out[j, c] += g * hidden[c]
            loss -= math.log(max(logits[labels[e]] / z, 1e-12))
            for c in range(dim):
                grad[c] /= n
            for p in range(lo, hi):
                row = inp[rows[p]]
                for c in range(dim):
                    row[c] += grad[c]
    return loss / max(epochs * n_all, 1)
