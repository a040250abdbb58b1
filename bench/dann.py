"""DANN on a real text shift: AG News topic classification between news descriptions and headlines.

The same four topics in two registers: descriptions (a lead sentence of ~35 words, agency tags and
HTML debris) and headlines (a dozen words, headline grammar and abbreviations, many words the
descriptions never use). Two directions:

* ``desc->title``: labelled source = the 10,001 descriptions of ``agnews/train_subset_10k.tsv``;
  unlabelled target = the titles of the odd rows of ``test.csv``; evaluation = the titles of the
  even rows (3,800);
* ``title->desc``: labelled source = the titles of the odd rows of ``test.csv`` (3,800); unlabelled
  target = the 10,001 training descriptions; evaluation = the descriptions of the even rows.

For each direction and seed the same network, batches and steps are trained with the gradient
reversal (DANN, Ganin et al. 2016) and without it (λ = 0: source-only); and once, for the size of the
gap adaptation could close, on the labelled target data itself (evaluation rows never seen). The
last line is one JSON object: per direction the mean target accuracy of each, every run, and the
domain classifier's accuracy on the last batch (near 0.5: the features no longer tell the domains
apart). Run: LMLAB_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 python bench/dann.py [--steps 600]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab.classify.dann import DomainAdversarialClassifier  # noqa: E402
from lmlab.classify.data import load_labeled  # noqa: E402
from lmlab.data import data_root  # noqa: E402


def shifts() -> dict[str, dict]:
    """Per direction: labelled source, unlabelled target, labelled target (for the oracle), evaluation."""
    descriptions, description_y = load_labeled("agnews:train")
    root = data_root() / "agnews"
    names = (root / "classes.txt").read_text(encoding="utf-8").split("\n")
    with open(root / "test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    label = [names[int(r["label"]) - 1].strip() for r in rows]
    titles, title_y = [r["title"] for r in rows[1::2]], label[1::2]
    held_y = label[0::2]
    return {
        "desc->title": {"source": (descriptions, description_y), "target": (titles, title_y),
                        "eval": ([r["title"] for r in rows[0::2]], held_y)},
        "title->desc": {"source": (titles, title_y), "target": (descriptions, description_y),
                        "eval": ([r["description"] for r in rows[0::2]], held_y)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--domain-weight", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--directions", nargs="+", default=["desc->title", "title->desc"])
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0, results = time.time(), {}
    for direction in args.directions:
        data = shifts()[direction]
        (source, source_y), (target, target_y), (held, held_y) = data["source"], data["target"], data["eval"]
        runs = []
        for seed in args.seeds:
            for reverse in (False, True):
                t = time.time()
                model = DomainAdversarialClassifier(steps=args.steps, lr=args.lr, domain_weight=args.domain_weight,
                                                    reverse=reverse, seed=seed).fit(source, source_y, target)
                runs.append({"seed": seed, "reversal": reverse, "target_accuracy": model.score(held, held_y),
                             "domain_accuracy_last_batch": model.objective.last["domain_accuracy"],
                             "seconds": round(time.time() - t, 1)})
                print(json.dumps({"direction": direction, **runs[-1]}), flush=True)
        oracle = DomainAdversarialClassifier(steps=args.steps, lr=args.lr, reverse=False, seed=args.seeds[0]).fit(
            target, target_y, target)

        def mean(reverse: bool, runs: list[dict] = runs) -> float:
            return round(float(np.mean([r["target_accuracy"] for r in runs if r["reversal"] is reverse])), 4)

        results[direction] = {"target_accuracy_source_only": mean(False), "target_accuracy_dann": mean(True),
                              "gain": round(mean(True) - mean(False), 4),
                              "target_accuracy_trained_on_labelled_target": round(oracle.score(held, held_y), 4),
                              "runs": runs}
    print(json.dumps({"steps": args.steps, "lr": args.lr, "domain_weight": args.domain_weight, "seeds": args.seeds,
                      **results, "total_s": round(time.time() - t0, 1), "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
