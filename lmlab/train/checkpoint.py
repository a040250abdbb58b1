"""Checkpoints: everything needed to continue a run bit-for-bit, written atomically.

``run/checkpoints/step_000120/`` holds ``model.safetensors`` (weights), ``trainer.pt``
(optimizer state, RNG states, the objective's carried state: tensors and numbers only,
read back with ``weights_only=True``) and ``state.json`` (step, counters, the model
config). ``run/checkpoints/latest.json`` names the newest complete one; it is replaced only
after that checkpoint is fully written, so a kill at any moment leaves a usable checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError, ModelError
from ..core.io import atomic_path, write_json

LATEST = "latest.json"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model_state: tuple[dict, dict[str, torch.Tensor]],
                    trainer_state: dict[str, Any], info: dict[str, Any], keep: int = 1) -> Path:
    """Write checkpoint ``step`` and point ``latest.json`` at it; keep the newest ``keep``."""
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    target = root / f"step_{step:07d}"
    target.mkdir(parents=True, exist_ok=True)
    config, tensors = model_state
    with atomic_path(target / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    with atomic_path(target / "trainer.pt") as tmp:
        torch.save(trainer_state, tmp)
    write_json(target / "state.json", {**info, "step": step, "model_config": config})
    write_json(root / LATEST, {"step": step, "dir": target.name})
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and p != target)
    for old in done[:max(len(done) - keep + 1, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.exists():
        return None
    return pointer.parent / json.loads(pointer.read_text(encoding="utf-8"))["dir"]


def load_checkpoint(path: Path, model_config: dict) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(info, model tensors, trainer state) of a checkpoint made for a model of ``model_config``."""
    from safetensors.torch import load_file

    if not (path / "state.json").exists():
        raise InputError(f"{path} is not a checkpoint", "resume from a run directory made by lmlab pretrain")
    info = json.loads((path / "state.json").read_text(encoding="utf-8"))
    theirs = info.get("model_config", {})
    diffs = sorted(k for k in set(theirs) | set(model_config) if theirs.get(k) != model_config.get(k))
    if diffs:
        raise ModelError(f"the checkpoint in {path.parent.parent} is of another model "
                         f"(differs in {', '.join(diffs[:5])})",
                         "resume with the same model settings, or start a new run directory")
    tensors = load_file(str(path / "model.safetensors"))
    trainer_state = torch.load(path / "trainer.pt", weights_only=True)
    return info, tensors, trainer_state
