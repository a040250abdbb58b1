"""Term weights computed from an index's counts: the BM25 family and TF-IDF cosine.

Each function returns ``(W, absent)``: ``W`` is a (terms × documents) CSR matrix such that a query's
count vector ``q`` scores documents as ``q @ W + q @ absent``. ``absent`` is the per-term score a
document gets for *not* containing the term (non-zero only for BM25L and BM25+), kept apart so
``W`` stays sparse. Formulas follow Kamphuis et al. (ECIR 2020), "Which BM25 do you mean?".
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..core.validate import check_choice, check_number
from .index import InvertedIndex

BM25_VARIANTS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


def bm25_idf(df: np.ndarray, n: int, variant: str) -> np.ndarray:
    """Inverse document frequency of each term for a BM25 variant (0 for terms in no document)."""
    df = df.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if variant == "lucene":
            idf = np.log1p((n - df + 0.5) / (df + 0.5))
        elif variant == "robertson":  # negative weights of very common terms are clipped to 0
            idf = np.log(np.maximum((n - df + 0.5) / (df + 0.5), 1.0))
        elif variant == "atire":
            idf = np.log(n / df)
        elif variant == "bm25l":
            idf = np.log((n + 1) / (df + 0.5))
        else:  # bm25+
            idf = np.log((n + 1) / df)
    return np.where(df > 0, idf, 0.0)


def bm25_tf(tf: np.ndarray, length_norm: np.ndarray, variant: str, k1: float, delta: float) -> np.ndarray:
    """The term-frequency component; ``length_norm`` is ``1 - b + b * doc_len / avg_len``."""
    if variant in ("lucene", "robertson"):
        return tf / (tf + k1 * length_norm)
    if variant == "atire":
        return tf * (k1 + 1) / (tf + k1 * length_norm)
    if variant == "bm25l":
        c = tf / length_norm
        return (k1 + 1) * (c + delta) / (k1 + c + delta)
    return tf * (k1 + 1) / (tf + k1 * length_norm) + delta  # bm25+


def bm25_weights(index: InvertedIndex, variant: str = "lucene", k1: float = 0.9, b: float = 0.4,
                 delta: float = 0.5) -> tuple[sp.csr_matrix, np.ndarray]:
    """BM25 term weights of every (term, live document) pair; Lucene/Pyserini defaults k1=0.9, b=0.4."""
    check_choice("variant", variant, BM25_VARIANTS)
    check_number("k1", k1, low=0.0)
    check_number("b", b, low=0.0, high=1.0)
    check_number("delta", delta, low=0.0)
    counts = index.live_counts()
    n, avg = index.num_docs, index.average_length()
    idf = bm25_idf(index.document_frequency(), n, variant)
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    norm = 1.0 - b + b * index.doc_len[rows] / (avg if avg > 0 else 1.0)
    tf = counts.data.astype(np.float64)
    zero = np.zeros(1)
    absent_tf = bm25_tf(zero, np.ones(1), variant, k1, delta)[0]  # constant: tf=0 ignores length
    weights = (bm25_tf(tf, norm, variant, k1, delta) - absent_tf) * idf[counts.indices]
    w = sp.csr_matrix((weights.astype(np.float32), counts.indices, counts.indptr), shape=counts.shape)
    w.eliminate_zeros()
    return w.T.tocsr(), (absent_tf * idf).astype(np.float32)


def tfidf_weights(index: InvertedIndex) -> tuple[sp.csr_matrix, np.ndarray]:
    """L2-normalised tf·idf document vectors, idf = ln((1+N)/(1+df)) + 1 (scikit-learn's smooth idf)."""
    counts = index.live_counts()
    idf = tfidf_idf(index)
    w = (counts @ sp.diags(idf.astype(np.float32))).tocsr()
    norms = np.sqrt(np.asarray(w.multiply(w).sum(axis=1)).ravel())
    w = (sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)) @ w).tocsr()
    w.eliminate_zeros()
    return w.T.tocsr(), np.zeros(index.num_terms, dtype=np.float32)


def tfidf_idf(index: InvertedIndex) -> np.ndarray:
    """Smoothed idf of every term (also used to weight queries for cosine similarity)."""
    return np.log((1.0 + index.num_docs) / (1.0 + index.document_frequency())) + 1.0
