"""Benchmark: all-MiniLM-L6-v2 before and after SimCSE on the SciFact corpus (Gao et al., 2021), through
lmlab's one trainer: SciFact test nDCG@10 / Recall@100 (dense retrieval) and Spearman ρ on
WordSim-353 and SimLex-999 (each word embedded as a sentence), both models measured in the same run.

Unsupervised (default): each SciFact document (title + abstract, cut to --train-length tokens) is
its own positive under two dropout masks. Supervised (--supervised): the train split's (query,
relevant document) pairs, in-batch negatives. --docs N evaluates on a sub-corpus (every document
judged for a test query + N others drawn with seed 0) so that a loaded CPU finishes; 0 = the full
corpus. The figures are only comparable between runs with the same --docs and --max-length.

Run: LMLAB_DATA=/path/to/shared/data python bench/simcse.py [--steps 30] [--docs 1000] [--supervised]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmlab.embeddings.evaluate import evaluate_similarity  # noqa: E402
from lmlab.embeddings.sentence import SentenceEncoder, sentence_encoder  # noqa: E402
from lmlab.embeddings.vectors import WordVectors  # noqa: E402
from lmlab.retrieval.beir import corpus_docs, load_qrels, load_queries  # noqa: E402
from lmlab.retrieval.evaluate import evaluate_beir  # noqa: E402
from lmlab.train.contrastive import simcse  # noqa: E402

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def sub_corpus(folder: Path, extra: int, into: Path) -> Path:
    """A BEIR folder holding every document judged for a test query and ``extra`` others (seed 0)."""
    judged = {d for docs in load_qrels(folder, "test").values() for d in docs}
    rows = [line for line in open(folder / "corpus.jsonl", encoding="utf-8") if line.strip()]
    ids = [json.loads(line)["_id"] for line in rows]
    others = [i for i, d in enumerate(ids) if d not in judged]
    keep = {i for i, d in enumerate(ids) if d in judged} | set(random.Random(0).sample(others, min(extra, len(others))))
    into.mkdir(parents=True)
    (into / "corpus.jsonl").write_text("".join(rows[i] for i in sorted(keep)), encoding="utf-8")
    shutil.copy(folder / "queries.jsonl", into / "queries.jsonl")
    shutil.copytree(folder / "qrels", into / "qrels")
    return into


def word_similarity(encoder: SentenceEncoder) -> dict[str, float]:
    """Spearman ρ of each word-similarity set, every word embedded alone."""
    out = {}
    for name, file in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
        path = DATA / "wordsim" / file
        words = sorted({w.lower() for line in open(path, encoding="utf-8") if line.strip() and not line.startswith("#")
                        for w in line.split("\t")[:2]})
        out[name] = round(evaluate_similarity(WordVectors(words, encoder(words)), path).spearman, 4)
    return out


def measure(encoder: SentenceEncoder, folder: Path) -> dict:
    scores = evaluate_beir(folder, "dense", encoder=encoder)
    return {"ndcg@10": round(scores["ndcg@10"], 4), "recall@100": round(scores["recall@100"], 4),
            **word_similarity(encoder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--train-length", type=int, default=32, help="tokens per training sentence")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per document when evaluating")
    parser.add_argument("--docs", type=int, default=1000, help="distractor documents (0 = the full corpus)")
    parser.add_argument("--supervised", action="store_true", help="train on the train split's (query, document) pairs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = DATA / "scifact"
    out: dict = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "docs": args.docs,
                 "max_length": args.max_length, "mode": "supervised" if args.supervised else "unsupervised",
                 "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        evaluated = folder if args.docs == 0 else sub_corpus(folder, args.docs, Path(tmp) / "scifact")
        out["corpus"] = sum(1 for _ in corpus_docs(evaluated))
        base = sentence_encoder("minilm", batch_size=64, max_length=args.max_length)
        t0 = time.perf_counter()
        out["before"] = measure(base, evaluated)
        say("before", out["before"])
        if args.supervised:
            queries, docs = load_queries(folder), dict(corpus_docs(folder))
            pairs = [(queries[q], docs[d]) for q, rel in load_qrels(folder, "train").items() if q in queries
                     for d, grade in rel.items() if grade > 0 and d in docs]
            texts, positives = [q for q, _ in pairs], [d for _, d in pairs]
        else:
            texts, positives = [text for _, text in corpus_docs(folder)], None
        out["train_sentences"] = len(texts)
        t1 = time.perf_counter()
        trained, result = simcse(base.model, base.tokenizer, texts, Path(tmp) / "run", positives=positives,
                                 steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 temperature=args.temperature, max_length=args.train_length)
        out["train_s"] = round(time.perf_counter() - t1, 1)
        records = [json.loads(line) for line in open(Path(tmp) / "run" / "metrics.jsonl", encoding="utf-8")]
        out["loss_first_last"] = [records[0]["loss"], records[-1]["loss"]]
        out["after"] = measure(SentenceEncoder(trained, base.tokenizer, batch_size=64, max_length=args.max_length),
                               evaluated)
        say("after", out["after"])
        out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
