"""Choosing few-shot examples for a query: fixed, random with a seed, or the nearest by retrieval.

``fixed`` takes the pool's first k examples (the same for every query); ``random`` draws k with a
generator seeded by (seed, query), so a query gets the same examples whatever order the queries
come in; ``bm25`` and ``dense`` take the k examples most similar to the query (Liu et al. 2022,
"What Makes Good In-Context Examples for GPT-3?") through ``lmlab.retrieval`` — Lucene BM25 over an
inverted index, or cosine similarity of sentence embeddings (all-MiniLM-L6-v2 by default, or any
encoder) — ordered most similar last, nearest the query. The query itself is never its own example.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from ..core.errors import DataError
from ..core.validate import check_choice, check_number

SELECTIONS = ("fixed", "random", "bm25", "dense")


class ExampleSelector:
    """Picks ``k`` examples of ``pool`` for a query (see the module docstring); ``text_of`` gives the
    text of an example that retrieval compares with the query."""

    def __init__(self, pool: Sequence[dict], text_of: Callable[[dict], str], method: str = "fixed", k: int = 4,
                 seed: int = 1234, encoder: Any = None) -> None:
        self.pool, self.text_of = list(pool), text_of
        self.method = check_choice("few-shot selection", method, SELECTIONS)
        self.k = int(check_number("k", k, low=0, integer=True))
        self.seed = seed
        if self.k > len(self.pool):
            raise DataError(f"{self.k}-shot selection needs that many examples, the pool has {len(self.pool)}",
                            "lower the number of few-shot examples or give a larger pool")
        self._retriever = None
        if self.k and method in ("bm25", "dense"):
            docs = [(str(i), text_of(r)) for i, r in enumerate(self.pool)]
            if method == "bm25":
                from ..retrieval import InvertedIndex, SparseRetriever

                self._retriever = SparseRetriever(InvertedIndex.build(docs))
            else:
                from ..retrieval import DenseRetriever

                if encoder is None:
                    from ..retrieval.encoders import minilm_encoder

                    encoder = minilm_encoder()
                self._retriever = DenseRetriever(encoder, docs)

    def _not_query(self, indices: Sequence[int], query: str) -> list[int]:
        return [i for i in indices if self.text_of(self.pool[i]) != query]

    def select(self, query: str) -> list[dict]:
        """The examples for ``query`` (the text retrieval compares)."""
        if not self.k:
            return []
        order = range(len(self.pool))
        if self.method == "fixed":
            chosen = self._not_query(order, query)[:self.k]
        elif self.method == "random":
            rng = random.Random(f"{self.seed}\x00{query}")
            chosen = rng.sample(self._not_query(order, query), self.k)
        else:
            hits = self._retriever.search([query], k=min(len(self.pool), self.k + 1))[0]
            chosen = self._not_query([int(doc) for doc, _ in hits], query)[:self.k]
            if len(chosen) < self.k:  # nothing shares a term with the query: fill in pool order
                chosen += [i for i in self._not_query(order, query) if i not in chosen][:self.k - len(chosen)]
            chosen = chosen[::-1]  # the most similar last, next to the query
        if len(chosen) < self.k:
            raise DataError(f"only {len(chosen)} examples differ from the query, {self.k} were asked for",
                            "give a larger pool")
        return [self.pool[i] for i in chosen]
