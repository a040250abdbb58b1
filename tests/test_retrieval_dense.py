"""Dense retrieval, ANN recall, the hashing encoder, and hybrid fusion."""

import numpy as np
import pytest

from lmlab.core.errors import DataError, ModelError
from lmlab.retrieval import InvertedIndex, SparseRetriever
from lmlab.retrieval.dense import (
    DenseRetriever,
    ExactIndex,
    HNSWIndex,
    ann_recall,
    encode,
    normalize,
)
from lmlab.retrieval.encoders import HashingEncoder
from lmlab.retrieval.fusion import (
    HybridRetriever,
    interpolate,
    normalized_scores,
    reciprocal_rank_fusion,
)

DOCS = [("a", "the cat sat on the mat"), ("b", "dogs chase cats in the park"),
        ("c", "stock markets fell sharply today"), ("d", "the central bank raised interest rates"),
        ("e", "a kitten is a young cat")]


def test_encode_batches_normalise_and_check_the_encoder(no_progress):
    enc = HashingEncoder(dim=64)
    texts = [t for _, t in DOCS]
    one = encode(enc, texts, batch_size=1)
    np.testing.assert_allclose(one, encode(enc, texts, batch_size=64))
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ModelError, match="one row per text"):
        encode(lambda batch: np.zeros((len(batch) + 1, 4)), texts)
    with pytest.raises(ModelError, match="NaN"):
        encode(lambda batch: np.full((len(batch), 4), np.nan), texts)
    with pytest.raises(DataError, match="empty"):
        encode(enc, [])


def test_exact_search_equals_a_full_sort():
    rng = np.random.default_rng(0)
    vecs = normalize(rng.normal(size=(300, 16)))
    queries = normalize(rng.normal(size=(7, 16)))
    index = ExactIndex(vecs, [str(i) for i in range(300)], batch_size=3)
    for q, (rows, scores) in zip(queries, index.search_vectors(queries, 5), strict=True):
        full = vecs @ q
        assert rows.tolist() == np.argsort(-full)[:5].tolist()
        np.testing.assert_allclose(scores, np.sort(full)[::-1][:5], rtol=1e-6)
    with pytest.raises(DataError):
        ExactIndex(vecs, ["x"])


def test_hnsw_recall_against_exact_search_is_high():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    vecs = normalize(rng.normal(size=(2000, 32)))
    queries = normalize(rng.normal(size=(50, 32)))
    ids = [str(i) for i in range(2000)]
    recall = ann_recall(HNSWIndex(vecs, ids).search_vectors(queries, 10), ExactIndex(vecs, ids).search_vectors(queries, 10))
    assert 0.9 <= recall <= 1.0


def test_dense_retriever_finds_the_lexically_closest_document(no_progress):
    retriever = DenseRetriever(HashingEncoder(dim=256), DOCS)
    hits = retriever.search(["interest rates of the bank", "cat on a mat"], k=2)
    assert hits[0][0][0] == "d" and hits[1][0][0] == "a"
    assert hits[0][0][1] == pytest.approx(max(s for _, s in hits[0]))


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(reciprocal_rank_fusion([[("x", 9.0), ("y", 1.0)], [("y", 0.9), ("z", 0.1)]], k=1))
    assert fused == pytest.approx({"x": 1 / 2, "y": 1 / 3 + 1 / 2, "z": 1 / 3})


def test_interpolation_of_normalised_scores_by_hand():
    assert normalized_scores([("a", 3.0), ("b", 1.0), ("c", 2.0)]) == {"a": 1.0, "b": 0.0, "c": 0.5}
    z = normalized_scores([("a", 3.0), ("b", 1.0)], "zscore")
    assert z == pytest.approx({"a": 1.0, "b": -1.0})
    fused = dict(interpolate([("a", 10.0), ("b", 0.0)], [("b", 0.8), ("c", 0.4)], alpha=0.25))
    assert fused == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.0})


def test_hybrid_retriever_fuses_sparse_and_dense(no_progress):
    sparse = SparseRetriever(InvertedIndex.build(DOCS))
    dense = DenseRetriever(HashingEncoder(dim=256), DOCS)
    for method in ("rrf", "interpolate"):
        hits = HybridRetriever(sparse, dense, method=method, depth=5).search(["young cat"], k=3)[0]
        assert hits[0][0] == "e" and len(hits) <= 3
