"""A quantized KV cache as in KIVI (Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit
Quantization for KV Cache"): keys and values stored as int8 or int4 codes with an asymmetric
(min, scale) pair per group, dequantized when attention reads them.

KIVI quantizes keys **per channel** (outliers live in a few channels, so each channel of a group
of ``group`` tokens gets its own range) and values **per token** (each token's channels share a
range). A per-channel group needs its tokens first, so the newest tokens wait in full precision
(the residual, at most ``group`` tokens — KIVI keeps the same residual for values) and are
quantized together once ``group`` of them arrived. Either tensor may use either axis; with both
per token nothing waits and every token is quantized as it arrives.

Storage: codes replace the cache's keys/values ([B, KV, slots, D] uint8; int4 packs two codes per
byte, [B, KV, slots, D/2]). Ranges are float16 (as in KIVI). Per-token ranges are per-slot data
(``<kind>_params`` [B, KV, slots, 2]: scale, minimum); per-channel ranges live in a table per layer
([B, KV, groups, 2, D]) and every
slot carries its group id (``<kind>_group``), so evicting a slot never invalidates the range of
the others — quantization stacks on every eviction policy, and codes are never requantized.
Every element comes back within half a step of its value: |x − x̂| ≤ scale / 2, scale ≈
(max − min) / (2^bits − 1) over its group (the stored scale, rounded up to float16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_choice, check_number

if TYPE_CHECKING:
    from .cache import KVCache

AXES = ("token", "channel")
KINDS = ("key", "value")


@dataclass(frozen=True)
class KVQuantization:
    """How the cache is quantized: ``bits`` (8 or 4), each tensor's axis, tokens per per-channel group."""

    bits: int = 8
    key_axis: str = "channel"
    value_axis: str = "token"
    group: int = 32

    def __post_init__(self) -> None:
        check_choice("kv quantization bits", self.bits, (8, 4))
        check_choice("key axis", self.key_axis, AXES)
        check_choice("value axis", self.value_axis, AXES)
        check_number("kv quantization group", self.group, low=1, integer=True)

    @property
    def residual(self) -> int:
        """Tokens held in full precision before quantization (0 when every axis is per token)."""
        return self.group if "channel" in (self.key_axis, self.value_axis) else 0

    def axis(self, kind: str) -> str:
        return self.key_axis if kind == "key" else self.value_axis


