"""Exact resume after a real SIGKILL: ``lmlab pretrain`` in a subprocess is killed between two
checkpoints, resumed with ``--resume``, and must end with the same weights and losses, bit for
bit, as an uninterrupted run (the in-process kill is tested in test_train_trainer.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEXT = "\n".join(["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 40) + "\n"
STEPS, EVERY = 24, 8

FAMILIES = {
    "gpt2": ["--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--dropout", "0.1", "--context", "32"],
    "lstm": ["--d-embed", "16", "--d-hidden", "32", "--n-layers", "2", "--dropout", "0.2", "--context", "16"],
}


def pretrain_command(family: str, data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "lmlab", "pretrain", "--family", family, "--train", str(data), "--out", str(run),
            *FAMILIES[family], "--batch-size", "8", "--steps", str(STEPS), "--checkpoint-every", str(EVERY),
            "--warmup", "5", "--lr", "3e-3", "--device", "cpu", "--quiet"]


def environment() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("RANK", None)
    return env


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):  # a line being written
            pass
    return steps


def checkpoint_step(run: Path) -> int:
    pointer = run / "checkpoints" / "latest.json"
    return json.loads(pointer.read_text())["step"] if pointer.exists() else 0


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def kill_between_checkpoints(proc: subprocess.Popen, run: Path, timeout: float = 240.0) -> tuple[int, int]:
    """Freeze the run once it has passed its first checkpoint; SIGKILL it if steps were taken since the
    last checkpoint (else let it go on and try again). Returns (last checkpoint, last logged step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run finished before it could be killed"
        if checkpoint_step(run) >= EVERY and max(logged_steps(run), default=0) > checkpoint_step(run):
            proc.send_signal(signal.SIGSTOP)
            saved, logged = checkpoint_step(run), max(logged_steps(run))
            if logged > saved and saved < STEPS:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return saved, logged
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("the run never got between two checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "lstm"])
def test_sigkilled_pretrain_resumes_bit_for_bit(tmp_path, family):
    from safetensors.torch import load_file

    data = tmp_path / "train.txt"
    data.write_text(TEXT)
    env = environment()
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(pretrain_command(family, data, whole), check=True, env=env, cwd=tmp_path, timeout=300)

    proc = subprocess.Popen(pretrain_command(family, data, killed), env=env, cwd=tmp_path)
    saved, logged = kill_between_checkpoints(proc, killed)
    assert proc.returncode == -signal.SIGKILL
    assert EVERY <= saved < logged < STEPS and not (killed / "model").exists()

    subprocess.run([sys.executable, "-m", "lmlab", "pretrain", "--resume", str(killed), "--device", "cpu",
                    "--quiet"], check=True, env=env, cwd=tmp_path, timeout=300)
    assert [s for s, _ in losses(killed)] == list(range(1, STEPS + 1))  # the lost steps were redone once
    assert losses(killed) == losses(whole)  # bit-identical floats
    ours, theirs = load_file(str(killed / "model" / "model.safetensors")), load_file(str(whole / "model" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
