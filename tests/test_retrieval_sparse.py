"""Sparse retrieval: hand-computed BM25, parity with bm25s and scikit-learn, add/delete, save/load."""

import math

import numpy as np
import pytest

from lmlab.analysis.analyzer import Analyzer
from lmlab.core.errors import DataError, InputError
from lmlab.retrieval import InvertedIndex, SparseRetriever
from lmlab.retrieval.weighting import BM25_VARIANTS

DOCS = ["the cat sat on the mat", "a dog chased the cat and the cat ran", "dogs and cats are pets",
        "the quick brown fox jumps over the lazy dog", "a mat is a flat piece of fabric",
        "pets need food water and care", "the fox ate the cat food"]
QUERIES = ["cat on a mat", "dog food", "quick fox", "pets care water cat cat"]


def test_lucene_bm25_matches_a_hand_computed_score():
    index = InvertedIndex.build(["cat cat dog", "dog", "bird"])  # lengths 3, 1, 1; avg 5/3
    hits = SparseRetriever(index).search(["cat"], k=3)[0]
    norm = 1 - 0.4 + 0.4 * 3 / (5 / 3)
    assert [d for d, _ in hits] == ["0"]  # only matching documents are returned
    assert hits[0][1] == pytest.approx(math.log(1 + 2.5 / 1.5) * 2 / (2 + 0.9 * norm), rel=1e-6)
    dog = dict(SparseRetriever(index).search(["dog"], k=3)[0])
    assert dog["1"] > dog["0"]  # the shorter document wins at equal tf


@pytest.mark.parametrize("variant", BM25_VARIANTS)
def test_bm25_variants_match_bm25s(variant):
    bm25s = pytest.importorskip("bm25s")
    analyzer = Analyzer(stopwords="lucene")
    index = InvertedIndex.build(DOCS, analyzer)
    ours = SparseRetriever(index, variant=variant, k1=1.2, b=0.75, delta=0.5)
    peer = bm25s.BM25(method=variant, k1=1.2, b=0.75, delta=0.5)
    peer.index([analyzer(d) for d in DOCS], show_progress=False)
    for q in QUERIES:
        theirs = peer.get_scores(analyzer(q))
        hits = dict(ours.search([q], k=len(DOCS))[0])
        mine = np.array([hits.get(str(i), np.nan) for i in range(len(DOCS))])
        matched = ~np.isnan(mine)
        assert matched.any()
        np.testing.assert_allclose(mine[matched], theirs[matched], rtol=1e-5, atol=1e-6)


def test_tfidf_cosine_matches_scikit_learn():
    text = pytest.importorskip("sklearn.feature_extraction.text")
    analyzer = Analyzer(stopwords="none")
    index = InvertedIndex.build(DOCS, analyzer)
    vec = text.TfidfVectorizer(analyzer=analyzer)
    d = vec.fit_transform(DOCS)
    expected = (vec.transform(QUERIES) @ d.T).toarray()
    scores = SparseRetriever(index, scoring="tfidf").score_matrix(QUERIES).toarray()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def _scores(index, queries=QUERIES, **kw):
    return [dict(h) for h in SparseRetriever(index, **kw).search(queries, k=10)]


def test_streamed_batches_give_the_same_index():
    whole = InvertedIndex.build(DOCS, batch_size=10_000)
    streamed = InvertedIndex.build((d for d in DOCS), batch_size=2)
    assert streamed.vocab == whole.vocab and (streamed.counts != whole.counts).nnz == 0
    assert _scores(streamed) == _scores(whole)


def test_incremental_add_and_delete_equal_a_rebuild():
    grown = InvertedIndex.build(DOCS[:3])
    retriever = SparseRetriever(grown, variant="bm25+")
    assert grown.add([(str(i), d) for i, d in enumerate(DOCS) if i >= 3]) == 4
    assert [dict(h) for h in retriever.search(QUERIES, k=10)] == _scores(InvertedIndex.build(DOCS), variant="bm25+")
    grown.delete(["1", "4"])
    rebuilt = InvertedIndex.build([(str(i), d) for i, d in enumerate(DOCS) if i not in (1, 4)])
    for got, want in zip(retriever.search(QUERIES, k=10), _scores(rebuilt, variant="bm25+"), strict=True):
        assert dict(got) == pytest.approx(want, rel=1e-6)
    grown.compact()
    assert grown.num_docs == 5 and grown.counts.shape[0] == 5
    for got, want in zip(retriever.search(QUERIES, k=10), _scores(rebuilt, variant="bm25+"), strict=True):
        assert dict(got) == pytest.approx(want, rel=1e-6)
    with pytest.raises(InputError, match="no document"):
        grown.delete(["1"])
    with pytest.raises(DataError, match="already"):
        grown.add([("0", "again")])


def test_save_load_round_trip_and_corruption_is_one_clear_error(tmp_path):
    index = InvertedIndex.build(DOCS, Analyzer(stopwords="nltk"))
    index.delete(["2"])
    index.save(tmp_path / "ix")
    loaded = InvertedIndex.load(tmp_path / "ix")
    assert loaded.analyzer == index.analyzer and loaded.num_docs == 6
    assert _scores(loaded) == _scores(index)
    arrays = tmp_path / "ix" / "index.safetensors"
    raw = bytearray(arrays.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    arrays.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupted"):
        InvertedIndex.load(tmp_path / "ix")
    (tmp_path / "ix" / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupted"):
        InvertedIndex.load(tmp_path / "ix")
    with pytest.raises(InputError, match="not a saved index"):
        InvertedIndex.load(tmp_path)


def test_empty_corpus_and_stop_word_queries():
    with pytest.raises(DataError, match="empty corpus"):
        InvertedIndex.build([])
    index = InvertedIndex.build(DOCS)
    assert SparseRetriever(index).search(["the and of a", "cat"], k=3)[0] == []
    index.delete([str(i) for i in range(len(DOCS))])
    with pytest.raises(DataError, match="no documents"):
        SparseRetriever(index).search(["cat"])
