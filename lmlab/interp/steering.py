"""Steering vectors: the difference of mean activations between two sets of prompts, added to the
residual stream at one layer while the model runs (activation addition, Turner et al. 2023,
"Activation Addition: Steering Language Models Without Optimization"; contrastive activation
addition, Rimsky et al. 2024)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..core.errors import InputError
from ..core.validate import check_choice, check_number
from .cache import run_with_cache

POOLS = ("mean", "last")


@torch.no_grad()
def mean_activation(lm: nn.Module, prompts: Sequence[Sequence[int]], layer: int, *, pool: str = "mean",
                    site: str = "resid_pre") -> torch.Tensor:
    """The mean over ``prompts`` of each prompt's ``site`` activation at ``layer`` [d_model], pooled over
    its positions (``mean``) or taken at its last token (``last``)."""
    check_choice("pool", pool, POOLS)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise InputError("steering needs at least one non-empty prompt on each side", "give prompts with text")
    name = f"blocks.{layer}.{site}"
    rows = []
    for ids in prompts:  # one at a time: no padding enters the mean
        _, cache = run_with_cache(lm, torch.tensor([list(ids)]), [name])
        act = cache[name][0].float()
        rows.append(act.mean(0) if pool == "mean" else act[-1])
    return torch.stack(rows).mean(0)


def steering_vector(lm: nn.Module, positive: Sequence[Sequence[int]], negative: Sequence[Sequence[int]],
                    layer: int, *, pool: str = "mean") -> torch.Tensor:
    """mean activation(positive) − mean activation(negative) entering ``layer``, [d_model]."""
    check_number("layer", layer, low=0, high=len(lm.blocks) - 1, integer=True)
    return mean_activation(lm, positive, layer, pool=pool) - mean_activation(lm, negative, layer, pool=pool)


def steering_hooks(vector: torch.Tensor, layer: int, scale: float = 1.0) -> list[tuple[str, Callable]]:
    """Hooks adding ``scale · vector`` to the stream entering ``layer`` at every position (use with
    ``lmlab.models.hooks.hooked`` around generation)."""
    check_number("scale", scale)

    def add(x: torch.Tensor) -> torch.Tensor:
        return x + (scale * vector).to(x.dtype).to(x.device)
    return [(f"blocks.{layer}.resid_pre", add)]
