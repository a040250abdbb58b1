"""Sparse retrieval: BM25 (five variants) or TF-IDF cosine over an ``InvertedIndex``.

Queries are scored in batches as one sparse product (queries × terms) @ (terms × documents), and
only documents sharing a term with the query are candidates, as in Lucene.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..core.validate import check_choice, check_number
from .index import InvertedIndex, check_searchable
from .topk import Hits, top_k_rows
from .weighting import BM25_VARIANTS, bm25_weights, tfidf_idf, tfidf_weights

SCORINGS = ("bm25", "tfidf")


class SparseRetriever:
    """Search an index with BM25 (``variant``, ``k1``, ``b``, ``delta``) or TF-IDF cosine."""

    def __init__(self, index: InvertedIndex, scoring: str = "bm25", variant: str = "lucene",
                 k1: float = 0.9, b: float = 0.4, delta: float = 0.5, batch_size: int = 1024) -> None:
        self.index = index
        self.scoring = check_choice("scoring", scoring, SCORINGS)
        self.variant = check_choice("variant", variant, BM25_VARIANTS)
        self.k1, self.b, self.delta = k1, b, delta
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self._cached_version = -1
        self._weights: sp.csr_matrix | None = None
        self._absent: np.ndarray | None = None
        self._query_idf: np.ndarray | None = None
        self._refresh()

    def _refresh(self) -> None:
        """Recompute weights when the index changed since they were built."""
        if self._cached_version == self.index.version:
            return
        check_searchable(self.index)
        if self.scoring == "bm25":
            self._weights, self._absent = bm25_weights(self.index, self.variant, self.k1, self.b, self.delta)
        else:
            self._weights, self._absent = tfidf_weights(self.index)
            self._query_idf = tfidf_idf(self.index).astype(np.float32)
        self._cached_version = self.index.version

    def _query_vectors(self, queries: Sequence[str]) -> sp.csr_matrix:
        q = self.index.query_matrix(queries)
        if self.scoring == "tfidf":
            q = (q @ sp.diags(self._query_idf)).tocsr()
            norms = np.sqrt(np.asarray(q.multiply(q).sum(axis=1)).ravel())
            q = (sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0).astype(np.float32)) @ q).tocsr()
        return q

    def score_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """(queries × documents) scores of matching documents; absent entries are non-matches."""
        self._refresh()
        q = self._query_vectors(queries)
        scores = (q @ self._weights).tocsr()
        if self._absent.any():  # BM25L/BM25+: every query term adds its "absent" score to every match
            shift = np.asarray(q @ self._absent).ravel().astype(np.float32)
            scores.data += np.repeat(shift, np.diff(scores.indptr))
        return scores

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        """The ``k`` best (doc id, score) pairs for each query, best first; [] for a query with no match."""
        check_number("k", k, low=1, integer=True)
        if isinstance(queries, str):
            queries = [queries]
        ids = self.index.doc_ids
        out: list[Hits] = []
        for start in range(0, len(queries), self.batch_size):
            scores = self.score_matrix(queries[start:start + self.batch_size])
            for rows, vals in top_k_rows(scores, k):
                out.append([(ids[r], float(v)) for r, v in zip(rows.tolist(), vals.tolist(), strict=True)])
        return out
