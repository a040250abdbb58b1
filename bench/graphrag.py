"""Benchmark: GraphRAG's global search vs plain RAG on corpus-level questions, judged pairwise.

The corpus is the opening of a few WikiText-2 test articles (split at their ``= Title =`` headings,
the tokenisation undone: "@-@" → "-", " ," → ","), about storms, wars and culture; the questions ask
about themes across articles (written by reading them). Steps, all with SmolLM2-135M-Instruct:
1. chunk and index the corpus (``build_rag_index``), build the graph (``build_graph_index``; the
   co-occurrence extractor by default, since SmolLM2-135M writes almost no valid records — measured on
   ``--extract-sample`` chunks with the paper's format and reported), Louvain communities and reports;
2. answer every question by global search (map-reduce over level ``--level`` reports) and by plain
   RAG (``ask``, BM25 top-k with citations, never 'not found');
3. judge each pair in both orders with ``lmlab.eval.pairwise`` (log-likelihood of "1" vs "2").
Run: nice -n 10 python bench/graphrag.py [--out answers.jsonl]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmlab.core.io import write_text  # noqa: E402
from lmlab.eval.pairwise import judge_all_pairs, position_bias, win_counts  # noqa: E402
from lmlab.eval.requests import RequestRunner  # noqa: E402
from lmlab.retrieval.graph import GraphIndex, build_graph_index, extract_chunks  # noqa: E402
from lmlab.retrieval.graph_search import global_search_many  # noqa: E402
from lmlab.retrieval.rag import ChatModel, RagIndex, ask, build_rag_index  # noqa: E402

ARTICLES = ("Du Fu", "Kiss You ( One Direction song )", "1933 Treasure Coast hurricane", "Operation Eastern Exit",
            "No. 20 Squadron RAAF", "Typhoon <unk> ( 2013 )", "Commonwealth War Graves Commission",
            "Military history of Gibraltar during World War II")
QUESTIONS = (
    "What are the main themes of these documents?",
    "Which storms are described, and what damage did they cause?",
    "Which military operations and units are described, and where did they operate?",
    "What role did World War II play across the documents?",
    "Which countries and places appear in the documents, and what happened there?",
    "How were people evacuated or rescued in these documents?",
    "What do the documents say about the United States?",
    "Which documents are about culture or the arts, and what do they say?",
    "What happened in the Pacific region according to the documents?",
    "What losses of life or property do the documents report?",
)
HEADING = re.compile(r"^ = ([^=].*) = $")


def detokenize(text: str) -> str:
    """WikiText's tokenised text made readable: joined numbers and hyphens, no space before punctuation."""
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".").replace("<unk>", "UNK")
    text = re.sub(r" ([.,;:!?)'])", r"\1", text)
    return re.sub(r"\( ", "(", text).strip()


