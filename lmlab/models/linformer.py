"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").

Keys and values [T, D] are projected along the sequence to k rows by learned E, F [k, n]
(n = the context length; a shorter input uses the first T columns): softmax(Q (E K)ᵀ/√d) (F V)
costs [T, k] instead of [T, T]. One E and F per layer, shared by its heads ("headwise sharing").
Every output position mixes all positions, so it is for encoders (bidirectional attention).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import ModelError


def linformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, e: torch.Tensor, f: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """Attention [B, H, T, D] with keys/values projected by ``e``, ``f`` [k, ≥T]."""
    t = k.shape[2]
    if t > e.shape[1]:
        raise ModelError(f"Linformer projects at most {e.shape[1]} positions, got {t}",
                         "use inputs no longer than the model's context_length")
    keys = torch.einsum("kt,bhtd->bhkd", e[:, :t].to(k.dtype), k)
    values = torch.einsum("kt,bhtd->bhkd", f[:, :t].to(v.dtype), v)
    weights = torch.softmax((q @ keys.transpose(-1, -2)).float() * scale, dim=-1).to(v.dtype)
    return weights @ values


class Linformer(nn.Module):
    """One layer's sequence projections E and F [k, n], initialised N(0, 1/k)."""

    def __init__(self, context_length: int, k: int) -> None:
        super().__init__()
        self.e = nn.Parameter(torch.randn(k, context_length) / math.sqrt(k))
        self.f = nn.Parameter(torch.randn(k, context_length) / math.sqrt(k))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return linformer_attention(q, k, v, self.e, self.f, scale)
