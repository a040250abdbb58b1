"""Sequence labelling on CoNLL-2003 (the shared copy, BIO): NER with a BiLSTM-CRF and with fine-tuned
all-MiniLM-L6-v2 (+ CRF, or a softmax), POS with a BiLSTM; all through ``lmlab.tagging.Tagger``
on the one trainer, then scored on the test set (``eng.testb``).

Entity precision / recall / F1 are lmlab's and, as the peer in the same run, ``seqeval``'s on the
very same predictions; POS is token accuracy. Every run prints its settings, wall-clock time and
the machine load around it.

Run (one configuration per call, or several; the last line is one JSON object):
  LMLAB_DATA=../shared/data nice -n 10 python bench/tagging.py --run ner-minilm-crf
  ... --run ner-bilstm-crf ner-minilm pos-bilstm   (see RUNS below)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.data.conll import read_conll  # noqa: E402
from lmlab.tagging import Tagger, entity_scores, token_accuracy  # noqa: E402

#: column, Tagger settings of each benchmarked configuration
RUNS = {
    "ner-minilm-crf": ("ner", dict(kind="encoder", backbone="minilm", crf=True, epochs=3, batch_size=32)),
    "ner-minilm": ("ner", dict(kind="encoder", backbone="minilm", crf=False, epochs=3, batch_size=32)),
    "ner-bilstm-crf": ("ner", dict(kind="bilstm", crf=True, epochs=10, batch_size=32)),
    "ner-bilstm": ("ner", dict(kind="bilstm", crf=False, epochs=10, batch_size=32)),
    "pos-bilstm": ("pos", dict(kind="bilstm", crf=False, epochs=5, batch_size=32)),
    "pos-minilm": ("pos", dict(kind="encoder", backbone="minilm", crf=False, epochs=3, batch_size=32)),
}


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    try:
        from seqeval import metrics
    except ImportError:
        return {"seqeval": "not installed: not measured"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"precision": metrics.precision_score(gold, predicted), "recall": metrics.recall_score(gold, predicted),
                "f1": metrics.f1_score(gold, predicted)}


def run_one(name: str, args: argparse.Namespace) -> dict:
    column, settings = RUNS[name]
    train = read_conll("conll2003:train", column)
    valid, test = read_conll("conll2003:valid", column), read_conll("conll2003:test", column)
    if args.limit:
        train = train[:args.limit]
    settings = {**settings, **({"steps": args.steps} if args.steps else {}), "column": column, "seed": args.seed}
    out: dict = {"run": name, "column": column, "settings": settings, "train_sentences": len(train),
                 "load_before": [round(x, 2) for x in os.getloadavg()]}
    tagger = Tagger(**settings, run_dir=Path(args.out) / name / "run" if args.out else None)
    t0 = time.perf_counter()
    tagger.fit(train)
    out["train_seconds"] = round(time.perf_counter() - t0, 1)
    out["steps"] = tagger.train_result.steps
    if args.out:
        tagger.save(Path(args.out) / name / "model")
    for split, sentences in (("valid", valid), ("test", test)):
        t0 = time.perf_counter()
        gold = [tags for _, tags in sentences]
        predicted = tagger.predict([words for words, _ in sentences])
        row = {"seconds": round(time.perf_counter() - t0, 1), "accuracy": token_accuracy(gold, predicted)}
        if column == "ner":
            ours = entity_scores(gold, predicted)
            row["lmlab"] = {k: ours[k] for k in ("precision", "recall", "f1")}
            row["seqeval"] = seqeval_scores(gold, predicted)
            if split == "test":
                row["per_type"] = ours["per_type"]
        out[split] = row
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", default=["ner-minilm-crf"], choices=sorted(RUNS))
    parser.add_argument("--steps", type=int, default=None, help="override the epochs with this many steps")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N sentences only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/tagging", help="run directories and saved taggers ('' = none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"data": "CoNLL-2003 English (shared copy, BIO): train 14,041 / valid 3,250 / test 3,453 sentences",
               "threads": args.threads, "runs": []}
    for name in args.run:
        results["runs"].append(run_one(name, args))
        print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