def wikitext_articles(path: Path, titles: tuple[str, ...], max_chars: int) -> dict[str, str]:
    """The first paragraphs (up to ``max_chars``) of each titled article, detokenised."""
    paragraphs: dict[str, list[str]] = {}
    current = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            heading = HEADING.match(line)
            if heading:
                current = heading.group(1) if heading.group(1) in titles else None
                if current:
                    paragraphs[current] = []
            elif current and line.strip() and not line.strip().startswith("="):
                paragraphs[current].append(detokenize(line))
    missing = set(titles) - set(paragraphs)
    if missing:
        raise SystemExit(f"articles not found in {path}: {sorted(missing)}")
    out = {}
    for title, paras in paragraphs.items():
        text = ""
        for p in paras:
            if text and len(text) + len(p) > max_chars:
                break
            text += p + "\n\n"
        out[title] = f"{detokenize(title)}\n\n{text}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("LMLAB_DATA", "../shared/data"))
    parser.add_argument("--chars", type=int, default=1000, help="characters kept per article (at least its first paragraph; default 1000)")
    parser.add_argument("--size", type=int, default=800, help="characters per chunk (default 800)")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--extractor", default="cooccurrence", help="graph extractor: cooccurrence (default) or model")
    parser.add_argument("--extract-sample", type=int, default=2,
                        help="chunks the model extracts from in the paper's format, to report its validity (default 2)")
    parser.add_argument("--level", type=int, default=0, help="community level of global search (default 0)")
    parser.add_argument("--report-tokens", type=int, default=80)
    parser.add_argument("--report-budget", type=int, default=800)
    parser.add_argument("--map-tokens", type=int, default=48)
    parser.add_argument("--answer-tokens", type=int, default=96)
    parser.add_argument("-k", type=int, default=3, help="plain RAG sources (default 3)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", default=None, help="write every question's answers and judgements here (JSONL)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load = {"start": os.getloadavg()[0]}
    questions = list(QUESTIONS[:args.questions])
    articles = wikitext_articles(Path(args.data) / "wikitext-2" / "test.txt", ARTICLES, args.chars)
    chat = ChatModel(args.model, batch_size=16)
    result: dict = {"articles": len(articles), "corpus_chars": sum(map(len, articles.values())),
                    "questions": len(questions), "model": args.model, "extractor": args.extractor}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        for i, text in enumerate(articles.values()):
            write_text(docs / f"{i}.txt", text)
        t0 = time.perf_counter()
        result["chunks"] = build_rag_index([docs], Path(tmp) / "ix", size=args.size, overlap=0)
        rag = RagIndex(Path(tmp) / "ix")
        chunks = list(rag.chunks.values())
        graph = build_graph_index(chunks, chat, args.extractor, seed=0, report_budget=args.report_budget,
                                  report_tokens=args.report_tokens)
        graph.save(Path(tmp) / "ix")
        graph = GraphIndex.load(Path(tmp) / "ix")
        result["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"build_s: {result['build_s']} s", file=sys.stderr, flush=True)
        result["graph"] = {k: graph.meta[k] for k in ("entities", "relations", "communities_per_level",
                                                      "malformed_lines", "ungrounded_records", "extract_s", "reports_s")}
        if args.extract_sample and args.extractor != "model":
            t = time.perf_counter()
            sample = extract_chunks(chunks[:args.extract_sample], "model", chat, max_new_tokens=150)
            result["model_extraction_sample"] = {
                "chunks": len(sample), "entities": sum(len(e.entities) for e in sample),
                "relations": sum(len(e.relations) for e in sample), "malformed_lines": sum(len(e.malformed) for e in sample),
                "ungrounded_records": sum(len(e.ungrounded) for e in sample), "seconds": round(time.perf_counter() - t, 1)}
        t = time.perf_counter()
        graph_answers = global_search_many(graph, questions, chat, args.level, map_tokens=args.map_tokens,
                                           answer_tokens=args.answer_tokens)
        result["global_s"] = round(time.perf_counter() - t, 1)
        print(f"global_s: {result['global_s']} s", file=sys.stderr, flush=True)
        t = time.perf_counter()
        # no BM25 hit at all (a question of themes may share no word with the corpus): 'not found'
        prompts = [r["prompt"] for r in (ask(rag, q, None, args.k, min_coverage=0.0) for q in questions) if r["found"]]
        texts = dict(zip(prompts, chat.generate_many(prompts, args.answer_tokens, desc="plain RAG"), strict=True))
        plain_answers = [ask(rag, q, texts.get, args.k, min_coverage=0.0) for q in questions]
        result["plain_found"] = sum(p["found"] for p in plain_answers)
        result["plain_s"] = round(time.perf_counter() - t, 1)
        print(f"plain_s: {result['plain_s']} s", file=sys.stderr, flush=True)
    records = [{"prompt": q, "answers": {"graph-global": g["answer"], "plain": p["answer"]}}
               for q, g, p in zip(questions, graph_answers, plain_answers, strict=True)]
    t = time.perf_counter()
    runner = RequestRunner(chat.lm, chat.tokenizer, model_id=args.model)
    judgements = judge_all_pairs(runner, records, swap=True)
    result["judge_s"] = round(time.perf_counter() - t, 1)
    _, wins = win_counts(judgements)  # ties count one half each way
    result["judge"] = args.model
    result["graph_win_rate"] = round(wins["graph-global", "plain"] / len(judgements), 3)
    result["judgements"] = len(judgements)
    result["position_bias"] = position_bias(judgements)
    result["global_found"] = sum(g["found"] for g in graph_answers)
    result["global_unscored_partials"] = sum(g["unscored"] for g in graph_answers)
    result["mean_answer_chars"] = {"graph-global": round(sum(len(g["answer"]) for g in graph_answers) / len(questions)),
                                   "plain": round(sum(len(p["answer"]) for p in plain_answers) / len(questions))}
    load["end"] = os.getloadavg()[0]
    result["load"] = load
    if args.out:
        rows = [{**r, "partials": g["partials"], "judgements": [j for j in judgements if j["prompt"] == r["prompt"]]}
                for r, g in zip(records, graph_answers, strict=True)]
        write_text(args.out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
