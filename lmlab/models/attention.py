"""Multi-head attention with the four score functions of the notes and grouped key-value heads.

Score functions between a query q and a key k (per head, head width d):
``dot`` q·k; ``scaled_dot`` q·k/√d; ``bilinear`` qᵀWk (Luong's "general"); ``additive``
vᵀtanh(W_q q + W_k k) (Bahdanau's MLP score). The first three are dot products of (possibly
transformed) queries with keys, so they run through PyTorch's fused
``scaled_dot_product_attention``; ``additive`` needs the explicit path. ``fused=False`` forces
the explicit path (the tests check both agree). ``n_kv_heads`` < ``n_heads`` is grouped-query
attention (1 = multi-query): each key-value head serves n_heads / n_kv_heads query heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layout import packed_outputs
from .norms import upcast

SCORES = ("dot", "scaled_dot", "bilinear", "additive")


class Attention(nn.Module):
    """Self-attention over the current tokens and any cached keys/values."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, *, score: str = "scaled_dot",
                 bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.score = score
        self.dropout = dropout
        self.past_prefix = None  # prefix tuning's callable (lmlab.peft.prefix), applied by the block
        self.packed = None  # q/k/v weights packed for decoding (lmlab.models.layout)
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, dim, bias=bias)
        if score == "bilinear":
            self.bilinear = nn.Parameter(torch.eye(self.head_dim).repeat(n_heads, 1, 1)
                                         + 0.02 * torch.randn(n_heads, self.head_dim, self.head_dim))
        if score == "additive":
            self.add_q = nn.Linear(self.head_dim, self.head_dim, bias=False)
            self.add_k = nn.Linear(self.head_dim, self.head_dim, bias=False)
            self.add_v = nn.Parameter(torch.randn(self.head_dim) / math.sqrt(self.head_dim))

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries [B, H, T, D] and keys/values [B, KV, T, D] of ``x`` [B, T, dim]."""
        b, t, _ = x.shape
        linears = (self.q_proj, self.k_proj, self.v_proj)
        q, k, v = packed_outputs(x, linears, self.packed) or (lin(x) for lin in linears)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, allowed: torch.Tensor | None,
               bias: torch.Tensor | None, causal: bool, fused: bool = True) -> torch.Tensor:
        """Attention output [B, T, dim] of queries over all keys/values (cache included).

        ``allowed`` [B, 1, T, S] (True = may attend) or None with ``causal`` for a plain causal
        mask over keys aligned with queries; ``bias`` [B, H, T, S] is added to the scores (ALiBi).
        """
        b, _, t, _ = q.shape
        groups = self.n_heads // self.n_kv_heads
        p = self.dropout if self.training else 0.0
        fused = fused and self.score != "additive"
        if groups > 1 and not fused:  # the fused kernel shares key-value heads itself (enable_gqa)
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if fused:
            if self.score == "bilinear":
                q = torch.einsum("bhtd,hde->bhte", q, self.bilinear.to(q.dtype))
            scale = 1.0 / math.sqrt(self.head_dim) if self.score == "scaled_dot" else 1.0
            mask = allowed
            if bias is not None:
                mask = bias.to(q.dtype) if allowed is None else bias.to(q.dtype).masked_fill(~allowed, float("-inf"))
                if allowed is None and causal:
                    mask = mask + _causal_float(t, k.shape[2], q)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scale,
                                                 is_causal=causal and mask is None, enable_gqa=groups > 1)
        else:
            scores = self.scores(q, k)
            if bias is not None:
                scores = scores + bias
            if allowed is None and causal:
                allowed = torch.ones(t, k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - t)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            weights = F.dropout(torch.softmax(upcast(scores), dim=-1).to(v.dtype), p=p, training=p > 0)
            out = weights @ v
        return self.merge(out)

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """The output projection [B, T, dim] of per-head attention outputs [B, H, T, D]."""
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def weights(self, q: torch.Tensor, k: torch.Tensor, *, allowed: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Explicit attention weights [B, H, T, S] (float32) of queries over keys [B, KV, S, D]: what a
        KV-cache policy that scores tokens by attention reads, computed only for the queries it asks
        about (the attention itself stays fused). ``allowed`` [.., T, S] (None: every key) and
        ``bias`` as in ``attend``."""
        groups = self.n_heads // self.n_kv_heads
        if groups > 1 and self.score in ("dot", "scaled_dot"):  # each KV head's query heads in one product
            b, h, t, d = q.shape
            scores = (q.reshape(b, self.n_kv_heads, groups * t, d) @ k.transpose(-1, -2)).view(b, h, t, -1).float()
            if self.score == "scaled_dot":
                scores = scores / math.sqrt(self.head_dim)
        else:
            scores = self.scores(q, k.repeat_interleave(groups, dim=1) if groups > 1 else k).float()
        if bias is not None:
            scores = scores + bias.float()
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Explicit attention scores [B, H, T, S] for the configured score function."""
        if self.score == "dot":
            return q @ k.transpose(-1, -2)
        if self.score == "scaled_dot":
            return q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if self.score == "bilinear":
            return torch.einsum("bhtd,hde,bhse->bhts", q, self.bilinear.to(q.dtype), k)
        hidden = torch.tanh(self.add_q(q).unsqueeze(3) + self.add_k(k).unsqueeze(2))  # [B, H, T, S, D]
        return hidden @ self.add_v.to(hidden.dtype)


def _causal_float(t: int, s: int, like: torch.Tensor) -> torch.Tensor:
    """An additive causal mask (0 / -inf) whose last query row sees every key."""
    keep = torch.ones(t, s, dtype=torch.bool, device=like.device).tril(s - t)
    return torch.zeros(t, s, dtype=like.dtype, device=like.device).masked_fill(~keep, float("-inf"))
