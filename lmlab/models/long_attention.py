"""The long-sequence attention variants a ``TransformerConfig`` switches on (``attention=``), one
object per layer that the block calls instead of full attention.

``full`` (the default) is ordinary softmax attention. ``sliding_window`` and ``strided``
(``lmlab.models.sparse_attention``), ``adaptive_span`` (``lmlab.models.adaptive_span``) and
``lsh`` (``lmlab.models.lsh_attention``) are causal; ``linformer`` and ``nystrom``
(``lmlab.models.linformer``, ``lmlab.models.nystrom``) summarise the whole sequence and are for
encoders. A whole causal sequence (training, prefill) takes each variant's own path, which never
forms the [T, T] score matrix; with a cache, padding or a position bias the causal variants
apply the same pattern as a mask over the keys (exact, and what one decoding row costs anyway).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelError
from .adaptive_span import AdaptiveSpan
from .linformer import Linformer
from .lsh_attention import SELF_SCORE, LSHAttention, lsh_mask
from .nystrom import nystrom_attention
from .sparse_attention import strided_attention, strided_pattern, window_attention, window_pattern

ATTENTIONS = ("full", "sliding_window", "strided", "lsh", "linformer", "nystrom", "adaptive_span")


class LongAttention(nn.Module):
    """One layer's variant of ``cfg.attention`` (a ``TransformerConfig``), with its parameters."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.kind = cfg.attention
        self.window = cfg.attention_window
        self.landmarks = cfg.nystrom_landmarks
        self.scale = 1.0 / math.sqrt(cfg.head_dim) if cfg.score == "scaled_dot" else 1.0
        self.lsh = (LSHAttention(cfg.n_heads, cfg.head_dim, cfg.lsh_buckets, cfg.lsh_rounds, cfg.attention_window)
                    if self.kind == "lsh" else None)
        self.linformer = Linformer(cfg.context_length, cfg.linformer_k) if self.kind == "linformer" else None
        self.span = (AdaptiveSpan(cfg.n_heads, cfg.attention_window, cfg.adaptive_span_ramp, cfg.adaptive_span_loss)
                     if self.kind == "adaptive_span" else None)

    def keys(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The keys to store and attend with: LSH shares them with the queries (normalised)."""
        return F.normalize(q, dim=-1) if self.kind == "lsh" else k

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, allowed: torch.Tensor | None,
                bias: torch.Tensor | None, causal: bool, q_slot: torch.Tensor, k_slot: torch.Tensor,
                row_positions: tuple[torch.Tensor, torch.Tensor] | None = None, dropout: float = 0.0) -> torch.Tensor:
        """Attention output [B, H, T, D] of queries [B, H, T, D] over keys/values [B, KV, S, D];
        ``allowed``/``bias``/``causal`` as in ``Attention.attend``; slots number queries and keys;
        ``row_positions`` (queries [B, T], keys [B, S]) are each row's positions where padding moves
        them off the slots (the strided pattern's blocks are counted in positions)."""
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        kind, scale = self.kind, self.scale
        if kind in ("linformer", "nystrom"):
            if (allowed is not None and not bool(allowed.all())) or bias is not None:
                raise ModelError(f"{kind} attention takes unpadded rows without a position bias",
                                 "batch rows of equal length (no attention mask), with positions other than alibi")
            if kind == "nystrom":
                return nystrom_attention(q, k, v, self.landmarks, scale)
            return self.linformer(q, k, v, scale)
        whole = causal and allowed is None and bias is None and q.shape[2] == k.shape[2]
        if whole:
            if kind == "sliding_window":
                return window_attention(q, k, v, self.window, scale, dropout=dropout)
            if kind == "strided":
                return strided_attention(q, k, v, self.window, scale, dropout=dropout)
            if kind == "adaptive_span":
                return window_attention(q, k, v, self.span.window, scale, distance_bias=self.span.bias, dropout=dropout)
            return self.lsh(q, k, v, scale)
        k_slot = k_slot[-k.shape[2]:].to(q.device)
        q_slot = q_slot.to(q.device)
        if kind == "sliding_window":
            pattern = window_pattern(q_slot, k_slot, self.window)
        elif kind == "strided" and row_positions is not None:
            q_pos, k_pos = (p.to(q.device) for p in row_positions)
            pattern = strided_pattern(q_pos.unsqueeze(-1), k_pos[:, -k.shape[2]:].unsqueeze(-2), self.window).unsqueeze(1)
        elif kind == "strided":
            pattern = strided_pattern(q_slot, k_slot, self.window)
        else:
            pattern = k_slot.unsqueeze(0) <= q_slot.unsqueeze(1)
        if allowed is not None:
            pattern = pattern & allowed
        extra = None
        if kind == "adaptive_span":
            extra = self.span.bias(q_slot.unsqueeze(1) - k_slot.unsqueeze(0)).unsqueeze(0)  # [1, H, T, S]
        elif kind == "lsh":
            pattern = pattern & lsh_mask(q, k, self.lsh.rotations)
            extra = torch.where(q_slot.unsqueeze(1) == k_slot.unsqueeze(0), SELF_SCORE, 0.0).to(q.dtype)
        mask = torch.zeros(pattern.shape, dtype=q.dtype, device=q.device).masked_fill(~pattern, float("-inf"))
        for add in (bias, extra):
            if add is not None:
                mask = mask + add.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                              dropout_p=dropout if self.training else 0.0)
