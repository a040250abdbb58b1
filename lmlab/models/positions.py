"""Positional schemes: sinusoidal and learned absolute positions, RoPE, ALiBi and T5's bias.

Absolute schemes are added to the token embeddings; RoPE rotates queries and keys inside
attention (``rotate_half`` convention of Hugging Face LLaMA, so imported weights need no
permutation); ALiBi adds a per-head linear distance penalty to the attention scores; T5's
relative bias (``relative_bias``) adds a learned per-head scalar for each log-spaced bucket of
the key-minus-query distance, one table per stack shared by all its layers. Transformer-XL's
relative encoding (``transformer_xl``: sinusoids of the distance with the global biases u, v) is
``lmlab.models.xl_positions``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import ModelError
from .rope_scaling import rope_frequencies

POSITIONS = ("sinusoidal", "learned", "rope", "alibi", "relative_bias", "transformer_xl", "none")


def sinusoidal(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al.'s table: sin on even channels, cos on odd ones, for any positions [...] → [..., dim]."""
    half = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = torch.exp(-math.log(10000.0) * half / dim)
    angles = positions.float().unsqueeze(-1) * inv_freq
    table = torch.zeros(*positions.shape, dim, device=positions.device)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles[..., : dim // 2])
    return table


class LearnedPositions(nn.Module):
    """One trained vector per position up to ``max_positions``; longer contexts are an error."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.zeros(max_positions, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        # (a data-dependent check: skipped inside torch.compile, where TransformerLM has checked the length)
        if not torch.compiler.is_compiling() and positions.numel() and int(positions.max()) >= self.max_positions:
            raise ModelError(f"position {int(positions.max())} is beyond the {self.max_positions} positions "
                             "this model learned", "use a shorter context (or a sliding window with --stride)")
        # an embedding lookup, not ``weight[positions]``: indexing's backward (index_put with accumulate)
        # adds the rows of repeated positions with atomics on several CPU threads, in a varying order
        return nn.functional.embedding(positions, self.weight)


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0,
                scale: float = 1.0, kind: str = "linear", original: int = 0, *,
                temperature: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [..., head_dim] for RoPE; ``scale`` > 1 extends the context that many times by
    ``kind`` (``lmlab.models.rope_scaling``: linear position interpolation — positions divided by
    ``scale`` — NTK-aware scaling or YaRN, which needs the trained context ``original``).
    ``temperature=False`` leaves out YaRN's magnitude factor (a pure rotation, for moving cached keys)."""
    if kind == "linear":
        inv_freq, magnitude = rope_frequencies(head_dim, theta, device=positions.device)
        angles = (positions.float() / scale).unsqueeze(-1) * inv_freq
    else:
        inv_freq, magnitude = rope_frequencies(head_dim, theta, kind, scale, original, device=positions.device)
        angles = positions.float().unsqueeze(-1) * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    if magnitude != 1.0 and temperature:
        return angles.cos() * magnitude, angles.sin() * magnitude
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [B, H, T, D] by per-position angles (cos/sin [B, T, D] or [B, 1, T, D])."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    if cos.dim() == 3:  # [B, T, D] → [B, 1, T, D]; callers that rotate many tensors pass them so once
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Press et al.'s head slopes: a geometric sequence 2^(-8/n), interleaved for non-powers of two."""
    def powers(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = powers(closest)
    if closest < n_heads:
        slopes += powers(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Additive score bias [B, H, T, S] = -slope · (query position - key position)."""
    distance = (q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2)).float()  # [B, T, S]
    return -slopes.to(distance.device).view(1, -1, 1, 1) * distance.unsqueeze(1)


def relative_position_bucket(relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of each key-minus-query distance: half the buckets for each sign when
    ``bidirectional`` (else only keys behind the query count), exact for the first half of
    them, then log-spaced up to ``max_distance`` (farther distances share the last bucket)."""
    buckets = torch.zeros_like(relative_position, dtype=torch.long)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    far = max_exact + (torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance.long(), far)


class RelativePositionBias(nn.Module):
    """T5's learned bias [B, H, T, S] per (head, bucket of key position - query position)."""

    def __init__(self, n_heads: int, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.weight = nn.Parameter(torch.zeros(num_buckets, n_heads))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Bias for query positions [B, T] against key positions [B, S]."""
        buckets = relative_position_bucket(k_pos.long().unsqueeze(-2) - q_pos.long().unsqueeze(-1),
                                           bidirectional=self.bidirectional, num_buckets=self.num_buckets,
                                           max_distance=self.max_distance)  # [B, T, S]
        return nn.functional.embedding(buckets, self.weight).permute(0, 3, 1, 2)  # (deterministic backward)
