"""Segment-level recurrence (Dai et al. 2019, "Transformer-XL") and compressive memory (Rae et al.
2019, "Compressive Transformers for Long-Range Sequence Modelling").

A long text is read in segments. Each layer keeps the inputs it saw for the last
``memory_length`` tokens (no gradient flows into them: the trainer carries the memory across
batches detached, as truncated BPTT carries an RNN's state); the next segment's queries attend
over keys and values projected from [memory; segment] with the current weights, so information
moves forward one segment per layer beyond the segment length. Positions must be relative
(RoPE, ALiBi, T5's bias): the memory sits at positions 0…M-1 and the segment after it, so a
token's distance to every key is what it would be in one long sequence.

The Compressive Transformer keeps what falls out of the memory instead of dropping it: the
evicted layer inputs are compressed ``compression_rate`` to one by each layer's compression
function (``lmlab.models.memory_compression``: mean or max pooling, or a strided convolution trained
by the attention-reconstruction loss) into a compressed memory of ``compressed_memory`` slots that
is attended over in front of the memory. The memory carries no gradient: what it holds is stored
detached.

The memory a model returns is a pair of tensors (inputs [L, B, M', d], compressed [L, B, C', d]),
so truncated-BPTT training (``lmlab.train.objectives.CausalLM(carry_state=True)``) detaches and
checkpoints it like an RNN's state. With memory ≥ everything read so far and no compression
(or a rate of 1), reading segment by segment gives exactly the logits of one full forward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ModelError
from .memory_compression import reconstruction_loss
from .positions import apply_rope, rope_angles

Memory = tuple[torch.Tensor, torch.Tensor]


class SegmentMemory:
    """The state a model with ``memory_length`` reads a segment with: it answers the cache calls
    ``hidden_states`` makes (``begin``, ``layer_inputs``, ``advance``) from the stored layer inputs."""

    def __init__(self, model: Any, memory: Memory | None, batch_size: int) -> None:
        cfg = model.config
        self.blocks, self.config = model.blocks, cfg
        if memory is None:
            empty = model.embed.weight.new_zeros(cfg.n_layers, batch_size, 0, cfg.d_model)
            memory = (empty, empty)
        inputs, compressed = memory
        if inputs.shape[:2] != (cfg.n_layers, batch_size) or compressed.shape[:2] != (cfg.n_layers, batch_size):
            raise ModelError(f"the memory is shaped {list(inputs.shape)}, the model has {cfg.n_layers} layers and "
                             f"the batch {batch_size} rows", "carry the memory of the same model and batch")
        self.inputs, self.compressed = list(inputs.unbind(0)), list(compressed.unbind(0))
        self.length = compressed.shape[2] + inputs.shape[2]
        self.batch_size, self.capacity = batch_size, 0
        self._new: list[torch.Tensor | None] = [None] * cfg.n_layers

    def begin(self, t: int, attention_mask: torch.Tensor | None, device: torch.device
              ) -> tuple[torch.Tensor, None]:
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ModelError("segment recurrence reads contiguous text: padded rows are not supported",
                             "feed rows of equal length without an attention mask")
        return torch.arange(self.length, self.length + t, device=device).unsqueeze(0).expand(self.batch_size, t), None

    def record(self, layer: int, x: torch.Tensor) -> None:
        """Layer ``layer``'s input for the new segment (what the next segment's memory holds)."""
        self._new[layer] = x

    def layer_inputs(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     allowed: torch.Tensor | None, bias: torch.Tensor | None, weights: Any = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The segment's keys/values after those projected from [compressed; memory] by this layer."""
        if not self.length:
            return k, v, allowed, bias
        block, cfg = self.blocks[layer], self.config
        held = torch.cat([self.compressed[layer], self.inputs[layer]], dim=1).to(k.dtype)
        _, mk, mv = block.attn.project(block.attn_norm(held) if block.pre else held)
        if cfg.positions == "rope":
            cos, sin = rope_angles(torch.arange(self.length, device=k.device), cfg.head_dim, cfg.rope_theta,
                                   cfg.rope_scaling, cfg.rope_scaling_type, cfg.rope_original_context)
            mk = apply_rope(mk, cos.to(mk.dtype), sin.to(mk.dtype))
        return torch.cat([mk, k], dim=2), torch.cat([mv, v], dim=2), allowed, bias

    def advance(self, t: int) -> None:
        """Shift the segment into the memory; what leaves it is compressed (or dropped)."""
        cfg = self.config
        for i, new in enumerate(self._new):
            if new is None:
                raise ModelError("a layer fed no input to the memory", "call every layer once per segment")
            seq = torch.cat([self.inputs[i], new], dim=1)
            kept = max(seq.shape[1] - cfg.memory_length, 0)
            self.inputs[i], evicted = seq[:, kept:], seq[:, :kept]
            if cfg.compressed_memory:
                compression = self.blocks[i].compression
                compression.last_loss = None
                if evicted.shape[1]:
                    pooled = compression(evicted.detach())
                    if compression.learned and torch.is_grad_enabled():  # trains f_c (the trainer's auxiliary loss)
                        compression.last_loss = reconstruction_loss(self.blocks[i], new, evicted, pooled)
                    self.compressed[i] = torch.cat([self.compressed[i], pooled.detach()], dim=1)
                self.compressed[i] = self.compressed[i][:, -cfg.compressed_memory:]
            else:
                self.compressed[i] = self.compressed[i][:, :0]
        self.length = self.compressed[0].shape[1] + self.inputs[0].shape[1]
        self._new = [None] * cfg.n_layers

    def tensors(self) -> Memory:
        """The memory as (layer inputs [L, B, M', d], compressed [L, B, C', d])."""
        return torch.stack(self.inputs), torch.stack(self.compressed)
