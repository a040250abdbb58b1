"""Hybrid retrieval: fuse ranked lists by reciprocal rank or by interpolating normalised scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.validate import check_choice, check_number
from .topk import Hits

NORMS = ("minmax", "zscore")


def reciprocal_rank_fusion(rankings: Sequence[Hits], k: float = 60.0) -> Hits:
    """RRF (Cormack et al., 2009): score(d) = Σ 1 / (k + rank(d)), ranks from 1; best first."""
    check_number("k", k, low=0.0)
    fused: dict[str, float] = {}
    for hits in rankings:
        for rank, (doc, _) in enumerate(hits, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def normalized_scores(hits: Hits, norm: str = "minmax") -> dict[str, float]:
    """Scores of one list rescaled to [0, 1] (min-max) or to zero mean, unit deviation (z-score)."""
    check_choice("norm", norm, NORMS)
    if not hits:
        return {}
    s = np.array([v for _, v in hits], dtype=np.float64)
    if norm == "minmax":
        span = s.max() - s.min()
        s = (s - s.min()) / span if span > 0 else np.ones_like(s)
    else:
        sd = s.std()
        s = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    return {doc: float(v) for (doc, _), v in zip(hits, s, strict=True)}


def interpolate(sparse: Hits, dense: Hits, alpha: float = 0.5, norm: str = "minmax") -> Hits:
    """alpha·dense + (1−alpha)·sparse on normalised scores; a document missing from one list gets
    that list's lowest normalised score."""
    check_number("alpha", alpha, low=0.0, high=1.0)
    a, b = normalized_scores(sparse, norm), normalized_scores(dense, norm)
    floor_a, floor_b = min(a.values(), default=0.0), min(b.values(), default=0.0)
    fused = {d: (1 - alpha) * a.get(d, floor_a) + alpha * b.get(d, floor_b) for d in a.keys() | b.keys()}
    return sorted(fused.items(), key=lambda item: -item[1])


FUSIONS = ("rrf", "interpolate")


class HybridRetriever:
    """Search a sparse and a dense retriever ``depth`` deep each, then fuse (``rrf`` or ``interpolate``)."""

    def __init__(self, sparse, dense, method: str = "rrf", depth: int = 100, rrf_k: float = 60.0,
                 alpha: float = 0.5, norm: str = "minmax") -> None:
        self.sparse, self.dense = sparse, dense
        self.method = check_choice("method", method, FUSIONS)
        self.depth = int(check_number("depth", depth, low=1, integer=True))
        self.rrf_k, self.alpha, self.norm = rrf_k, alpha, norm

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        if isinstance(queries, str):
            queries = [queries]
        depth = max(self.depth, k)
        out = []
        for s, d in zip(self.sparse.search(queries, depth), self.dense.search(queries, depth), strict=True):
            fused = reciprocal_rank_fusion([s, d], self.rrf_k) if self.method == "rrf" else \
                interpolate(s, d, self.alpha, self.norm)
            out.append(fused[:k])
        return out
