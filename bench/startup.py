"""How long ``lmlab`` takes to start: ``--help`` at the top and per verb, and a light verb.

Each command runs ``--repeats`` times in a fresh interpreter (``python -m lmlab …``), interleaved with
the two references measured in the same rounds: a bare ``python -c pass`` and ``python -c "import
torch"`` (what a verb that imports its heavy dependencies at start-up pays at least). Reported: the
median wall seconds of each, and the machine's load (``os.getloadavg``). The last line is one JSON
object. Run: python bench/startup.py [--repeats 5]
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
COMMANDS = {
    "lmlab --help": ["-m", "lmlab", "--help"],
    "lmlab eval retrieval --help": ["-m", "lmlab", "eval", "retrieval", "--help"],
    "lmlab ngram train --help": ["-m", "lmlab", "ngram", "train", "--help"],
    "lmlab pretrain --help": ["-m", "lmlab", "pretrain", "--help"],
    "lmlab generate --help": ["-m", "lmlab", "generate", "--help"],
    "lmlab data list": ["-m", "lmlab", "data", "list", "--json"],
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
}


def seconds(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command in COMMANDS.values():  # warm the file cache once
        seconds(command)
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(f"{name:<32} {m:6.3f} s", file=sys.stderr)
    print(json.dumps({"median_seconds": medians, "repeats": args.repeats, "load_before": load_before,
                      "load_after": os.getloadavg(), "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
