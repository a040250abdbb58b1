"""What deterministic kernels cost in training, and whether runs reproduce, on several CPU threads.

For each family, ``lmlab.train.pretrain`` trains the same small model on tiny Shakespeare (characters)
with ``deterministic`` off and on (``torch.use_deterministic_algorithms``), interleaved over
``--rounds`` rounds so that a shared machine's load falls on both alike. Reported per family: the
median ms per optimizer step of each setting (steps after the first three), their ratio, and whether
the rounds of one setting logged bit-identical losses (the same seed, so they must). Also: the machine
and its load (``os.getloadavg``). The last line is one JSON object.
Run: LMLAB_DATA=../shared/data nice -n 10 python bench/determinism.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/

import torch  # noqa: E402

from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import from_texts  # noqa: E402
from lmlab.data.datasets import dataset_file  # noqa: E402
from lmlab.eval.efficiency import machine_info  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import pretrain  # noqa: E402

FAMILIES = {
    "gpt2": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    "llama": {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2},
    "lstm": {"d_embed": 128, "d_hidden": 256, "n_layers": 2},
}


def run_once(family: str, corpus, tokenizer, deterministic: bool, steps: int, work: Path) -> dict:
    out = work / f"{family}-{int(deterministic)}"
    pretrain(family, corpus, tokenizer, out, model=FAMILIES[family], batch_size=16, context=128,
             training={"steps": steps, "lr": 1e-3, "warmup": 2, "seed": 3, "log_every": 1,
                       "deterministic": deterministic})
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    return {"losses": [r["loss"] for r in logged], "ms": [r["ms_per_step"] for r in logged[3:]]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_quiet(True)
    text = dataset_file("tinyshakespeare", "all").read_text(encoding="utf-8")
    corpus = from_texts([text[:200_000]], "tinyshakespeare[:200k]")
    tokenizer = WordLevelTokenizer("char").train(corpus)
    result = {"machine": machine_info(), "load_before": os.getloadavg(), "threads": args.threads,
              "steps": args.steps, "rounds": args.rounds, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for r in range(args.rounds):
                order = (False, True) if r % 2 == 0 else (True, False)
                for deterministic in order:
                    runs[deterministic].append(run_once(family, corpus, tokenizer, deterministic, args.steps,
                                                        Path(tmp) / str(r)))
            ms = {d: statistics.median([m for run in runs[d] for m in run["ms"]]) for d in runs}
            row = {"ms_per_step_default_kernels": ms[False], "ms_per_step_deterministic": ms[True],
                   "deterministic_time_ratio": ms[True] / ms[False],
                   "reproducible_default_kernels": all(run["losses"] == runs[False][0]["losses"] for run in runs[False]),
                   "reproducible_deterministic": all(run["losses"] == runs[True][0]["losses"] for run in runs[True]),
                   "same_losses_both_settings": runs[False][0]["losses"] == runs[True][0]["losses"]}
            result["families"][family] = row
            print(f"{family}: {ms[False]:.1f} ms/step default kernels, {ms[True]:.1f} deterministic "
                  f"({row['deterministic_time_ratio']:.3f}x); reproducible {row['reproducible_default_kernels']} / "
                  f"{row['reproducible_deterministic']}", file=sys.stderr, flush=True)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
