"""Dense retrieval against any encoder: a callable mapping a list of texts to an L2-normalised
float32 array (one row per text). Exact inner-product search, and an approximate HNSW index
(faiss, imported lazily) whose recall against exact search can be measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from itertools import islice
from pathlib import Path

import numpy as np

from ..core.errors import DataError, MissingDependencyError, ModelError
from ..core.io import atomic_path
from ..core.progress import progress
from ..core.validate import check_number
from .topk import Hits, top_k

Encoder = Callable[[list[str]], np.ndarray]


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def encode(encoder: Encoder, texts: Iterable[str], batch_size: int = 64, desc: str = "encoding") -> np.ndarray:
    """Encode a stream of texts in batches (with progress); checks shapes, re-normalises rows."""
    check_number("batch_size", batch_size, low=1, integer=True)
    total = -(-len(texts) // batch_size) if isinstance(texts, Sized) else None
    parts = []
    for batch in progress(_batches(texts, batch_size), desc=desc, total=total, unit="batch"):
        vecs = np.asarray(encoder(batch), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(batch):
            raise ModelError(f"the encoder returned shape {vecs.shape} for {len(batch)} texts",
                             "an encoder must return one row per text (a 2-d array)")
        if not np.isfinite(vecs).all():
            raise ModelError("the encoder returned NaN or infinite values", "check the encoder")
        parts.append(vecs)
    if not parts:
        raise DataError("nothing to encode: the list of texts is empty", "pass at least one text")
    return normalize(np.concatenate(parts))


def save_vectors(path: str | os.PathLike, vectors: np.ndarray, ids: Sequence[str]) -> None:
    """Document vectors and their ids in one safetensors file, written atomically."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({"vectors": np.ascontiguousarray(vectors, dtype=np.float32)}, str(tmp),
                  metadata={"ids": json.dumps(list(ids))})


def load_vectors(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(vectors, ids) saved by ``save_vectors``; a damaged file is one ``DataError``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            vectors, ids = f.get_tensor("vectors"), json.loads(f.metadata()["ids"])
    except Exception as exc:  # safetensors raises several kinds on a damaged file
        raise DataError(f"the vector cache {path} is corrupted ({exc})", "delete it; it is rebuilt on the next run") from None
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise DataError(f"the vector cache {path} holds {vectors.shape} vectors for {len(ids)} ids",
                        "delete it; it is rebuilt on the next run")
    return vectors, [str(i) for i in ids]


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class ExactIndex:
    """Brute-force maximum inner product search over unit vectors (= cosine), in query batches."""

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], batch_size: int = 256) -> None:
        if len(ids) != len(vectors):
            raise DataError(f"{len(vectors)} vectors but {len(ids)} ids", "pass one id per vector")
        if len(ids) == 0:
            raise DataError("cannot search an empty set of vectors", "add at least one document")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = [str(i) for i in ids]
        self.batch_size = batch_size

    def search_vectors(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(row indices, scores) of the ``k`` nearest vectors of each query, best first."""
        out = []
        for start in range(0, len(queries), self.batch_size):
            scores = queries[start:start + self.batch_size] @ self.vectors.T
            out.extend(top_k(row, k) for row in scores)
        return out


class HNSWIndex:
    """Approximate inner-product search with faiss's HNSW graph (``m`` links, ``ef_search`` beam)."""

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], m: int = 32, ef_construction: int = 200,
                 ef_search: int = 128) -> None:
        try:
            import faiss
        except ImportError as exc:
            raise MissingDependencyError("faiss-cpu", "the approximate (HNSW) dense index") from exc
        if len(ids) != len(vectors) or len(ids) == 0:
            raise DataError(f"{len(vectors)} vectors and {len(ids)} ids", "pass one id per vector, at least one")
        self.ids = [str(i) for i in ids]
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.hnsw.efSearch = ef_search
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search_vectors(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self.ids)))
        return [(r[r >= 0], s[r >= 0]) for r, s in zip(rows, scores, strict=True)]


def ann_recall(approximate: list[tuple[np.ndarray, np.ndarray]], exact: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean fraction of the exact top-k that the approximate search also returned."""
    shares = [len(set(a[0].tolist()) & set(e[0].tolist())) / max(len(e[0]), 1)
              for a, e in zip(approximate, exact, strict=True)]
    return float(np.mean(shares))


class DenseRetriever:
    """Encode documents once, then answer text queries by nearest-neighbour search.

    ``batch_size`` texts go to the encoder per call (a neural encoder sorts them by length and runs
    its own smaller batches). ``cache``: a safetensors file of the documents' vectors, read when it
    exists (``docs`` is then not read) and written after encoding otherwise; the caller names it by
    corpus checksum and encoder.
    """

    def __init__(self, encoder: Encoder, docs: Iterable[tuple[str, str]], ann: bool = False,
                 batch_size: int = 1024, cache: str | os.PathLike | None = None) -> None:
        self.encoder, self.batch_size = encoder, batch_size
        if cache is not None and Path(cache).is_file():
            vectors, ids = load_vectors(cache)
        else:
            ids = []

            def texts() -> Iterator[str]:  # streamed: only the vectors are kept
                for doc_id, text in docs:
                    ids.append(str(doc_id))
                    yield text

            vectors = encode(encoder, texts(), batch_size, desc="encoding documents")
            if cache is not None:
                save_vectors(cache, vectors, ids)
        self.index = HNSWIndex(vectors, ids) if ann else ExactIndex(vectors, ids)

    def search(self, queries: Sequence[str], k: int = 10) -> list[Hits]:
        """The ``k`` most similar documents of each query as (doc id, cosine) pairs, best first."""
        check_number("k", k, low=1, integer=True)
        if isinstance(queries, str):
            queries = [queries]
        qv = encode(self.encoder, queries, self.batch_size, desc="encoding queries")
        ids = self.index.ids
        return [[(ids[r], float(s)) for r, s in zip(rows.tolist(), scores.tolist(), strict=True)]
                for rows, scores in self.index.search_vectors(qv, k)]
