"""Attention maps: each head's attention weights at one layer (the ``attn_pattern`` hook point),
drawn as a PNG heat map with the prompt's tokens on both axes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.validate import check_number
from ..generate.translate import plot_alignment
from .cache import run_with_cache


def attention_patterns(lm: nn.Module, ids: Sequence[int], layer: int) -> torch.Tensor:
    """Attention weights [n_heads, T, T] of one prompt at ``layer`` (queries down, keys across)."""
    check_number("layer", layer, low=0, high=len(lm.blocks) - 1, integer=True)
    name = f"blocks.{layer}.attn_pattern"
    _, cache = run_with_cache(lm, torch.tensor([list(ids)]), [name])
    return cache[name][0]


def plot_attention(pattern: torch.Tensor, tokens: Sequence[str], path, *, title: str) -> str:
    """Save the map ``pattern`` [T, T] of one head (or a mean of heads) as a PNG."""
    return plot_alignment(pattern.float().cpu(), tokens, tokens, path, title=title, axes=("key", "query"))