def quantize(x: torch.Tensor, bits: int, dim: int, real: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (uint8, unpacked), scale and minimum (float16, as KIVI stores them) of ``x`` with one range
    along ``dim`` (kept as size 1); ``real`` (broadcastable bool) leaves padding out of the ranges. The
    minimum is rounded down and the scale up, so the stored range still covers every value and each
    comes back within half a stored step."""
    levels = 2 ** bits - 1
    xf = x.float()
    if real is None:
        lo, hi = xf.amin(dim, keepdim=True), xf.amax(dim, keepdim=True)
    else:
        lo = torch.where(real, xf, torch.inf).amin(dim, keepdim=True)
        hi = torch.where(real, xf, -torch.inf).amax(dim, keepdim=True)
        empty = ~torch.isfinite(lo)
        lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
    low = _half(lo, down=True)
    scale = _half(((hi - low.float()) / levels).clamp(min=2.0 ** -24), down=False)
    codes = ((xf - low.float()) / scale.float()).round().clamp(0, levels).to(torch.uint8)
    return codes, scale, low


def _half(x: torch.Tensor, *, down: bool) -> torch.Tensor:
    """``x`` as float16, rounded towards −∞ (``down``) or +∞."""
    if bool((x.abs() > torch.finfo(torch.float16).max / 2).any()):
        raise ModelError("a cached key or value is too large for a float16 quantization range",
                         "leave --kv-quant out for this model")
    half = x.half()
    wrong = half.float() > x if down else half.float() < x
    return torch.where(wrong, torch.nextafter(half, torch.tensor(-torch.inf if down else torch.inf,
                                                                  dtype=torch.float16)), half)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """int4: two codes per byte along the last dimension (low nibble first)."""
    if bits == 8:
        return codes
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack(stored: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return stored
    return torch.stack([stored & 15, stored >> 4], dim=-1).flatten(-2)


class QuantizedStorage:
    """The quantization state of one cache: per-channel range tables and the full-precision residual
    per layer (the codes and per-slot ranges are the cache's own slot data)."""

    def __init__(self, config: KVQuantization, n_layers: int) -> None:
        self.config = config
        self.tables: dict[str, list[torch.Tensor | None]] = {kind: [None] * n_layers for kind in KINDS}
        self.residual: dict[str, list[torch.Tensor | None]] = {kind: [None] * n_layers for kind in KINDS}
        self.dtype: torch.dtype | None = None

    # --- writing ---------------------------------------------------------------------------------
    def append(self, cache: KVCache, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``KVCache.append`` for a quantized cache: the new tokens join the residual, whole groups are
        quantized; returns every key/value of the layer (stored ones dequantized, the rest exact)."""
        if not cache.capacity:
            raise ModelError("a quantized KV cache needs preallocated slots", "create it with a capacity")
        if k.shape[-1] % 2 and self.config.bits == 4:
            raise ConfigError(f"int4 packs two channels per byte; the head dimension {k.shape[-1]} is odd",
                              "use --kv-quant int8")
        self.dtype = k.dtype
        start = cache._slots(layer)
        if cache.keys[layer] is None:
            self._allocate(cache, layer, k)
        held = self.residual["key"][layer]
        r = 0 if held is None else held.shape[2]
        pending = {"key": k, "value": v}
        if r:
            pending = {kind: torch.cat([self.residual[kind][layer].to(x.dtype), x], dim=2)
                       for kind, x in pending.items()}
        n = pending["key"].shape[2]
        group = self.config.residual
        ready = n if not group else (n // group) * group
        if ready:
            self._write(cache, layer, start - r, {kind: x[:, :, :ready] for kind, x in pending.items()})
        for kind, x in pending.items():
            self.residual[kind][layer] = x[:, :, ready:] if ready < n else None
        cache.fill_slots(layer, start, start + k.shape[2])
        stored = self.read_codes(cache, layer, start - r)
        return tuple(torch.cat([old.to(x.dtype), x], dim=2) for old, x in
                     zip(stored, (pending["key"], pending["value"]), strict=True))

    def _allocate(self, cache: KVCache, layer: int, like: torch.Tensor) -> None:
        b, heads, _, d = like.shape
        slots = cache.capacity - cache.offsets[layer]
        width = d if self.config.bits == 8 else d // 2
        for kind, store in (("key", cache.keys), ("value", cache.values)):
            store[layer] = torch.zeros(b, heads, slots, width, dtype=torch.uint8, device=like.device)
            if self.config.axis(kind) == "token":
                data = cache.slot_data.setdefault(f"{kind}_params", [None] * cache.n_layers)
                data[layer] = torch.zeros(b, heads, slots, 2, dtype=torch.float16, device=like.device)
            else:
                data = cache.slot_data.setdefault(f"{kind}_group", [None] * cache.n_layers)
                data[layer] = torch.zeros(b, heads, slots, dtype=torch.int32, device=like.device)
                self.tables[kind][layer] = torch.zeros(b, heads, 0, 2, d, dtype=torch.float16, device=like.device)

    def _write(self, cache: KVCache, layer: int, start: int, chunks: dict[str, torch.Tensor]) -> None:
        """Quantize ``chunks`` (keys/values [B, KV, n, D]) into layer-local slots [start, start + n)."""
        bits, size = self.config.bits, self.config.group
        n = chunks["key"].shape[2]
        off = cache.offsets[layer]
        real = (cache.mask[:, off + start:off + start + n] if cache.mask is not None
                else torch.ones(cache.batch_size, n, dtype=torch.bool))
        real = real.to(chunks["key"].device).view(real.shape[0], 1, n, 1)
        store = {"key": cache.keys, "value": cache.values}
        for kind, x in chunks.items():
            if self.config.axis(kind) == "token":
                codes, scale, lo = quantize(x, bits, dim=-1)
                cache.slot_data[f"{kind}_params"][layer][:, :, start:start + n] = torch.cat([scale, lo], dim=-1)
            else:  # groups of `size` tokens (the last may be shorter), one range per channel each
                table = self.tables[kind][layer]
                codes_parts, ranges = [], []
                ids = torch.empty(x.shape[0], x.shape[1], n, dtype=torch.int32, device=x.device)
                for g, a in enumerate(range(0, n, size)):
                    part, ok = x[:, :, a:a + size], real[:, :, a:a + size]
                    codes, scale, lo = quantize(part, bits, dim=2, real=ok)
                    codes_parts.append(codes)
                    ranges.append(torch.cat([scale, lo], dim=2))  # [B, KV, 2, D]
                    ids[:, :, a:a + size] = table.shape[2] + g
                codes = torch.cat(codes_parts, dim=2)
                self.tables[kind][layer] = torch.cat([table, torch.stack(ranges, dim=2)], dim=2)
                cache.slot_data[f"{kind}_group"][layer][:, :, start:start + n] = ids
            store[kind][layer][:, :, start:start + n] = pack(codes, bits)

    def flush(self, cache: KVCache) -> None:
        """Quantize every layer's residual now (a shorter last group), before rows or slots move."""
        for layer in range(cache.n_layers):
            held = self.residual["key"][layer]
            if held is None:
                continue
            r = held.shape[2]
            self._write(cache, layer, cache._slots(layer) - r,
                        {kind: self.residual[kind][layer] for kind in KINDS})
            for kind in KINDS:
                self.residual[kind][layer] = None

    # --- reading ---------------------------------------------------------------------------------
    def read_codes(self, cache: KVCache, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantized keys and values of layer-local slots [0, end) (all stored as codes)."""
        out = []
        for kind, store in (("key", cache.keys), ("value", cache.values)):
            codes = unpack(store[layer][:, :, :end], self.config.bits).float()
            if self.config.axis(kind) == "token":
                params = cache.slot_data[f"{kind}_params"][layer][:, :, :end]
                x = codes * params[..., :1].float() + params[..., 1:].float()
            else:
                table = self.tables[kind][layer]
                if not table.shape[2]:
                    x = torch.zeros_like(codes)
                else:
                    ids = cache.slot_data[f"{kind}_group"][layer][:, :, :end].long().clamp(0, table.shape[2] - 1)
                    index = ids.view(*ids.shape, 1, 1).expand(-1, -1, -1, 2, table.shape[-1])
                    ranges = table.gather(2, index)  # [B, KV, end, 2, D]
                    x = codes * ranges[..., 0, :].float() + ranges[..., 1, :].float()
            out.append(x.to(self.dtype or torch.float32))
        return out[0], out[1]

    def read(self, cache: KVCache, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of layer-local slots [0, end) as attention reads them (residual exact)."""
        held = self.residual["key"][layer]
        r = 0 if held is None else held.shape[2]
        keys, values = self.read_codes(cache, layer, end - r)
        if r:  # the residual's slots hold no codes yet
            keys = torch.cat([keys, self.residual["key"][layer].to(keys.dtype)], dim=2)
            values = torch.cat([values, self.residual["value"][layer].to(values.dtype)], dim=2)
        return keys, values

    # --- rows and slots --------------------------------------------------------------------------
    def select(self, cache: KVCache, index: torch.Tensor, first: int) -> QuantizedStorage:
        """The storage of ``cache.select(index)`` (which drops the first ``first`` slots)."""
        out = QuantizedStorage(self.config, cache.n_layers)
        out.dtype = self.dtype
        width = cache.length - first
        for kind in KINDS:
            for layer, table in enumerate(self.tables[kind]):
                if table is not None:
                    out.tables[kind][layer] = table.index_select(0, index.to(table.device))
            for layer, held in enumerate(self.residual[kind]):
                if held is not None:
                    out.residual[kind][layer] = held.index_select(0, index.to(held.device))[:, :, -width:] \
                        if width else None
        return out

    def concat(self, storages: list[QuantizedStorage]) -> QuantizedStorage:
        """The storage of concatenated caches (each flushed first): range tables padded to one length."""
        out = QuantizedStorage(self.config, len(self.tables["key"]))
        out.dtype = self.dtype
        for kind in KINDS:
            for layer in range(len(self.tables[kind])):
                tables = [s.tables[kind][layer] for s in storages]
                if all(t is None for t in tables):
                    continue
                if any(t is None for t in tables):
                    raise ModelError("a cache without stored tokens in a layer cannot join a quantized batch",
                                     "prefill every request before batching it")
                groups = max(t.shape[2] for t in tables)
                padded = [torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], groups - t.shape[2], *t.shape[3:])],
                                    dim=2) for t in tables]
                out.tables[kind][layer] = torch.cat(padded)
        return out

    def compacted(self, cache: KVCache) -> None:
        """After ``cache`` moved its slots: drop the range groups no kept slot points to any more."""
        for kind in KINDS:
            for layer, table in enumerate(self.tables[kind]):
                if table is None or not table.shape[2]:
                    continue
                ids = cache.slot_data[f"{kind}_group"][layer]
                b, h, s = cache.live(layer).nonzero(as_tuple=True)
                used = torch.zeros(table.shape[:3], dtype=torch.bool, device=table.device)
                used[b, h, ids[b, h, s].long()] = True
                rank = used.long().cumsum(dim=2) - 1
                kept = int(used.sum(dim=2).max())
                fresh = table.new_zeros(table.shape[0], table.shape[1], max(kept, 1), *table.shape[3:])
                b, h, g = used.nonzero(as_tuple=True)  # every (row, head) keeps its groups in order
                fresh[b, h, rank[b, h, g]] = table[b, h, g]
                self.tables[kind][layer] = fresh
                remapped = rank.gather(2, ids.long().clamp(max=table.shape[2] - 1)).clamp(min=0)
                cache.slot_data[f"{kind}_group"][layer] = remapped.to(torch.int32)

    def bytes_held(self) -> int:
        tensors = [t for store in (*self.tables.values(), *self.residual.values()) for t in store if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)
