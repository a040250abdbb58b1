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
def pooled_activations(lm: nn.Module, prompts: Sequence[Sequence[int]], names: Sequence[str], *,
                       pool: str = "mean") -> torch.Tensor:
    """One row per prompt at each hook point, [len(names), N, d_model]: the activation averaged over
    the prompt's positions (``mean``) or taken at its last token (``last``)."""
    check_choice("pool", pool, POOLS)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise InputError("every prompt needs at least one token, and there must be one", "give prompts with text")
    rows = []
    for ids in prompts:  # one at a time: no padding enters the pooling
        _, cache = run_with_cache(lm, torch.tensor([list(ids)]), names)
        acts = torch.stack([cache[name][0].float() for name in names])  # [K, T, D]
        rows.append(acts.mean(1) if pool == "mean" else acts[:, -1])
    return torch.stack(rows, dim=1)


def mean_activation(lm: nn.Module, prompts: Sequence[Sequence[int]], layer: int, *, pool: str = "mean",
                    site: str = "resid_pre") -> torch.Tensor:
    """The mean over ``prompts`` of each prompt's pooled ``site`` activation at ``layer``, [d_model]."""
    return pooled_activations(lm, prompts, [f"blocks.{layer}.{site}"], pool=pool)[0].mean(0)


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
