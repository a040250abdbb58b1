"""Benchmark: retrieval-augmented answers from SmolLM2-135M-Instruct on a hand-made document set.

For each question of ``tests/data/rag/questions.jsonl``: retrieve numbered sources (BM25 over
sentence chunks), generate greedily through the engine with the chat template, and check
- whether the answer's citations point at a passage holding the answer: as written freely by the model
  (``free``), with the model choosing the number after "answer [" when it wrote none (``model``), and
  with the word-overlap fallback instead (``overlap_fallback``),
- whether the answer text itself states it, and
- whether questions answered in no document are answered "not found".
Run: python bench/rag.py [--min-coverage 0.4] [-k 3]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmlab.retrieval.rag import ChatModel, RagIndex, ask, build_rag_index  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "rag"


def holds(text: str, answers: list[str]) -> bool:
    return any(a.lower() in text.lower() for a in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=3, help="sources per question (default 3)")
    parser.add_argument("--min-coverage", type=float, default=0.4, help="below this: not found (default 0.4)")
    parser.add_argument("--size", type=int, default=240, help="characters per chunk (default 240)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--show", action="store_true", help="print each question and answer")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    chat = ChatModel(args.model, max_new_tokens=args.max_new_tokens)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        chunks = build_rag_index([DATA / "docs"], tmp, size=args.size, overlap=0)
        rag = RagIndex(tmp)
        for q in questions:
            r = ask(rag, q["question"], chat.generate, k=args.k, min_coverage=args.min_coverage, cite=chat.cite)
            bare = ask(rag, q["question"], lambda _, a=r.get("answer", ""): a, k=args.k,
                       min_coverage=args.min_coverage)  # the same answer, cited by word overlap instead
            texts = {s["n"]: s["text"] for s in r["sources"]}
            cited_ok = any(holds(texts[c["n"]], q["answers"]) for c in r["citations"])
            overlap_ok = any(holds(texts[c["n"]], q["answers"]) for c in bare["citations"])
            rows.append({"question": q["question"], "answerable": bool(q["answers"]), "found": r["found"],
                         "answer": r["answer"], "cited_by": r["cited_by"], "citations": [c["n"] for c in r["citations"]],
                         "cites_answer_source": cited_ok,
                         "overlap_cites_answer_source": overlap_ok, "answer_states_it": holds(r["answer"], q["answers"])
                         if q["answers"] else None,
                         "retrieved_answer_source": any(holds(t, q["answers"]) for t in texts.values())
                         if q["answers"] else None})
            if args.show:
                print(json.dumps(rows[-1]), file=sys.stderr)
    seconds = time.perf_counter() - t0
    answerable = [r for r in rows if r["answerable"]]
    absent = [r for r in rows if not r["answerable"]]
    n = len(answerable)

    def rate(pred) -> float:
        return round(sum(map(pred, answerable)) / n, 3)

    result = {"model": args.model, "chunks": chunks, "k": args.k, "min_coverage": args.min_coverage,
              "questions": n, "absent_questions": len(absent),
              "retrieval_hit_rate": rate(lambda r: r["retrieved_answer_source"]),
              "citations_written_by_model": rate(lambda r: r["cited_by"] == "model"),
              "cites_answer_source_free": rate(lambda r: r["cites_answer_source"] and r["cited_by"] == "model"),
              "cites_answer_source_model": rate(lambda r: r["cites_answer_source"]),
              "cites_answer_source_overlap_fallback": rate(lambda r: r["overlap_cites_answer_source"]),
              "answer_states_it": rate(lambda r: r["answer_states_it"]),
              "answered_not_found_when_answerable": rate(lambda r: not r["found"]),
              "absent_answered_not_found": round(sum(not r["found"] for r in absent) / max(len(absent), 1), 3),
              "seconds": round(seconds, 1), "rows": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
