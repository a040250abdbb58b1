"""Transformer-XL's relative positional encoding (Dai et al. 2019, "Transformer-XL: Attentive Language
Models Beyond a Fixed-Length Context", §3.3).

The score of query i (at position p_i) and key j (at p_j) is

    A_ij = q_iᵀ k_j  (a)  +  q_iᵀ W_R R_{p_i−p_j}  (b)  +  uᵀ k_j  (c)  +  vᵀ W_R R_{p_i−p_j}  (d)
         = (q_i + u)ᵀ k_j  +  (q_i + v)ᵀ W_R R_{p_i−p_j}

with R_δ the sinusoid of the distance δ (sin and cos halves, as in the paper's code), W_R a
projection of it per head, and u, v two trained vectors per head that do not depend on the query's
position (the global content and position biases). Nothing is added to the embeddings, so a key
computed from a memory of earlier layer inputs is reused at any distance (segment recurrence,
``lmlab.models.segment_memory``).

Terms (a) + (c) are an ordinary dot product with the query moved by u, so the block runs the fused
attention with ``q + u``; (b) + (d) become an additive score bias. For a query block that follows
its keys (query i at key slot S − T + i: a whole sequence, a segment after its memory, decoding with
a cache) the bias is computed for the S distances S−1 … 0 once per query, [T, S], and the paper's
"relative shift" (pad a zero column, reshape, drop a row) moves row i left by T − 1 − i so each
entry lands on its key: O(T·S) work and no per-pair gather of vectors. Where rows carry their own
positions (padding, evicted cache slots) the same [T, S] table is indexed by each pair's distance.
"""

from __future__ import annotations

import torch
from torch import nn


def relative_sinusoids(distances: torch.Tensor, dim: int) -> torch.Tensor:
    """R_δ [..., dim] for distances [...]: sin(δ·ω) then cos(δ·ω), ω_k = 10000^(−2k/dim) (the paper's code)."""
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, device=distances.device, dtype=torch.float32) / dim))
    angles = distances.float().unsqueeze(-1) * inv_freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def relative_shift(x: torch.Tensor) -> torch.Tensor:
    """[..., T, S] scores whose column m holds distance S−1−m → scores whose column j holds the
    distance (S − T + i) − j of query row i (entries right of that query's own slot are garbage
    and must be masked: they are keys after the query)."""
    *lead, t, s = x.shape
    padded = torch.cat([x.new_zeros(*lead, t, 1), x], dim=-1)  # [..., T, S+1]
    return padded.view(*lead, s + 1, t)[..., 1:, :].reshape(*lead, t, s)


class XLRelativePositions(nn.Module):
    """One layer's W_R [H·D, d_model] and biases u, v [H, D]: turns queries into (q + u, bias of
    terms (b) + (d)) for scaled dot-product attention with ``scale``."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, scale: float) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.head_dim, self.scale = d_model, n_heads, head_dim, scale
        self.r_proj = nn.Linear(d_model, n_heads * head_dim, bias=False)
        self.content_bias = nn.Parameter(torch.zeros(n_heads, head_dim))  # u
        self.position_bias = nn.Parameter(torch.zeros(n_heads, head_dim))  # v

    def projected(self, distances: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """W_R R_δ [H, S, D] for distances [S]."""
        r = self.r_proj(relative_sinusoids(distances, self.d_model).to(dtype))
        return r.view(-1, self.n_heads, self.head_dim).transpose(0, 1)

    def forward(self, q: torch.Tensor, s: int, distances: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q + u [B, H, T, D], scale · (q + v)ᵀ W_R R [B, H, T, S]) for queries [B, H, T, D] over S keys:
        query i at slot S − T + i (``distances`` None: the shift), or at the distances [B, T, S] given."""
        t = q.shape[2]
        u, v = (p.to(q.dtype).view(1, self.n_heads, 1, self.head_dim) for p in (self.content_bias, self.position_bias))
        qv = (q + v) * self.scale  # scaled before the product: one [T, S] tensor fewer
        if distances is None:
            table = self.projected(torch.arange(s - 1, -1, -1, device=q.device), q.dtype)  # S−1 … 0
            return q + u, relative_shift(qv @ table.transpose(-1, -2))
        table = self.projected(torch.arange(s, device=q.device), q.dtype)  # 0 … S−1
        scores = qv @ table.transpose(-1, -2)  # [B, H, T, S]: column δ is distance δ
        index = distances.to(q.device).long().clamp(0, s - 1).unsqueeze(1).expand(q.shape[0], q.shape[1], t, s)
        return q + u, scores.gather(-1, index)

