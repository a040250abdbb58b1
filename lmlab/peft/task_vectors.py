"""Task arithmetic (Ilharco et al. 2023) on state dicts: τ = θ_finetuned − θ_base.

Adding λτ to a base moves it towards the task, adding −τ (negation) moves it away, and a
weighted sum of several task vectors merges models. A LoRA-adapted model gives its task
vector directly as the merged delta s·B·A of each adapted weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ConfigError

StateDict = dict[str, torch.Tensor]


def _check_shapes(a: StateDict, b: StateDict, what: str) -> None:
    bad = [k for k in a if k in b and a[k].shape != b[k].shape]
    if bad:
        k = bad[0]
        raise ConfigError(f"{what}: {k} has shape {list(a[k].shape)} vs {list(b[k].shape)}",
                          "use state dicts of the same architecture")


def task_vector(finetuned: StateDict, base: StateDict) -> StateDict:
    """finetuned − base for every floating-point tensor both hold (the keys must agree)."""
    if set(finetuned) != set(base):
        only = sorted(set(finetuned) ^ set(base))
        raise ConfigError(f"the state dicts hold different tensors (e.g. {only[:3]})",
                          "subtract the base the model was fine-tuned from")
    _check_shapes(finetuned, base, "task_vector")
    return {k: finetuned[k].detach() - base[k].detach()
            for k in base if base[k].is_floating_point()}


def lora_task_vector(model: nn.Module) -> StateDict:
    """The merged delta of every (unmerged) LoRA/DoRA layer, keyed by its base weight's name
    in the plain model (``layers.0.q_proj.weight``)."""
    from .lora import LoraLinear

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            if module.merged:
                raise ConfigError(f"{name} is merged", "unmerge the model first")
            out[f"{name}.weight"] = module.delta_weight().detach()
    if not out:
        raise ConfigError("the model has no LoRA layers", "apply LoRA or pass state dicts")
    return out


def add_task_vector(base: StateDict, vector: StateDict, scale: float = 1.0) -> StateDict:
    """A new state dict: base + scale · vector (tensors the vector lacks are kept as they are)."""
    missing = sorted(set(vector) - set(base))
    if missing:
        raise ConfigError(f"the task vector names tensors the base lacks (e.g. {missing[:3]})",
                          "apply it to the model it was extracted from")
    _check_shapes(vector, base, "add_task_vector")
    return {k: (v + scale * vector[k].to(v.dtype)) if k in vector else v
            for k, v in base.items()}


def negate(vector: StateDict) -> StateDict:
    """−τ: adding it makes the model forget the task."""
    return {k: -v for k, v in vector.items()}


def combine(vectors: Sequence[StateDict], weights: Sequence[float] | None = None) -> StateDict:
    """Σ w_i τ_i over the union of keys (a tensor absent from a vector counts as zero)."""
    if not vectors:
        raise ConfigError("combine needs at least one task vector")
    weights = [1.0] * len(vectors) if weights is None else list(weights)
    if len(weights) != len(vectors):
        raise ConfigError(f"{len(weights)} weights for {len(vectors)} task vectors",
                          "give one weight per task vector")
    out: StateDict = {}
    for vector, w in zip(vectors, weights, strict=True):
        _check_shapes(vector, out, "combine")
        for k, v in vector.items():
            out[k] = out[k] + w * v if k in out else w * v
    return out
