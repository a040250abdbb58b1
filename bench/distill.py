"""Distillation: SmolLM2-135M → a half-depth student (every other layer), trained with the teacher
(token-level KD mixed with the LM loss, ``lmlab.train.distill.Distillation``) and without it (the
LM loss alone), equal steps, same data order and seed; WikiText-2 validation perplexity of both
students (sliding windows), of the untrained student, and of the teacher. Also perplexity vs
sparsity of the teacher pruned by magnitude, Wanda and 2:4 (``lmlab.quant.pruning``).
The last line is one JSON object.
Run: python bench/distill.py [--steps 200] [--batch-size 8] [--context 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from lmlab.data import open_corpus  # noqa: E402
from lmlab.data.loaders import RandomWindows  # noqa: E402
from lmlab.data.shards import TokenArray  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.quant.calibration import calibration_ids  # noqa: E402
from lmlab.quant.pruning import prune_model, sparsity_of  # noqa: E402
from lmlab.quant.report import compare_models, text_tokens  # noqa: E402
from lmlab.train.distill import Distillation, student_from_teacher  # noqa: E402
from lmlab.train.objectives import CausalLM  # noqa: E402
from lmlab.train.trainer import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--train-tokens", type=int, default=200_000)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-pruning", action="store_true")
    ap.add_argument("--no-distillation", action="store_true", help="only the pruning rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher, tok = load_model("smollm2-135m-instruct")
    teacher.requires_grad_(False)
    train_ids = text_tokens(tok, open_corpus("wikitext-2:train"), args.train_tokens)
    eval_ids = text_tokens(tok, open_corpus("wikitext-2:valid"), args.eval_tokens)
    report: dict = {"load": [os.getloadavg()[0]], "steps": args.steps, "batch_size": args.batch_size,
                    "context": args.context, "train_tokens": len(train_ids), "eval_tokens": len(eval_ids)}

    def ppl(model) -> float:
        model.eval()
        return compare_models(teacher, model, eval_ids, window=512, stride=256)["perplexity"]

    report["teacher_perplexity"] = compare_models(teacher, teacher, eval_ids, window=512, stride=256)["perplexity"]
    print(json.dumps({"teacher": report["teacher_perplexity"]}), flush=True)
    config = TrainConfig(steps=args.steps, lr=args.lr, warmup=min(20, args.steps // 10), weight_decay=0.0,
                         log_every=10, device="cpu", seed=0)
    if not args.no_distillation:
        report["student_untrained_perplexity"] = ppl(student_from_teacher(teacher))
    students = (("with_teacher", Distillation(teacher, args.temperature, args.alpha)), ("without_teacher", CausalLM()))
    for label, objective in students if not args.no_distillation else ():
        student = student_from_teacher(teacher)
        source = RandomWindows(TokenArray(train_ids, tok.vocab_size), args.batch_size, args.context, seed=0)
        with tempfile.TemporaryDirectory() as run:
            train(student, objective, source, config, run)
        report[f"student_{label}_perplexity"] = ppl(student)
        report["load"].append(os.getloadavg()[0])
        print(json.dumps({label: report[f"student_{label}_perplexity"]}), flush=True)
    if not args.no_pruning:
        calib = calibration_ids(tok, open_corpus("wikitext-2:train"), 8, 256)
        rows = {}
        for label, kwargs in (("magnitude-0.5", {"sparsity": 0.5}),
                              ("wanda-0.5", {"sparsity": 0.5, "score": "wanda", "calibration": calib}),
                              ("magnitude-2:4", {"pattern": "2:4"}),
                              ("wanda-2:4", {"pattern": "2:4", "score": "wanda", "calibration": calib}),
                              ("wanda-0.3", {"sparsity": 0.3, "score": "wanda", "calibration": calib})):
            pruned = prune_model(copy.deepcopy(teacher), **kwargs)
            rows[label] = {"sparsity": sparsity_of(pruned), **compare_models(teacher, pruned, eval_ids)}
            print(json.dumps({label: rows[label]}), flush=True)
        report["pruning"] = rows
    print(json.dumps(report))


if __name__ == "__main__":
    main()
