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
over all keys), ``append(layer, k, v)`` (store, and get everything to attend over), ``advance(t)``.
Decoding loops use the row operations: ``select`` (keep, drop, reorder, duplicate rows),
``concat`` (several caches into one batch), ``evict`` (drop positions per row: the hook cache
policies use), ``truncate`` (forget each row's last tokens: rejected speculative drafts) and
``bytes_held``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import ConfigError, ModelError

HEADROOM = 64  # slots a growable cache adds beyond what it needs, so most steps reallocate nothing


class KVCache:
    """Keys and values of ``n_layers`` layers for ``batch_size`` rows (see the module docstring)."""

    def __init__(self, n_layers: int, batch_size: int, *, capacity: int = 0, growable: bool = False) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.mask: torch.Tensor | None = None  # [B, slots] bool; None while no row has padding
        self.next_position: torch.Tensor | None = None  # [B]; None while positions are just slot numbers
        self.length = 0
        self.batch_size = batch_size
        self.capacity = capacity
        self.growable = growable
        self._pending = 0

    @property
    def n_layers(self) -> int:
        return len(self.keys)

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
        and values up to them (views of the buffers on a static cache)."""
        past = self.length
        end = past + k.shape[2]
        if self.capacity:
            if self.keys[layer] is None:
                shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
                self.keys[layer] = k.new_empty(shape)
                self.values[layer] = v.new_empty(shape)
            keys, values = self.keys[layer], self.values[layer]
            keys[:, :, past:end], values[:, :, past:end] = k, v
            return keys[:, :, :end], values[:, :, :end]
        if past and self.keys[layer] is not None:
            k = torch.cat([self.keys[layer][:, :, :past], k], dim=2)
            v = torch.cat([self.values[layer][:, :, :past], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

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
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                if t is not None:
                    fresh = t.new_empty((t.shape[0], t.shape[1], capacity, t.shape[3]))
                    fresh[:, :, :used] = t[:, :, :used]
                    store[i] = fresh
        if self.mask is not None:
            mask = torch.ones(self.mask.shape[0], capacity, dtype=torch.bool, device=self.mask.device)
            mask[:, :used] = self.mask[:, :used]
            self.mask = mask
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
        out = KVCache(self.n_layers, n, capacity=capacity, growable=self.growable)
        out.length = width
        for src, dst in ((self.keys, out.keys), (self.values, out.values)):
            for i, t in enumerate(src):
                if t is None:
                    continue
                picked = t.index_select(0, index.to(t.device))[:, :, first:self.length]
                if out.capacity:
                    buf = picked.new_empty((n, t.shape[1], out.capacity, t.shape[3]))
                    buf[:, :, :width] = picked
                    picked = buf
                dst[i] = picked
        if self.mask is not None:
            rows = self.mask.index_select(0, index.to(self.mask.device))[:, first:self.length]
            out.mask = rows if not out.capacity else _padded_mask(rows, out.capacity)
        if self.next_position is not None:
            out.next_position = self.next_position.index_select(0, index.to(self.next_position.device))
        return out

    @staticmethod
    def concat(caches: Sequence[KVCache], *, growable: bool = True) -> KVCache:
        """One cache holding the rows of ``caches`` in order, right-aligned at a common slot (rows that
        saw fewer tokens are left-padded), with room to grow."""
        caches = [c for c in caches if c.batch_size]
        if not caches:
            raise ConfigError("nothing to concatenate", "pass at least one cache with rows")
        layers = caches[0].n_layers
        if any(c.n_layers != layers for c in caches):
            raise ModelError("caches of models with different depths cannot share a batch", "batch one model")
        width = max(c.length for c in caches)
        b = sum(c.batch_size for c in caches)
        out = KVCache(layers, b, capacity=width + HEADROOM if growable else width, growable=growable)
        out.length = width
        like = next((c.keys[0] for c in caches if c.keys[0] is not None), None)
        if like is None:  # nothing cached yet anywhere
            return out
        device = like.device
        mask = torch.zeros(b, out.capacity or width, dtype=torch.bool, device=device)
        positions = torch.zeros(b, dtype=torch.long, device=device)
        row = 0
        for c in caches:
            n, m, shift = c.batch_size, c.length, width - c.length
            for src, dst in ((c.keys, out.keys), (c.values, out.values)):
                for i, t in enumerate(src):
                    if t is None:
                        continue
                    if dst[i] is None:
                        dst[i] = t.new_zeros((b, t.shape[1], out.capacity or width, t.shape[3]))
                    dst[i][row:row + n, :, shift:width] = t[:, :, :m]
            mask[row:row + n, shift:width] = True if c.mask is None else c.mask[:, :m]
            positions[row:row + n] = (c.next_position if c.next_position is not None
                                      else torch.full((n,), m, dtype=torch.long, device=device))
            row += n
        mask[:, width:] = True
        out.mask, out.next_position = mask, positions
        return out

    def evict(self, keep: torch.Tensor) -> None:
        """Forget, per row, the cached positions where ``keep`` [B, length] is False: the kept ones are
        moved right-aligned (order kept) and the cache shrinks to the longest row. Position ids are
        unchanged, so a row continues exactly as if those positions were masked out of attention."""
        if keep.shape != (self.batch_size, self.length):
            raise ConfigError(f"keep must be [{self.batch_size}, {self.length}], got {list(keep.shape)}",
                              "pass one flag per row and cached position")
        keep = keep.bool()
        if self.mask is not None:
            keep = keep & self.mask[:, :self.length].to(keep.device)
        counts = keep.sum(dim=1)
        width = int(counts.max()) if self.batch_size else 0
        # destination slot of each kept position: right-aligned, in order
        dest = width - counts.unsqueeze(1) + keep.long().cumsum(dim=1) - 1
        rows, cols = keep.nonzero(as_tuple=True)
        slots = dest[rows, cols]
        # the evicted slots are freed; the room left for new tokens stays what it was
        capacity = width + (self.capacity - self.length) if self.capacity else width
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                if t is None:
                    continue
                fresh = t.new_zeros((t.shape[0], t.shape[1], capacity, t.shape[3]))
                fresh[rows, :, slots] = t[rows, :, cols]
                store[i] = fresh
        mask = torch.zeros(self.batch_size, capacity, dtype=torch.bool, device=keep.device)
        mask[rows, slots] = True
        mask[:, width:] = True
        if self.next_position is None:
            self.next_position = torch.full((self.batch_size,), self.length, dtype=torch.long, device=keep.device)
        self.mask, self.length = mask, width
        if self.capacity:
            self.capacity = capacity

    def truncate(self, drop: Sequence[int] | torch.Tensor) -> None:
        """Forget each row's last ``drop[i]`` real tokens, as if they had never been fed: speculative
        decoding takes back the draft tokens the target rejected. Slots no row uses any more are freed
        from the end; a row that forgets more than another leaves masked slots behind (holes, like
        left padding), and when holes outnumber real tokens the cache is compacted with ``evict``."""
        drop = torch.as_tensor(drop, dtype=torch.long).reshape(-1).cpu()
        if drop.numel() != self.batch_size:
            raise ConfigError(f"drop must give one count per row ({self.batch_size}), got {drop.numel()}",
                              "pass how many tokens each row forgets")
        real = self.real_tokens()
        if bool((drop < 0).any()) or bool((drop > real).any()):
            raise ConfigError(f"cannot forget {drop.tolist()} tokens of rows holding {real.tolist()}",
                              "forget at most the tokens each row holds")
        if not bool(drop.any()):
            self._compact()
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
        self._compact()

    def _compact(self) -> None:
        """Evict the holes when they outnumber the longest row's real tokens."""
        if self.mask is not None and self.batch_size and self.length > 2 * int(self.real_tokens().max()) + HEADROOM:
            self.evict(self.mask[:, :self.length])

    def bytes_held(self) -> int:
        """Bytes of the tensors this cache holds now (keys, values, mask), allocated slots included."""
        tensors = [t for t in self.keys + self.values if t is not None]
        tensors += [t for t in (self.mask, self.next_position) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def real_tokens(self) -> torch.Tensor:
        """How many real (not padding) tokens each row holds, [B]."""
        if self.mask is None:
            return torch.full((self.batch_size,), self.length, dtype=torch.long)
        return self.mask[:, :self.length].sum(dim=1).cpu()


def _padded_mask(rows: torch.Tensor, capacity: int) -> torch.Tensor:
    mask = torch.ones(rows.shape[0], capacity, dtype=torch.bool, device=rows.device)
    mask[:, :rows.shape[1]] = rows
    return mask
