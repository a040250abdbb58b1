"""Reward models: a scalar head on any lmlab transformer, trained on preference pairs (Bradley-Terry).

The backbone (SmolLM2, all-MiniLM-L6-v2, a model directory: ``lmlab.models.backbone``) reads the
whole conversation — prompt and completion — and its hidden states are pooled (the last real token
for a causal decoder, the mean for an encoder) and projected to one number (Ouyang et al. 2022,
InstructGPT §3.5). Trained with ``BradleyTerryObjective``: −log σ(r(chosen) − r(rejected) − margin)
with optional reward centring. Saved as a directory: ``reward_model.json`` (backbone, pooling,
tokenizer fingerprint), ``reward_head.safetensors`` and the backbone's adapter (``save_adapter``),
or, for a backbone trained without a PEFT method, a whole model directory in ``backbone/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import InputError, ModelError
from ..core.io import atomic_path, write_json
from ..core.validate import check_number
from ..data.loaders import pad_batch
from ..models.backbone import load_backbone
from ..models.directory import save_model_dir
from ..models.encoder import pool
from ..peft import load_adapter, save_adapter
from .losses import bradley_terry_loss
from .objectives import RunningMeans
from .preferences import Messages, Preference, Truncation, encode

CONFIG = "reward_model.json"
HEAD = "reward_head.safetensors"


class RewardModel(nn.Module):
    """Backbone hidden states → pooled → one score per sequence; ``forward(ids, mask) -> [B]``."""

    def __init__(self, backbone: nn.Module, pooling: str | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling or ("last" if backbone.config.causal else "mean")
        self.head = nn.Linear(backbone.config.d_model, 1)
        nn.init.normal_(self.head.weight, std=1 / (backbone.config.d_model + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.backbone.hidden_states(ids, attention_mask=mask)
        return self.head(pool(hidden, mask, self.pooling)).squeeze(-1).float()

    def state_config(self) -> dict:
        """What a checkpoint must match to be resumed into this network."""
        return {"backbone": self.backbone.state_config(), "pooling": self.pooling}


def conversation_ids(tokenizer: Any, prompt: Messages, completion: Messages, limits: Truncation) -> list[int]:
    """The ids a reward model reads: the chat rendering of prompt + completion (plain "role: text" lines
    for a tokenizer without a chat template, e.g. an encoder's), cut to the last ``max_length`` ids."""
    if getattr(tokenizer, "chat_template", None):
        encoded = encode(tokenizer, prompt, completion, limits)
        return (encoded.prompt + encoded.completion)[-limits.max_length:]
    text = "\n".join(f"{m['role']}: {m['content']}" for m in [*prompt, *completion])
    ids = tokenizer.encode(text)
    if len(ids) > limits.max_length:
        limits.completions_cut += 1
    return ids[-limits.max_length:]


def encode_comparisons(tokenizer: Any, pairs: Sequence[Preference], limits: Truncation) -> list[tuple[list[int], list[int]]]:
    """(chosen ids, rejected ids) of every comparison."""
    return [(conversation_ids(tokenizer, p.prompt, p.chosen, limits),
             conversation_ids(tokenizer, p.prompt, p.rejected, limits)) for p in pairs]


def comparison_batch(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """``ids``/``mask`` of the chosen sequences followed by the rejected ones (right-padded)."""
    ids, mask = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], pad_id)
    return {"ids": ids, "mask": mask}


class BradleyTerryObjective:
    """The reward model's loss on [chosen rows; rejected rows], with an optional fixed ``margin`` or a
    per-pair ``margin`` in the batch, and ``center`` · mean((r_c + r_r)²) reward centring."""

    plot_keys = ("accuracy", "margin")

    def __init__(self, margin: float | None = None, center: float | None = None) -> None:
        if margin is not None:
            check_number("margin", margin)
        if center is not None:
            check_number("center", center, low=0.0)
        self.margin, self.center = margin, center
        self.running = RunningMeans()

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        chosen, rejected = model(batch["ids"], batch["mask"]).chunk(2)
        margin = batch.get("margin", self.margin)
        loss = bradley_terry_loss(chosen, rejected, margin=margin, center=self.center)
        self.running.add(accuracy=(chosen > rejected).float().mean(), margin=(chosen - rejected).mean().detach())
        return loss, int(batch["mask"].sum())

    def metrics(self) -> dict[str, float]:
        return self.running.pop()


@torch.no_grad()
def score_pairs(model: RewardModel, batches: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores, rejected scores) of every pair in ``batches``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for batch in batches:
        c, r = model(batch["ids"].to(device), batch["mask"].to(device)).chunk(2)
        chosen.append(c.cpu())
        rejected.append(r.cpu())
    model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def pairwise_report(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Pairwise accuracy (ties count half), mean margin and the Bradley-Terry loss of scored pairs."""
    diff = chosen - rejected
    accuracy = float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())
    return {"pairwise_accuracy": accuracy, "mean_margin": float(diff.mean()),
            "bradley_terry_loss": float(bradley_terry_loss(chosen, rejected)), "pairs": int(diff.numel())}


def length_baseline(train: Sequence[tuple[list[int], list[int]]], test: Sequence[tuple[list[int], list[int]]]) -> dict:
    """Pairwise accuracy of "the longer (or, if the training pairs say so, the shorter) answer wins"."""
    def accuracy(pairs, sign: int) -> float:
        return sum(1.0 if sign * (len(c) - len(r)) > 0 else 0.5 if len(c) == len(r) else 0.0
                   for c, r in pairs) / max(len(pairs), 1)
    sign = 1 if accuracy(train, 1) >= 0.5 else -1
    return {"rule": "longer wins" if sign > 0 else "shorter wins", "pairwise_accuracy": accuracy(test, sign)}


def save_reward_model(path: str | os.PathLike, model: RewardModel, backbone: str, tokenizer: Any) -> Path:
    """Write the reward model as a directory (see the module notes)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    adapted = getattr(model.backbone, "peft_record", None) is not None
    if adapted:
        save_adapter(model.backbone, out)
    else:
        save_model_dir(out / "backbone", *model.backbone.to_state(), tokenizer=tokenizer)
    with atomic_path(out / HEAD) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(tmp))
    write_json(out / CONFIG, {"backbone": str(backbone), "pooling": model.pooling, "adapter": adapted,
                              "tokenizer": tokenizer.fingerprint()})
    return out


def load_reward_model(path: str | os.PathLike) -> tuple[RewardModel, Any]:
    """(reward model, its tokenizer) from a directory written by ``save_reward_model``."""
    from safetensors.torch import load_file

    src = Path(path)
    if not (src / CONFIG).is_file() or not (src / HEAD).is_file():
        raise InputError(f"{src} is not a reward-model directory",
                         f"it must hold {CONFIG} and {HEAD} (from lmlab align reward --out)")
    config = json.loads((src / CONFIG).read_text(encoding="utf-8"))
    lm, tokenizer = load_backbone(config["backbone"] if config["adapter"] else src / "backbone")
    if config["adapter"]:
        load_adapter(lm, src)
    if tokenizer.fingerprint() != config["tokenizer"]:
        raise ModelError(f"the tokenizer of {config['backbone']} is not the one the reward model in {src} was "
                         "trained with", "load it with the backbone it was trained on")
    model = RewardModel(lm, config["pooling"])
    model.head.load_state_dict(load_file(str(src / HEAD)))
    return model.eval(), tokenizer
