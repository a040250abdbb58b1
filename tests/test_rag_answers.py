"""RAG answers: question coverage ('not found'), citations (written, model-constrained, word
overlap), the hand-made question set's retrieval, and SmolLM2 answering through the engine."""

import json
import math
from pathlib import Path

import pytest

from lmlab.retrieval.rag import (
    NOT_FOUND,
    RagIndex,
    ask,
    build_rag_index,
    overlap_citation,
    query_coverage,
)

DATA = Path(__file__).parent / "data" / "rag"


@pytest.fixture
def rag(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The red lighthouse was built in 1874.")
    (folder / "b.txt").write_text("The green bakery opens at six.")
    (folder / "c.txt").write_text("The blue river is long.")
    build_rag_index([folder], tmp_path / "ix", size=200, overlap=0)
    return RagIndex(tmp_path / "ix")


def test_coverage_is_the_share_of_the_questions_idf_mass(rag):
    # 3 chunks; 'red', 'lighthouse' in 1 (idf ln(1 + 2.5/1.5)); 'purple' unseen (idf ln(1 + 3.5/0.5))
    seen, unseen = math.log1p(2.5 / 1.5), math.log1p(3.5 / 0.5)
    cov = query_coverage(rag.index, "Which red lighthouse is purple?", ["the red lighthouse", "nothing"])
    assert cov[0] == pytest.approx(2 * seen / (2 * seen + unseen)) and cov[1] == 0.0
    assert query_coverage(rag.index, "which is the", ["anything"]) == [0.0]  # only stop words


def test_low_coverage_is_not_found_and_citations_resolve_to_spans(rag):
    out = ask(rag, "Who painted the red lighthouse ceiling?", generate=lambda p: "Nobody [1].", min_coverage=0.9)
    assert out == {**out, "found": False, "answer": NOT_FOUND, "citations": []}
    written = ask(rag, "When was the red lighthouse built?", generate=lambda p: "In 1874 [1].")
    assert written["cited_by"] == "model" and written["citations"][0]["source"].endswith("a.txt")
    c = written["citations"][0]
    assert Path(c["source"]).read_text()[c["start"]:c["end"]] == "The red lighthouse was built in 1874."
    chosen = ask(rag, "When was the red lighthouse built?", generate=lambda p: "In 1874.", min_coverage=0.0,
                 cite=lambda prompt, answer, numbers: numbers[-1])
    assert chosen["cited_by"] == "model-constrained" and chosen["citations"][0]["n"] == len(chosen["sources"])
    overlap = ask(rag, "When was the red lighthouse built?", generate=lambda p: "It was built in 1874.")
    assert overlap["cited_by"] == "overlap" and overlap["citations"][0]["source"].endswith("a.txt")
    refused = ask(rag, "When was the red lighthouse built?", generate=lambda p: NOT_FOUND + " Sorry.")
    assert refused["found"] is False and refused["citations"] == [] and refused["cited_by"] is None


def test_overlap_citation_prefers_the_better_retrieved_source_on_ties(rag):
    sources = rag.retrieve("red lighthouse green bakery", k=3, min_coverage=0.0)
    assert overlap_citation("nothing in common", sources) is None
    assert overlap_citation("built 1874", sources).chunk.text.startswith("The red lighthouse")


def test_the_hand_made_set_retrieves_every_answer_and_rejects_the_absent_ones(tmp_path):
    build_rag_index([DATA / "docs"], tmp_path / "ix", size=240, overlap=0)
    rag = RagIndex(tmp_path / "ix")
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines()]
    assert len(questions) == 14
    for q in questions:
        sources = rag.retrieve(q["question"], k=3, min_coverage=0.4)
        if q["answers"]:
            assert any(a.lower() in s.chunk.text.lower() for s in sources for a in q["answers"]), q["question"]
        else:
            assert sources == [], q["question"]


@pytest.mark.slow
def test_smollm2_answers_from_the_sources_and_cites_one(tmp_path, no_progress):
    from lmlab.core.errors import MissingDependencyError
    from lmlab.retrieval.rag import ChatModel

    try:
        chat = ChatModel("smollm2-135m-instruct", max_new_tokens=48)
    except MissingDependencyError as exc:
        pytest.skip(f"SmolLM2 is not installed: {exc}")
    build_rag_index([DATA / "docs"], tmp_path / "ix", size=240, overlap=0)
    out = ask(RagIndex(tmp_path / "ix"), "Who founded Pellworth Bakery?", chat.generate, k=3, cite=chat.cite)
    assert out["found"] and "Lindqvist" in out["answer"]
    assert out["cited_by"] in ("model", "model-constrained")
    assert any("Lindqvist" in s["text"] for s in out["sources"] if s["n"] == out["citations"][0]["n"])
