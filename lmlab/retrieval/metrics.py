"""Ranking metrics as trec_eval computes them: nDCG@k, Recall@k, MRR@k, MAP@k.

A run maps query id → {doc id: score}; qrels map query id → {doc id: relevance}. Like trec_eval,
documents are ranked by score, ties broken by doc id in *descending* string order, and a document
is relevant when its relevance is ≥ 1 (graded gains count in nDCG). Scores are averaged over the
queries of the qrels that have at least one relevant document; a query missing from the run
scores 0 (trec_eval's ``-c`` convention), so a run cannot look better by dropping hard queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..core.errors import DataError

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def ranked(docs: Mapping[str, float]) -> list[str]:
    """Doc ids best first, ties by doc id descending (trec_eval's order)."""
    return [d for d, _ in sorted(docs.items(), key=lambda item: (-item[1], _Desc(item[0])))]


class _Desc(str):
    """A string that sorts in reverse order."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


def ndcg_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    relevant = sum(1 for r in rels.values() if r > 0)
    return sum(1 for d in ranking[:k] if rels.get(d, 0) > 0) / relevant


def mrr_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranking[:k]) if rels.get(d, 0) > 0), 0.0)


def ap_at_k(ranking: list[str], rels: Mapping[str, int], k: int) -> float:
    relevant = sum(1 for r in rels.values() if r > 0)
    hits, total = 0, 0.0
    for i, d in enumerate(ranking[:k]):
        if rels.get(d, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / relevant


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k, "map": ap_at_k}


def evaluate_run(run: Run, qrels: Qrels, measures: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10", "map@1000"),
                 per_query: bool = False) -> dict:
    """Mean of each measure ('ndcg@10', 'recall@100', ...) over the judged queries."""
    parsed = []
    for m in measures:
        name, _, k = m.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) < 1:
            raise DataError(f"unknown measure {m!r}", f"use NAME@K with NAME one of {', '.join(METRICS)}")
        parsed.append((m, METRICS[name], int(k)))
    judged = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    if not judged:
        raise DataError("the qrels have no relevant documents", "check the qrels file")
    table = {m: {} for m, _, _ in parsed}
    for q in judged:
        ranking = ranked(run.get(q, {}))
        for m, fn, k in parsed:
            table[m][q] = fn(ranking, qrels[q], k)
    result = {m: sum(v.values()) / len(judged) for m, v in table.items()}
    if per_query:
        result["per_query"] = table
    return result
