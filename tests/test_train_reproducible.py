"""Runs that reproduce on two CPU threads: the same ``lmlab pretrain`` command twice gives bit-identical
losses and weights, and a run SIGKILLed at random moments — one of them in the middle of writing a
checkpoint — and resumed each time ends exactly as the uninterrupted run (the one-thread kill between
two checkpoints is test_train_sigkill.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEXT = "\n".join(["the cat sat on the mat", "the dog sat on the log", "a cat and a dog ran"] * 40) + "\n"
STEPS, EVERY = 30, 3
# learned positions and dropout: the gpt2 preset, whose position gradient once summed in a varying order
MODEL = ["--family", "gpt2", "--d-model", "48", "--n-layers", "2", "--n-heads", "4", "--dropout", "0.1",
         "--context", "48", "--batch-size", "16"]


def command(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmlab", "pretrain", *MODEL, "--train", str(data), "--out", str(run),
            "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--warmup", "3", "--lr", "3e-3",
            "--seed", "3", "--device", "cpu", "--quiet", *extra]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    env.pop("RANK", None)
    return env


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def last_step(run: Path) -> int:
    """The last step logged so far (0 before any)."""
    path = run / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):  # a line being written
            pass
    return max(steps, default=0)


def writing_a_checkpoint(run: Path) -> bool:
    """Whether an atomic write of the checkpoint (a hidden temporary file) is under way."""
    root = run / "checkpoints"
    folders = [root, *root.glob("step_*")] if root.exists() else []
    return any(p.name.endswith(".tmp") for f in folders for p in (f.iterdir() if f.is_dir() else ()))


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run on two threads."""
    root = tmp_path_factory.mktemp("reproducible")
    data = root / "train.txt"
    data.write_text(TEXT)
    subprocess.run(command(data, root / "whole", "--deterministic"), check=True, env=environment(), cwd=root,
                   timeout=600)
    return root, data


@pytest.mark.slow
def test_the_same_command_twice_on_two_threads_gives_identical_losses(whole):
    root, data = whole
    subprocess.run(command(data, root / "again", "--deterministic"), check=True, env=environment(), cwd=root,
                   timeout=600)
    assert [s for s, _ in losses(root / "again")] == list(range(1, STEPS + 1))
    assert losses(root / "again") == losses(root / "whole")
    ours, theirs = weights(root / "again"), weights(root / "whole")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_killed_at_random_moments_and_resumed_ends_as_the_uninterrupted_run(whole):
    root, data = whole
    run = root / "killed"
    rng = random.Random(26)
    kills, during_write = 0, 0
    while True:
        argv = [sys.executable, "-m", "lmlab", "pretrain", "--resume", str(run), "--device", "cpu", "--quiet"] \
            if kills else command(data, run, "--deterministic")
        before = last_step(run)
        proc = subprocess.Popen(argv, env=environment(), cwd=root)
        if kills >= 6:  # enough: let this one finish
            assert proc.wait(timeout=600) == 0
            break
        # once this process trains (a new step is logged): the first kill comes in a checkpoint write, the
        # others after a random delay
        while proc.poll() is None and last_step(run) <= before:
            time.sleep(0.005)
        deadline = time.monotonic() + (120.0 if kills == 0 else rng.uniform(0.0, 1.5))
        while proc.poll() is None and time.monotonic() < deadline:
            if kills == 0 and writing_a_checkpoint(run):
                break
            time.sleep(0.0005)
        if proc.poll() is not None:  # it finished before the kill came
            assert proc.returncode == 0
            break
        caught_writing = writing_a_checkpoint(run)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        during_write += caught_writing
    assert kills >= 2 and during_write >= 1
    assert [s for s, _ in losses(run)] == list(range(1, STEPS + 1))  # the lost steps were redone once
    assert losses(run) == losses(root / "whole")  # bit-identical floats
    ours, theirs = weights(run), weights(root / "whole")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
