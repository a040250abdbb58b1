"""Evaluate a retrieval method on a BEIR folder: build, search every judged query, score the run."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..analysis.analyzer import Analyzer
from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number
from .beir import corpus_docs, load_qrels, load_queries
from .dense import DenseRetriever
from .encoders import CACHED_ENCODERS, ENCODERS, default_encoder
from .fusion import FUSIONS, HybridRetriever
from .index import InvertedIndex
from .metrics import evaluate_run
from .sparse import SparseRetriever

METHODS = ("bm25", "tfidf", "dense", "hybrid")


@dataclass
class RetrievalOptions:
    """How to retrieve: sparse scoring, dense encoder, and fusion settings."""

    variant: str = "lucene"
    k1: float = 0.9
    b: float = 0.4
    delta: float = 0.5
    analyzer: Analyzer | None = None
    encoder: str | None = None  # None: minilm when installed, else hashing (``default_encoder``)
    ann: bool = False
    fusion: str = "rrf"
    alpha: float = 0.5
    rrf_k: float = 60.0
    cache: str | None = None  # folder for document vectors of slow (neural) encoders; None: no cache

    def __post_init__(self) -> None:
        check_choice("fusion", self.fusion, FUSIONS)
        check_number("alpha", self.alpha, low=0.0, high=1.0)
        check_number("rrf_k", self.rrf_k, low=0.0, low_inclusive=False)
        self.encoder = self.encoder or default_encoder()


def corpus_checksum(folder: str | os.PathLike) -> str:
    """sha256 of a BEIR folder's corpus.jsonl (read in blocks): the key of its cached vectors."""
    digest = hashlib.sha256()
    with open(Path(folder) / "corpus.jsonl", "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_cache() -> str:
    """Where document vectors are cached: ``$LMLAB_CACHE/embeddings`` (default ~/.cache/lmlab)."""
    return str(Path(os.environ.get("LMLAB_CACHE", Path.home() / ".cache" / "lmlab")) / "embeddings")


def build_retriever(method: str, folder: str | os.PathLike, opts: RetrievalOptions, encoder=None):
    """The retriever ``method`` names, built over the folder's corpus (streamed for sparse indexes)."""
    check_choice("method", method, METHODS)
    if method in ("bm25", "tfidf", "hybrid"):
        sparse = SparseRetriever(InvertedIndex.build(corpus_docs(folder), opts.analyzer),
                                 scoring="tfidf" if method == "tfidf" else "bm25",
                                 variant=opts.variant, k1=opts.k1, b=opts.b, delta=opts.delta)
        if method != "hybrid":
            return sparse
    custom = encoder is not None
    if encoder is None:
        if opts.encoder not in ENCODERS:
            raise ConfigError(f"encoder {opts.encoder!r} is not available",
                              f"choose one of: {', '.join(ENCODERS)} (or pass an encoder callable from Python)")
        encoder = ENCODERS[opts.encoder]()
    cache = None
    if opts.cache and opts.encoder in CACHED_ENCODERS and not custom:
        cache = Path(opts.cache) / f"{opts.encoder}-{corpus_checksum(folder)[:24]}.safetensors"
    dense = DenseRetriever(encoder, corpus_docs(folder), ann=opts.ann, cache=cache)
    if method == "dense":
        return dense
    return HybridRetriever(sparse, dense, method=opts.fusion, alpha=opts.alpha, rrf_k=opts.rrf_k)


def evaluate_beir(folder: str | os.PathLike, method: str = "bm25", split: str = "test", depth: int = 100,
                  opts: RetrievalOptions | None = None, encoder=None) -> dict:
    """nDCG@10, Recall@100, MRR@10, MAP@depth and queries/s of ``method`` on a BEIR folder's split."""
    check_number("depth", depth, low=100, integer=True)
    opts = opts or RetrievalOptions()
    qrels = load_qrels(folder, split)
    queries = load_queries(folder)
    qids = [q for q in qrels if q in queries]
    if not qids:
        raise ConfigError(f"none of the {split} qrels' queries are in queries.jsonl", "check the BEIR folder")
    t0 = time.perf_counter()
    retriever = build_retriever(method, folder, opts, encoder)
    t1 = time.perf_counter()
    hits = retriever.search([queries[q] for q in qids], k=depth)
    t2 = time.perf_counter()
    run = {q: dict(h) for q, h in zip(qids, hits, strict=True)}
    metrics = evaluate_run(run, qrels, ("ndcg@10", "recall@100", "mrr@10", f"map@{depth}"))
    result = {**metrics, "queries_per_s": len(qids) / (t2 - t1), "index_s": t1 - t0, "queries": len(qids),
              "method": method, "split": split}
    if method in ("dense", "hybrid"):
        result["encoder"] = "custom" if encoder is not None else opts.encoder
    return result
