"""Top-k selection with ``argpartition``: linear-time selection, then a sort of only the k winners."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# what every retriever returns per query: (doc id, score) pairs, best first
Hits = list[tuple[str, float]]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best entries of a 1-d array, best first (ties: lower index first)."""
    k = min(k, scores.shape[0])
    if k == 0:
        return np.zeros(0, dtype=np.int64), scores[:0]
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    order = np.lexsort((part, -scores[part]))
    best = part[order]
    return best, scores[best]


def top_k_rows(matrix: sp.csr_matrix, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``top_k`` of each row of a sparse matrix over its stored entries only (absent = not a match)."""
    out = []
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    for r in range(matrix.shape[0]):
        lo, hi = indptr[r], indptr[r + 1]
        pos, vals = top_k(data[lo:hi], k)
        out.append((indices[lo:hi][pos], vals))
    return out
