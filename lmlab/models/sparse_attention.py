"""Sliding-window and strided (block-sparse) causal attention, computed block by block.

* Sliding window (Beltagy et al. 2020, "Longformer"; Child et al. 2019's local pattern): query
  i sees keys i-w < j ≤ i.
* Strided / "fixed" pattern (Child et al. 2019, "Generating Long Sequences with Sparse
  Transformers", §4.2 with c = 1): query i sees the earlier keys of its own block of length l
  and the last key of every earlier block (the "summary" columns that carry information across
  blocks).

On a whole causal sequence (training, prefill) the scores are computed per block of queries,
against only the keys the pattern can reach: [T, 2w] for the window, [T, l + T/l] for the
strided pattern, never the [T, T] matrix. With a cache, padding or a bias the same pattern is
applied as a mask over the keys (``window_pattern`` / ``strided_pattern``), which is exact and
costs only the one-row scores a decoding step computes anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def window_pattern(q_slot: torch.Tensor, k_slot: torch.Tensor, window: int) -> torch.Tensor:
    """[T, S] True where query slot i may see key slot j: i - window < j ≤ i."""
    distance = q_slot.unsqueeze(1) - k_slot.unsqueeze(0)
    return (distance >= 0) & (distance < window)


def strided_pattern(q_slot: torch.Tensor, k_slot: torch.Tensor, block: int) -> torch.Tensor:
    """[T, S] True where query i may see key j ≤ i: same block of ``block`` slots, or j ends a block
    (1-D slots [T], [S]; or already broadcastable ones, e.g. [B, T, 1] and [B, 1, S] → [B, T, S])."""
    q, k = (q_slot.unsqueeze(1), k_slot.unsqueeze(0)) if q_slot.dim() == 1 else (q_slot, k_slot)
    return (k <= q) & ((q // block == k // block) | (k % block == block - 1))


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, T, D] zero-padded to a multiple of ``size`` and cut into [B, H, T/size, size, D]."""
    b, h, t, d = x.shape
    n = math.ceil(t / size)
    return F.pad(x, (0, 0, 0, n * size - t)).view(b, h, n, size, d)


def _softmax(scores: torch.Tensor, dropout: float, dtype: torch.dtype) -> torch.Tensor:
    weights = torch.softmax(scores.float(), dim=-1).to(dtype)
    return F.dropout(weights, p=dropout, training=dropout > 0)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float, *,
                     distance_bias: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     dropout: float = 0.0) -> torch.Tensor:
    """Causal sliding-window attention [B, H, T, D] of queries/keys/values [B, H, T, D] (the same
    positions): each block of ``window`` queries against its own and the previous block of keys.
    ``distance_bias(distance [n, w, 2w]) -> [H|1, n, w, 2w]`` is added to the scores (adaptive span)."""
    t, w = q.shape[2], window
    qb, kb, vb = _blocks(q, w), _blocks(k, w), _blocks(v, w)
    n = qb.shape[2]
    keys = torch.cat([F.pad(kb, (0, 0, 0, 0, 1, 0))[:, :, :n], kb], dim=3)  # [B, H, n, 2w, D]: previous + own
    values = torch.cat([F.pad(vb, (0, 0, 0, 0, 1, 0))[:, :, :n], vb], dim=3)
    q_pos = torch.arange(n * w, device=q.device).view(n, w, 1)
    k_pos = (torch.arange(n, device=q.device).view(n, 1) * w - w + torch.arange(2 * w, device=q.device)).view(n, 1, 2 * w)
    distance = q_pos - k_pos  # [n, w, 2w]
    allowed = (distance >= 0) & (distance < w) & (k_pos >= 0)
    scores = (qb @ keys.transpose(-1, -2)) * scale
    if distance_bias is not None:
        scores = scores + distance_bias(distance)
    weights = _softmax(scores.masked_fill(~allowed, float("-inf")), dropout, v.dtype)
    return (weights @ values).flatten(2, 3)[:, :, :t]


def strided_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int, scale: float, *,
                      dropout: float = 0.0) -> torch.Tensor:
    """Causal strided ("fixed") sparse attention [B, H, T, D]: each block of queries against the
    keys of its own block and the last key of every earlier block."""
    t, size = q.shape[2], block
    qb, kb, vb = _blocks(q, size), _blocks(k, size), _blocks(v, size)
    n = qb.shape[2]
    summary_k, summary_v = kb[:, :, :, -1], vb[:, :, :, -1]  # [B, H, n, D]: the last key of each block
    local = (qb @ kb.transpose(-1, -2)) * scale  # [B, H, n, l, l]
    summary = torch.einsum("bhnld,bhmd->bhnlm", qb, summary_k) * scale  # [B, H, n, l, n]
    inside = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    earlier = torch.arange(n, device=q.device).view(1, n) < torch.arange(n, device=q.device).view(n, 1)  # [n, n]
    scores = torch.cat([local.masked_fill(~inside, float("-inf")),
                        summary.masked_fill(~earlier.view(n, 1, n), float("-inf"))], dim=-1)
    weights = _softmax(scores, dropout, v.dtype)
    out = weights[..., :size] @ vb + torch.einsum("bhnlm,bhmd->bhnld", weights[..., size:], summary_v)
    return out.flatten(2, 3)[:, :, :t]
