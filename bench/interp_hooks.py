"""What the transformer's hook points cost a decode step: SmolLM2-135M greedy decoding, batch 1.

Three measurements, each in a fresh interpreter, interleaved round by round so that machine load
hits them alike: this tree with no hooks; the ``--baseline`` checkout (a tree without hook points,
e.g. ``main`` before lmlab.models.hooks) with no hooks; and this tree with a no-op hook on every
layer's ``resid_post`` (what a hook costs while it is on). Reported: the median ms per token of
each (wall and CPU time), the ratios to the baseline, the machine's load (``os.getloadavg``). The last line is one JSON
object. Run: python bench/interp_hooks.py --baseline /path/to/main [--rounds 3] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def child(tokens: int, hooked: bool) -> None:
    """Print the ms per decoded token (after a warm-up request) of one configuration."""
    import torch

    from lmlab.generate.engine import Engine
    from lmlab.generate.loop import Request
    from lmlab.models import load_model

    torch.set_num_threads(1)
    lm, tok = load_model("smollm2-135m-instruct")
    engine = Engine(lm, tok, greedy=True)
    request = Request(tok.encode(PROMPT), max_new_tokens=tokens)
    engine.generate([Request(tok.encode(PROMPT), max_new_tokens=4)])
    handles = [lm.add_hook(f"blocks.{i}.resid_post", lambda x: None) for i in range(len(lm.blocks))] if hooked else []
    start, cpu = time.perf_counter(), time.process_time()
    out = engine.generate([request])[0]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    for handle in handles:
        handle.remove()
    n = max(1, len(out.ids))
    print(json.dumps({"ms_per_token": 1000 * seconds / n, "cpu_ms_per_token": 1000 * cpu_seconds / n, "tokens": n}))


def measure(tree: Path, tokens: int, hooked: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(Path(__file__).resolve()), "--child", "--tokens", str(tokens)]
    done = subprocess.run(args + (["--hooked"] if hooked else []), env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a checkout without hook points (e.g. a worktree of main before them)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hooked", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.tokens, args.hooked)
        return
    runs = {"this tree, no hooks": (REPO, False), "this tree, no-op hook on every resid_post": (REPO, True)}
    if args.baseline:
        runs["baseline, no hooks"] = (Path(args.baseline), False)
    times: dict[str, list[dict]] = {name: [] for name in runs}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, (tree, hooked) in runs.items():
            times[name].append(measure(tree, args.tokens, hooked))
    result = {"model": "smollm2-135m-instruct", "tokens": args.tokens, "rounds": args.rounds, "runs": times,
              "load_avg": [load_before, os.getloadavg()[0]]}
    for key in ("ms_per_token", "cpu_ms_per_token"):  # wall, and CPU time (less hit by other processes)
        medians = {name: statistics.median(r[key] for r in v) for name, v in times.items()}
        result[key] = medians
        if args.baseline:
            base = medians["baseline, no hooks"]
            result[f"{key}_ratio_to_baseline"] = {name: m / base for name, m in medians.items()}
        for name, m in medians.items():
            print(f"{name:45s} {m:8.2f} {key}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
