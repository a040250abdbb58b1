"""Activation caching: one forward pass that keeps the activations at the named hook points."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models.hooks import hook_names, hooked


@torch.no_grad()
def run_with_cache(lm: nn.Module, ids: torch.Tensor, names: Sequence[str] | None = None, *,
                   attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits [B, T, V], {name: activation}) of ``ids`` [B, T]: every hook point, or only ``names``
    (``blocks.<layer>.<site>``, ``lmlab.models.hooks``). The activations are detached copies."""
    names = hook_names(lm) if names is None else list(names)
    store: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(x: torch.Tensor) -> None:
            store[name] = x.detach().clone()
        return hook

    with hooked(lm, [(name, keep(name)) for name in names]):
        logits, _ = lm(torch.as_tensor(ids).to(lm.device), attention_mask=attention_mask)
    return logits, store
