"""What a KV cache records about attention for the policies that score tokens by it.

The attention itself runs on the fused path (SDPA), which gives no weights; a policy that needs
them asks for exactly what it reads, and ``record`` (called by ``KVCache.layer_inputs`` once per
layer and forward pass) computes only that, with the layer's explicit score function:

* ``accumulate`` — H2O (Zhang et al., 2023): every query's attention weights added to running
  sums per layer, KV head (the sum over its query heads) and slot, in ``slot_data['attention']``;
  queries go through in blocks of ``QUERY_BLOCK`` so a long prompt never holds a [T, T] matrix;
* ``window`` — SnapKV (Li et al., 2024) and PyramidKV: the mean attention of each row's last
  ``window`` queries over every key, [B, H, slots], in ``observed['window']``. The queries are kept
  (``observed['queries']``) so a prompt fed in chunks still observes its last ``window`` tokens;
* ``last`` — TOVA (Oren et al., 2024): the attention of each row's newest query, [B, H, slots], in
  ``observed['last']``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..core.errors import ConfigError

if TYPE_CHECKING:
    from .cache import KVCache

QUERY_BLOCK = 256


@dataclass(frozen=True)
class Observation:
    """What to record in each forward pass (see the module docstring)."""

    window: int = 0
    last: bool = False
    accumulate: bool = False

    def __or__(self, other: Observation) -> Observation:
        return Observation(max(self.window, other.window), self.last or other.last,
                           self.accumulate or other.accumulate)

    def __bool__(self) -> bool:
        return bool(self.window or self.last or self.accumulate)


def record(cache: KVCache, layer: int, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None,
           bias: torch.Tensor | None, weights: Callable[..., torch.Tensor]) -> None:
    """Record what ``cache.observe`` asks for, for the queries ``q`` [B, H, T, D] of this forward pass
    over the layer's keys ``k`` [B, KV, S, D] (``allowed``/``bias`` as the attention uses them)."""
    obs = cache.observe
    t, s = q.shape[2], k.shape[2]
    layers = cache.n_layers
    if obs.last:
        p = weights(q[:, :, -1:], k, allowed=_query_rows(allowed, t - 1, t, s, t, k.device),
                    bias=None if bias is None else bias[..., -1:, :])
        cache.observed.setdefault("last", [None] * layers)[layer] = p[:, :, 0]
    if obs.window:
        _window(cache, layer, q, k, bias, weights, obs.window)
    if obs.accumulate:
        sums = cache.slot_store("attention", layer, torch.float32)
        real = _real(cache, layer, s - t, s, k.device)
        b, h = q.shape[:2]
        kv = k.shape[1]
        for i in range(0, t, QUERY_BLOCK):
            j = min(i + QUERY_BLOCK, t)
            p = weights(q[:, :, i:j], k, allowed=_query_rows(allowed, i, j, s, t, k.device),
                        bias=None if bias is None else bias[..., i:j, :])
            p = p * real[:, None, i:j, None]
            sums[:, :, :s] += p.sum(dim=2).view(b, kv, h // kv, s).sum(dim=2)


def _window(cache: KVCache, layer: int, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None,
            weights: Callable[..., torch.Tensor], window: int) -> None:
    """The mean attention of the last ``window`` queries seen (this pass's and kept earlier ones)."""
    t, s = q.shape[2], k.shape[2]
    kept = cache.observed.setdefault("queries", [None] * cache.n_layers)
    queries = q if kept[layer] is None else torch.cat([kept[layer].to(q.dtype), q], dim=2)
    queries = queries[:, :, -window:]
    kept[layer] = queries
    w = queries.shape[2]
    if bias is not None and w > t:
        raise ConfigError("an observation window spanning several prompt chunks needs each query's position "
                          "bias, which ALiBi/relative-bias models compute per pass",
                          "feed the prompt in one pass (a larger prefill budget) or use a RoPE model")
    off = cache.offsets[layer]
    device = k.device
    keys_ok = (cache.mask[:, off:off + s].to(device) if cache.mask is not None
               else torch.ones(q.shape[0], s, dtype=torch.bool, device=device)).unsqueeze(1)
    live = cache.slot_data.get("live", [None] * cache.n_layers)[layer]
    if live is not None:
        keys_ok = keys_ok & live[:, :, :s].repeat_interleave(q.shape[1] // live.shape[1], dim=1)
    q_slot = torch.arange(s - w, s, device=device).view(-1, 1)
    k_slot = torch.arange(s, device=device).view(1, -1)
    allowed = (keys_ok.unsqueeze(2) & (k_slot <= q_slot)) | (k_slot == q_slot)  # [B, 1|H, w, S]
    p = weights(queries, k, allowed=allowed, bias=None if bias is None else bias[..., -w:, :])
    real = _real(cache, layer, s - w, s, device)
    p = p * real[:, None, :, None]
    cache.observed.setdefault("window", [None] * cache.n_layers)[layer] = (
        p.sum(dim=2) / real.sum(dim=1).clamp(min=1).view(-1, 1, 1))


def _real(cache: KVCache, layer: int, start: int, end: int, device: torch.device) -> torch.Tensor:
    """Which of the layer-local slots [start, end) are real tokens of their row, [B, end - start] float."""
    off = cache.offsets[layer]
    if cache.mask is None:
        return torch.ones(cache.batch_size, end - start, device=device)
    return cache.mask[:, off + start:off + end].to(device).float()


def _query_rows(allowed: torch.Tensor | None, i: int, j: int, s: int, t: int, device: torch.device
                ) -> torch.Tensor | None:
    """The attention mask of queries i..j-1 of the pass (None with T > 1 is the plain causal mask)."""
    if allowed is not None:
        return allowed[..., i:j, :]
    if t == 1:
        return None
    q_slot = torch.arange(s - t + i, s - t + j, device=device).view(-1, 1)
    return (torch.arange(s, device=device).view(1, -1) <= q_slot).view(1, 1, j - i, s)
