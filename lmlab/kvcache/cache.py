"""The KV cache: every layer's keys and values for a batch of rows, and the one module that knows
their layout.

Layout: per layer, keys and values are ``[B, KV heads, slots, head dim]``. All rows write their
next token into the same slot (``length``); a row that started later or lost positions is
left-padded, and ``mask`` ([B, slots] bool, True = a real token) says which slots each row may
attend to. ``next_position`` holds each row's next position id, so a padded row computes exactly
what it would alone. With ``capacity`` the buffers are preallocated and written in place (a
static cache; ``growable`` ones reallocate with headroom when full); without, each call
concatenates (the simple path training and scoring use).

A model uses three calls per forward pass: ``begin(t, mask)`` (room, positions and the mask
over all keys), ``append(layer, k, v)`` (store, and get everything to attend over) — or
``layer_inputs``, which also applies what cache policies set up — and ``advance(t)``.
Decoding loops use the row operations: ``select`` (keep, drop, reorder, duplicate rows),
``concat`` (several caches into one batch), ``evict`` (drop positions per row: the hook cache
policies in ``lmlab.kvcache.policies`` use), ``truncate`` (forget each row's last tokens: rejected
speculative drafts) and ``bytes_held``.

What cache policies add (all optional; a cache without them behaves exactly as described above):

* **Per-layer, per-head eviction.** ``evict`` also takes one keep mask per layer, [B, KV, slots of
  that layer]: each (row, layer, head) keeps its own positions (SnapKV, H2O, PyramidKV select per
  head). A layer then has a ``live`` mask [B, KV, slots] and may store fewer slots than the
  cache is wide: layer ``l`` holds the global slots ``offsets[l]`` onward (PyramidKV's small
  layers hold only their budget). The row ``mask`` is then the union over layers and heads.
* **Lazy eviction.** ``evict(..., slack=n)`` only masks the forgotten slots until compacting would
  free at least ``n`` slots; attention never sees masked slots, so the result is exact either
  way and the copy is paid once per ``n`` evicted tokens instead of every step.
* **Per-slot data** (``slot_data``): more tensors laid out like the keys ([B, KV, slots, ...]) that
  every row and slot operation moves with them: ``live`` masks, H2O's accumulated attention
  (``attention``), a quantized cache's scales and group ids.
* **In-cache positions** (StreamingLLM): ``evict(..., reposition=rows)`` closes the gaps it opens
  in those rows' position ids (the next token's position is the number of tokens held). A RoPE
  model's keys keep the rotation they were stored with and are turned by ``shift`` slots when
  read (``rotate``, supplied by the model), which is exact (rotations compose) and leaves
  quantized keys untouched; ALiBi models already measure distance in cache slots.
* **Observations** (``observe``, ``lmlab.kvcache.observe``): what ``layer_inputs`` records about
  attention for policies that score by it (H2O's running sums, SnapKV's observation window,
  TOVA's last query), computed explicitly for those queries only; the attention itself stays on
  the fused path.
* **Quantized storage** (``quant``, ``lmlab.kvcache.quantized``): keys and values kept as int8/int4
  codes (KIVI), dequantized when read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.errors import ConfigError, ModelError

HEADROOM = 64  # slots a growable cache adds beyond what it needs, so most steps reallocate nothing
#: how per-slot data starts in a slot that receives a new token
SLOT_FILL = {"live": True, "attention": 0.0}
#: how the models' position schemes behave when positions are closed up (``evict(reposition=...)``)
POSITION_SCHEMES = ("rotary", "relative", "absolute")

Rotate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class KVCache:
    """Keys and values of ``n_layers`` layers for ``batch_size`` rows (see the module docstring).

    ``positions`` says how the model encodes positions: 'rotary' (RoPE in the keys; ``rotate(keys,
    delta [B, S])`` turns keys by ``delta`` positions), 'relative' (a bias computed from the mask:
    ALiBi, T5) or 'absolute' (added to the embeddings: cached keys cannot be moved).
    """

    def __init__(self, n_layers: int, batch_size: int, *, capacity: int = 0, growable: bool = False,
                 positions: str = "absolute", rotate: Rotate | None = None) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.slot_data: dict[str, list[torch.Tensor | None]] = {}
        self.offsets = [0] * n_layers  # layer l stores global slots offsets[l] onward
        self.mask: torch.Tensor | None = None  # [B, slots] bool; None while no row has padding
        self.next_position: torch.Tensor | None = None  # [B]; None while positions are just slot numbers
        self.shift: torch.Tensor | None = None  # [B, slots] long: positions a key moved back since stored
        self.length = 0
        self.batch_size = batch_size
        self.capacity = capacity
        self.growable = growable
        if positions not in POSITION_SCHEMES:
            raise ConfigError(f"positions must be one of {POSITION_SCHEMES}, got {positions!r}")
        self.positions, self.rotate = positions, rotate
        self.quant: Any = None  # lmlab.kvcache.quantized.QuantizedStorage when codes are stored
        self.observe: Any = None  # lmlab.kvcache.observe.Observation: what layer_inputs records
        self.observed: dict[str, list] = {}  # what it recorded (see lmlab.kvcache.observe)
        self._pending = 0

    @property
    def n_layers(self) -> int:
        return len(self.keys)

    def _like(self, batch_size: int, capacity: int) -> KVCache:
        out = KVCache(self.n_layers, batch_size, capacity=capacity, growable=self.growable,
                      positions=self.positions, rotate=self.rotate)
        out.observe = self.observe
        return out

    def _stores(self) -> list[list[torch.Tensor | None]]:
        """Every per-layer tensor laid out by slot: keys, values and the per-slot data."""
        return [self.keys, self.values, *self.slot_data.values()]

    def _slots(self, layer: int) -> int:
        """Global slots up to ``length`` that layer ``layer`` stores."""
        return self.length - self.offsets[layer]

    # --- what a model calls ---------------------------------------------------------------------
    def begin(self, t: int, attention_mask: torch.Tensor | None, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Make room for ``t`` tokens (``attention_mask`` [B, t]: 1 real, 0 padding); return their
        position ids [B, t] and the mask over every key after them, [B, length + t] (None: all real)."""
        past, b = self.length, self.batch_size
        if self.capacity and past + t > self.capacity:
            if not self.growable:
                raise ModelError(f"the static cache holds {self.capacity} tokens, {past + t} were fed",
                                 "allocate the cache with a larger capacity")
            self.reserve(t)
        if self.shift is not None:
            if self.capacity:
                self.shift[:, past:past + t] = 0
            else:
                self.shift = torch.cat([self.shift[:, :past], self.shift.new_zeros(b, t)], dim=1)
        mask = self.mask
        if attention_mask is None and mask is None:
            self._pending = t
            return torch.arange(past, past + t, device=device).unsqueeze(0).expand(b, t), None
        new = (torch.ones(b, t, dtype=torch.bool, device=device) if attention_mask is None
               else attention_mask.to(device).bool())
        if self.capacity:
            if mask is None:
                mask = torch.ones(b, self.capacity, dtype=torch.bool, device=device)
            mask[:, past:past + t] = new
        else:
            old = mask if mask is not None else torch.ones(b, past, dtype=torch.bool, device=device)
            mask = torch.cat([old[:, :past], new], dim=1)
        start = self.next_position if self.next_position is not None else torch.full(
            (b,), past, dtype=torch.long, device=device)
        positions = (start.unsqueeze(1) + new.long().cumsum(1) - new.long()).clamp(min=0)
        self.mask, self.next_position = mask, positions[:, -1] + new[:, -1].long()
        self._pending = t
        return positions, mask[:, :past + t]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer ``layer``'s keys/values [B, KV, t, D] of the new tokens; return all of its keys
        and values up to them (views of the buffers on a static cache; dequantized, with the new
        ones exact, on a quantized one)."""
        if self.quant is not None:
            return self.quant.append(self, layer, k, v)
        start = self._slots(layer)
        end = start + k.shape[2]
        if self.capacity:
            if self.keys[layer] is None:
                shape = (k.shape[0], k.shape[1], self.capacity - self.offsets[layer], k.shape[3])
                self.keys[layer] = k.new_empty(shape)
                self.values[layer] = v.new_empty(shape)
            keys, values = self.keys[layer], self.values[layer]
            keys[:, :, start:end], values[:, :, start:end] = k, v
            self.fill_slots(layer, start, end)
            return keys[:, :, :end], values[:, :, :end]
        if start and self.keys[layer] is not None:
            k = torch.cat([self.keys[layer][:, :, :start], k], dim=2)
            v = torch.cat([self.values[layer][:, :, :start], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def fill_slots(self, layer: int, start: int, end: int) -> None:
        """Per-slot data of new tokens in layer-local slots [start, end) starts at its ``SLOT_FILL``."""
        for name, store in self.slot_data.items():
            if name in SLOT_FILL and store[layer] is not None:
                store[layer][:, :, start:end] = SLOT_FILL[name]

    def layer_inputs(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     allowed: torch.Tensor | None, bias: torch.Tensor | None,
                     weights: Callable[..., torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """What layer ``layer`` attends with: ``append``'s keys and values, turned by ``shift`` where
        positions were closed up, and ``allowed`` [B|1, 1|H, T, S] / ``bias`` restricted to the slots
        the layer stores and to its live (not evicted) heads. Records the observations ``observe``
        asks for, with ``weights(q, k, allowed=, bias=)`` (the layer's explicit attention weights)."""
        t = k.shape[2]
        k, v = self.append(layer, k, v)
        off = self.offsets[layer]
        if off:
            allowed = allowed[..., off:] if allowed is not None else None
            bias = bias[..., off:] if bias is not None else None
        if self.shift is not None and self.rotate is not None:
            k = self._turned(layer, k)
        live = self.slot_data.get("live", [None] * self.n_layers)[layer]
        if live is not None:
            s = k.shape[2]
            heads = live[:, :, :s].repeat_interleave(q.shape[1] // live.shape[1], dim=1).unsqueeze(2)
            if allowed is None and t > 1:
                allowed = torch.ones(t, s, dtype=torch.bool, device=k.device).tril(s - t).view(1, 1, t, s)
            allowed = heads if allowed is None else allowed & heads
        if self.observe is not None and weights is not None:
            from .observe import record

            record(self, layer, q, k, allowed, bias, weights)
        return k, v, allowed, bias

    def _turned(self, layer: int, k: torch.Tensor) -> torch.Tensor:
        """Keys of rows whose positions were closed up, turned back by their slots' ``shift``."""
        off = self.offsets[layer]
        shift = self.shift[:, off:off + k.shape[2]].to(k.device)
        rows = shift.ne(0).any(dim=1).nonzero().flatten()
        if not rows.numel():
            return k
        k = k.clone()
        k[rows] = self.rotate(k[rows], -shift[rows])
        return k

    def advance(self, t: int) -> None:
        """Every layer has appended its ``t`` new tokens."""
        self.length += t
        self._pending = 0

    # --- what a decoding loop calls -------------------------------------------------------------
    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more tokens (a static cache reallocates, with headroom)."""
        if not self.capacity or self.length + extra <= self.capacity:
            return
        self._resize(self.length + extra + HEADROOM)

    def _resize(self, capacity: int) -> None:
        used = self.length
        for store in self._stores():
            for i, t in enumerate(store):
                if t is not None:
                    fresh = t.new_empty((t.shape[0], t.shape[1], capacity - self.offsets[i], *t.shape[3:]))
                    fresh[:, :, :used - self.offsets[i]] = t[:, :, :used - self.offsets[i]]
                    store[i] = fresh
        if self.mask is not None:
            mask = torch.ones(self.mask.shape[0], capacity, dtype=torch.bool, device=self.mask.device)
            mask[:, :used] = self.mask[:, :used]
            self.mask = mask
        if self.shift is not None:
            shift = self.shift.new_zeros(self.shift.shape[0], capacity)
            shift[:, :used] = self.shift[:, :used]
            self.shift = shift
        self.capacity = capacity

    def select(self, index: torch.Tensor) -> KVCache:
        """A cache whose row i is row ``index[i]`` of this one (copied). Slots no kept row uses any
        more are dropped from the front, so the cache never grows wider than its longest row."""
        index = index.to(torch.long)
        n = int(index.numel())
        first = 0
        if self.mask is not None and n:
            real = self.mask[index.to(self.mask.device), :self.length]
            first = int(real.any(dim=0).long().argmax()) if bool(real.any()) else self.length
        width = self.length - first
        capacity = self.capacity
        if capacity and self.growable:  # keep the room that was reserved, with headroom at least
            capacity = max(capacity - first, width + HEADROOM)
        out = self._like(n, capacity)
        out.length = width
        out.offsets = [max(off - first, 0) for off in self.offsets]
        out.slot_data = {name: [None] * self.n_layers for name in self.slot_data}
        for src, dst in zip(self._stores(), out._stores(), strict=True):
            for i, t in enumerate(src):
                if t is None:
                    continue
                picked = t.index_select(0, index.to(t.device))[:, :, max(first - self.offsets[i], 0):self._slots(i)]
                if out.capacity:
                    buf = picked.new_empty((n, t.shape[1], out.capacity - out.offsets[i], *t.shape[3:]))
                    buf[:, :, :picked.shape[2]] = picked
                    picked = buf
                dst[i] = picked
        if self.mask is not None:
            rows = self.mask.index_select(0, index.to(self.mask.device))[:, first:self.length]
            out.mask = rows if not out.capacity else _padded_mask(rows, out.capacity)
        if self.next_position is not None:
            out.next_position = self.next_position.index_select(0, index.to(self.next_position.device))
        if self.shift is not None:
            rows = self.shift.index_select(0, index.to(self.shift.device))[:, first:self.length]
            out.shift = rows.new_zeros(n, out.capacity or width)
            out.shift[:, :width] = rows
        if self.quant is not None:
            out.quant = self.quant.select(self, index, first)
        if "queries" in self.observed:  # a prompt fed in chunks keeps its observation window
            out.observed["queries"] = [None if q is None else q.index_select(0, index.to(q.device))
                                       for q in self.observed["queries"]]
        return out

    @staticmethod
    def concat(caches: Sequence[KVCache], *, growable: bool = True) -> KVCache:
        """One cache holding the rows of ``caches`` in order, right-aligned at a common slot (rows that
        saw fewer tokens are left-padded), with room to grow."""
        caches = [c for c in caches if c.batch_size]
        if not caches:
            raise ConfigError("nothing to concatenate", "pass at least one cache with rows")
        first = caches[0]
        layers = first.n_layers
        if any(c.n_layers != layers for c in caches):
            raise ModelError("caches of models with different depths cannot share a batch", "batch one model")
        formats = {None if c.quant is None else c.quant.config for c in caches}
        if len(formats) > 1:
            raise ModelError("caches stored in different formats (quantized and not, or different bits) "
                             "cannot share a batch", "use one KV quantization for every request of a batch")
        for c in caches:
            if c.quant is not None:
                c.quant.flush(c)
        width = max(c.length for c in caches)
        b = sum(c.batch_size for c in caches)
        out = first._like(b, width + HEADROOM if growable else width)
        out.growable = growable
        out.observe = _union([c.observe for c in caches])
        out.length = width
        like = next((c.keys[0] for c in caches if c.keys[0] is not None), None)
        if like is None:  # nothing cached yet anywhere
            return out
        device = like.device
        cap = out.capacity or width
        # a layer starts at the earliest slot any source stores in it
        out.offsets = [min(width - c.length + c.offsets[i] for c in caches) for i in range(layers)]
        names = {name for c in caches for name in c.slot_data}
        if any(off for c in caches for off in c.offsets):
            names.add("live")  # a layer that stores fewer slots for some rows masks the rest per layer
        out.slot_data = {name: [None] * layers for name in sorted(names)}
        for i in range(layers):
            _concat_layer(out, caches, i, cap)
        mask = torch.zeros(b, cap, dtype=torch.bool, device=device)
        positions = torch.zeros(b, dtype=torch.long, device=device)
        shifted = any(c.shift is not None for c in caches)
        shift = torch.zeros(b, cap, dtype=torch.long, device=device) if shifted else None
        row = 0
        for c in caches:
            n, m, pad = c.batch_size, c.length, width - c.length
            mask[row:row + n, pad:width] = True if c.mask is None else c.mask[:, :m]
            positions[row:row + n] = (c.next_position if c.next_position is not None
                                      else torch.full((n,), m, dtype=torch.long, device=device))
            if shift is not None and c.shift is not None:
                shift[row:row + n, pad:width] = c.shift[:, :m]
            row += n
        mask[:, width:] = True
        out.mask, out.next_position, out.shift = mask, positions, shift
        if first.quant is not None:
            out.quant = first.quant.concat([c.quant for c in caches])
        return out

    def live(self, layer: int) -> torch.Tensor:
        """Which slots of layer ``layer`` each row and KV head holds, [B, KV, slots of the layer] (bool)."""
        s, off = self._slots(layer), self.offsets[layer]
        heads = self.keys[layer].shape[1] if self.keys[layer] is not None else 1
        device = self.keys[layer].device if self.keys[layer] is not None else None
        rows = (self.mask[:, off:self.length] if self.mask is not None
                else torch.ones(self.batch_size, s, dtype=torch.bool, device=device))
        live = rows.unsqueeze(1).expand(-1, heads, -1)
        store = self.slot_data.get("live", [None] * self.n_layers)[layer]
        return live & store[:, :, :s] if store is not None else live

    def layer_keys(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s keys [B, KV, slots of the layer, D] as attention reads them (dequantized,
        turned back where positions were closed up)."""
        s = self._slots(layer)
        keys = self.quant.read(self, layer, s)[0] if self.quant is not None else self.keys[layer][:, :, :s]
        if self.shift is not None and self.rotate is not None:
            keys = self._turned(layer, keys)
        return keys

    def slot_store(self, name: str, layer: int, dtype: torch.dtype) -> torch.Tensor:
        """Per-slot data ``name`` of layer ``layer`` [B, KV, capacity of the layer], created (at its
        ``SLOT_FILL``) on first use."""
        store = self.slot_data.setdefault(name, [None] * self.n_layers)
        if store[layer] is None:
            k = self.keys[layer]
            if k is None:
                raise ModelError(f"layer {layer} holds nothing yet", "feed the prompt first")
            store[layer] = torch.full((k.shape[0], k.shape[1], k.shape[2]), SLOT_FILL.get(name, 0),
                                      dtype=dtype, device=k.device)
        return store[layer]

    def evict(self, keep: torch.Tensor | Sequence[torch.Tensor], *, reposition: torch.Tensor | None = None,
              slack: int = 0) -> None:
        """Forget the cached positions where ``keep`` is False: [B, length] for every layer and head, or
        one [B, KV, slots of the layer] mask per layer (per-head eviction). Kept positions stay in
        order; once compacting frees at least ``slack`` slots they are moved right-aligned and the
        cache shrinks (before that, forgotten slots are only masked out of attention).

        Position ids are unchanged, so a row continues exactly as if those positions were masked
        out of attention — except the rows flagged in ``reposition`` [B] (bool), whose positions
        are closed up: each kept token moves back by the tokens forgotten before it, and the next
        token takes the position after the last kept one (StreamingLLM's positions in the cache).
        """
        per_layer = isinstance(keep, (list, tuple))
        if per_layer:
            if len(keep) != self.n_layers:
                raise ConfigError(f"keep has {len(keep)} layers, the cache {self.n_layers}",
                                  "pass one mask per layer")
            for i, k in enumerate(keep):
                want = (self.batch_size, self.keys[i].shape[1], self._slots(i))
                if tuple(k.shape) != want:
                    raise ConfigError(f"keep of layer {i} must be {list(want)}, got {list(k.shape)}",
                                      "pass one flag per row, KV head and cached slot of the layer")
        elif keep.shape != (self.batch_size, self.length):
            raise ConfigError(f"keep must be [{self.batch_size}, {self.length}], got {list(keep.shape)}",
                              "pass one flag per row and cached position")
        if reposition is not None and bool(reposition.any()):
            if per_layer:
                raise ConfigError("positions are closed up per row, not per layer and head",
                                  "reposition with a [B, length] keep mask")
            self._close_positions(keep.bool(), reposition.bool())
        if not per_layer and "live" not in self.slot_data and not any(self.offsets):
            keep = keep.bool().to(self.mask.device if self.mask is not None else keep.device)
            if self.mask is None:
                self.mask = _padded_mask(keep, self.capacity) if self.capacity else keep.clone()
                self.next_position = torch.full((self.batch_size,), self.length, dtype=torch.long,
                                                device=keep.device) if self.next_position is None else self.next_position
            else:
                self.mask[:, :self.length] &= keep
        else:
            self._mark_per_layer(keep, per_layer)
        if self.next_position is None:
            self.next_position = torch.full((self.batch_size,), self.length, dtype=torch.long,
                                            device=self.mask.device)
        if self.length - self._compact_width() >= max(slack, 1) or not slack:
            self._compact()

    def _close_positions(self, keep: torch.Tensor, rows: torch.Tensor) -> None:
        if self.positions == "absolute":
            raise ModelError("this model adds absolute positions to its embeddings: cached keys cannot move to "
                             "new positions", "use a policy that keeps position ids (sliding window) or a RoPE/ALiBi model")
        if self.positions == "rotary" and self.rotate is None:
            raise ModelError("the cache was given no rotation for its rotary positions", "create it with rotate=")
        real = (self.mask[:, :self.length] if self.mask is not None
                else torch.ones_like(keep)).to(keep.device)
        dropped = (real & ~keep) & rows.to(keep.device).unsqueeze(1)
        before = dropped.long().cumsum(dim=1)
        if self.shift is None:
            self.shift = torch.zeros(self.batch_size, self.capacity or self.length, dtype=torch.long,
                                     device=keep.device)
        self.shift[:, :self.length] += before
        if self.next_position is None:
            self.next_position = torch.full((self.batch_size,), self.length, dtype=torch.long, device=keep.device)
        self.next_position = self.next_position - dropped.sum(dim=1).to(self.next_position.device)

    def _mark_per_layer(self, keep: torch.Tensor | Sequence[torch.Tensor], per_layer: bool) -> None:
        union = torch.zeros(self.batch_size, self.capacity or self.length, dtype=torch.bool,
                            device=self.keys[0].device)
        for i in range(self.n_layers):
            off, s = self.offsets[i], self._slots(i)
            live = self.live(i)
            wanted = keep[i] if per_layer else keep[:, off:].unsqueeze(1)
            live = live & wanted.to(live.device).bool()
            self.slot_store("live", i, torch.bool)[:, :, :s] = live
            union[:, off:self.length] |= live.any(dim=1)
        if self.mask is None:
            union[:, self.length:] = True
            self.mask = union
        else:
            self.mask[:, :self.length] = union[:, :self.length]

    def _compact_width(self) -> int:
        """The width compacting would leave: the most tokens any row holds in any layer and head."""
        if "live" not in self.slot_data and not any(self.offsets):
            return int(self.real_tokens().max()) if self.batch_size else 0
        return max(int(self.live(i).sum(dim=-1).max()) for i in range(self.n_layers)) if self.batch_size else 0

    def _compact(self) -> None:
        """Move every kept slot right-aligned (per layer and head), drop the freed ones."""
        if self.quant is not None:
            self.quant.flush(self)
        lives = [self.live(i) for i in range(self.n_layers)]
        counts = [live.sum(dim=-1) for live in lives]  # [B, KV] per layer
        width = max(int(c.max()) for c in counts) if self.batch_size else 0
        capacity = width + (self.capacity - self.length) if self.capacity else width
        per_layer = "live" in self.slot_data or any(self.offsets)
        device = self.keys[0].device if self.keys[0] is not None else None
        for i in range(self.n_layers):
            if self.keys[i] is None:
                continue
            live, n = lives[i], counts[i]
            layer_width = int(n.max()) if per_layer else width
            offset = width - layer_width
            dest = layer_width - n.unsqueeze(-1) + live.long().cumsum(dim=-1) - 1
            b, h, cols = live.nonzero(as_tuple=True)
            slots = dest[b, h, cols]
            for store in self._stores():
                t = store[i]
                if t is None:
                    continue
                fresh = t.new_zeros((t.shape[0], t.shape[1], capacity - offset, *t.shape[3:]))
                fresh[b, h, slots] = t[b, h, cols]
                store[i] = fresh
            if per_layer:
                kept = torch.zeros(self.batch_size, live.shape[1], capacity - offset, dtype=torch.bool, device=device)
                kept[b, h, slots] = True
                kept[:, :, layer_width:] = True
                self.slot_data["live"][i] = kept
            self.offsets[i] = offset
        held = torch.stack([c.max(dim=1).values for c in counts]).max(dim=0).values  # [B]: the row's widest
        mask = torch.arange(capacity, device=held.device).unsqueeze(0) >= (width - held).unsqueeze(1)
        if self.shift is not None:
            rows = self.shift[:, :self.length].ne(0).any(dim=1)
            real = self.mask[:, :self.length] if self.mask is not None else None
            shift = self.shift.new_zeros(self.batch_size, capacity)
            if real is not None and bool(rows.any()):
                dest = width - real.sum(dim=1, keepdim=True) + real.long().cumsum(dim=1) - 1
                r, cols = (real & rows.unsqueeze(1)).nonzero(as_tuple=True)
                shift[r, dest[r, cols]] = self.shift[r, cols]
            self.shift = shift
        self.mask, self.length = mask, width
        if self.capacity:
            self.capacity = capacity
        if self.quant is not None:
            self.quant.compacted(self)
        self.observed.pop("window", None)
        self.observed.pop("last", None)

    def truncate(self, drop: Sequence[int] | torch.Tensor) -> None:
        """Forget each row's last ``drop[i]`` real tokens, as if they had never been fed: speculative
        decoding takes back the draft tokens the target rejected. Slots no row uses any more are freed
        from the end; a row that forgets more than another leaves masked slots behind (holes, like
        left padding), and when holes outnumber real tokens the cache is compacted with ``evict``."""
        drop = torch.as_tensor(drop, dtype=torch.long).reshape(-1).cpu()
        if self.quant is not None or self.shift is not None or "live" in self.slot_data or any(self.offsets):
            raise ConfigError("a cache under an eviction policy or quantization cannot take tokens back",
                              "run speculative decoding without a KV-cache policy")
        if drop.numel() != self.batch_size:
            raise ConfigError(f"drop must give one count per row ({self.batch_size}), got {drop.numel()}",
                              "pass how many tokens each row forgets")
        real = self.real_tokens()
        if bool((drop < 0).any()) or bool((drop > real).any()):
            raise ConfigError(f"cannot forget {drop.tolist()} tokens of rows holding {real.tolist()}",
                              "forget at most the tokens each row holds")
        if not bool(drop.any()):
            self._compact_holes()
            return
        if self.mask is None and bool((drop == drop[0]).all()):  # every slot real, same count: shorten
            self.length -= int(drop[0])
            if self.next_position is not None:
                self.next_position = self.next_position - drop.to(self.next_position.device)
            return
        device = self.keys[0].device if self.keys[0] is not None else torch.device("cpu")
        length = self.length
        if self.mask is None:
            self.mask = torch.ones(self.batch_size, self.capacity or length, dtype=torch.bool, device=device)
        if self.next_position is None:
            self.next_position = torch.full((self.batch_size,), length, dtype=torch.long, device=device)
        used = self.mask[:, :length]
        after = used.flip(1).long().cumsum(1).flip(1)  # real tokens at or after each slot
        used &= ~(used & (after <= drop.to(device).unsqueeze(1)))
        self.next_position = self.next_position - drop.to(self.next_position.device)
        live = used.any(dim=0).nonzero()
        self.length = int(live[-1]) + 1 if live.numel() else 0
        self.mask[:, self.length:] = True  # slots beyond the length are free: new tokens set them
        self._compact_holes()

    def _compact_holes(self) -> None:
        """Evict the holes when they outnumber the longest row's real tokens."""
        if self.mask is not None and self.batch_size and self.length > 2 * int(self.real_tokens().max()) + HEADROOM:
            self.evict(self.mask[:, :self.length])

    def bytes_held(self) -> int:
        """Bytes of the tensors this cache holds now (keys, values, per-slot data, masks, positions,
        quantization tables), allocated slots included."""
        tensors = [t for store in self._stores() for t in store if t is not None]
        tensors += [t for t in (self.mask, self.next_position, self.shift) if t is not None]
        held = sum(t.numel() * t.element_size() for t in tensors)
        return held + (self.quant.bytes_held() if self.quant is not None else 0)

    def real_tokens(self) -> torch.Tensor:
        """How many real (not padding, not evicted) tokens each row holds, [B] (per-head eviction: the
        slots any layer and head of the row still uses)."""
        if self.mask is None:
            return torch.full((self.batch_size,), self.length, dtype=torch.long)
        return self.mask[:, :self.length].sum(dim=1).cpu()


def _concat_layer(out: KVCache, caches: Sequence[KVCache], i: int, cap: int) -> None:
    """Layer ``i`` of ``concat``: every slot-laid tensor of the sources placed right-aligned."""
    width, off = out.length, out.offsets[i]
    row = 0
    stores = {"keys": out.keys, "values": out.values, **out.slot_data}
    for c in caches:
        n, start = c.batch_size, width - c.length + c.offsets[i] - off  # where its stored slots begin
        held = c.length - c.offsets[i]
        sources = {"keys": c.keys[i], "values": c.values[i],
                   **{name: c.slot_data[name][i] for name in c.slot_data}}
        for name, dst in stores.items():
            t = sources.get(name)
            like = t if t is not None else next((s.keys[i] for s in caches if s.keys[i] is not None), None)
            if like is None:
                continue
            if dst[i] is None:
                template = next((s.slot_data[name][i] for s in caches
                                 if name in s.slot_data and s.slot_data[name][i] is not None), None)
                if name in ("keys", "values"):
                    template = like
                if template is None and name != "live":
                    continue
                if name == "live":
                    shape, dtype = (out.batch_size, like.shape[1], cap - off), torch.bool
                else:
                    shape, dtype = (out.batch_size, template.shape[1], cap - off, *template.shape[3:]), template.dtype
                dst[i] = torch.zeros(shape, dtype=dtype, device=like.device)
                if name == "live":
                    dst[i][:, :, width - off:] = True
            if t is not None:
                dst[i][row:row + n, :, start:start + held] = t[:, :, :held]
            elif name == "live":
                dst[i][row:row + n, :, start:start + held] = True
        row += n


def _union(observations: Sequence[Any]) -> Any:
    present = [o for o in observations if o is not None]
    if not present:
        return None
    out = present[0]
    for o in present[1:]:
        out = out | o
    return out


def _padded_mask(rows: torch.Tensor, capacity: int) -> torch.Tensor:
    mask = torch.ones(rows.shape[0], capacity, dtype=torch.bool, device=rows.device)
    mask[:, :rows.shape[1]] = rows
    return mask
