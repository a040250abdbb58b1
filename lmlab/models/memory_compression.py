"""The compression functions of the Compressive Transformer (Rae et al. 2020, "Compressive
Transformers for Long-Range Sequence Modelling", §3.1–3.2) and its attention-reconstruction loss.

What falls out of a layer's memory (n old layer inputs) is compressed ``rate`` to one before it
joins the compressed memory:

* ``mean`` / ``max`` — mean or max pooling with kernel and stride c (no parameters, no loss);
* ``conv`` — a 1-D convolution with kernel and stride c over the d_model channels (the paper's
  best function with the dilated one). It starts as mean pooling (every tap I/c: with c = 1 the
  identity) and is trained only by the attention-reconstruction loss

      L = ‖attn(h, old) − attn(h, f_c(old))‖²  (mean over elements, summed over layers, × weight)

  where h is the layer's input for the current segment and attn the layer's own content-based
  attention (its query/key/value projections, no position terms) of h's queries over the memories'
  keys and values (the per-head outputs, before the output projection). The loss stops gradients
  into the main network: h, the old memories and the layer's weights enter it detached, so only
  f_c learns from it, and the main loss does not reach f_c (the compressed memory is stored
  detached). The model adds it through the trainer's ``auxiliary_loss`` hook.

A window cut short (fewer than c evicted inputs left) is pooled over what it holds for mean and
max; the convolution sees it padded with copies of its last input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

COMPRESSIONS = ("mean", "max", "conv")


class MemoryCompression(nn.Module):
    """One layer's compression function f_c (``kind`` with ``rate`` c) and its last reconstruction loss."""

    def __init__(self, d_model: int, rate: int, kind: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.kind, self.rate, self.loss_weight = kind, rate, loss_weight
        self.conv = nn.Conv1d(d_model, d_model, rate, stride=rate) if kind == "conv" else None
        if self.conv is not None:
            with torch.no_grad():  # mean pooling to start with (the identity when rate is 1)
                self.conv.weight.copy_(torch.eye(d_model).unsqueeze(-1).expand(-1, -1, rate) / rate)
                self.conv.bias.zero_()
        self.last_loss: torch.Tensor | None = None

    @property
    def learned(self) -> bool:
        return self.conv is not None

    def forward(self, old: torch.Tensor) -> torch.Tensor:
        """Compressed memories [B, ⌈n/c⌉, d] of old memories [B, n, d]."""
        x = old.transpose(1, 2)
        if self.kind == "mean":
            out = F.avg_pool1d(x, self.rate, ceil_mode=True)
        elif self.kind == "max":
            out = F.max_pool1d(x, self.rate, ceil_mode=True)
        else:
            short = -x.shape[2] % self.rate
            if short:
                x = torch.cat([x, x[..., -1:].expand(-1, -1, short)], dim=2)
            out = self.conv(x.to(self.conv.weight.dtype)).to(old.dtype)
        return out.transpose(1, 2)

    # --- the trainer's hooks (``lmlab.train.trainer.TrainingHooks``) -----------------------------
    def auxiliary_loss(self) -> torch.Tensor:
        """The weighted attention-reconstruction loss of the last segment (0 when nothing was compressed)."""
        if self.last_loss is not None:
            return self.loss_weight * self.last_loss
        if self.conv is not None:  # a zero that still reaches f_c (DDP expects a gradient for every parameter)
            return 0.0 * sum(p.sum() for p in self.conv.parameters())
        return torch.zeros(())

    def training_stats(self) -> dict:
        return {"compression_loss": float(self.last_loss.detach())} if self.last_loss is not None else {}


def detached_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its parameters detached: gradients reach ``x`` but not the module."""
    return functional_call(module, {name: p.detach() for name, p in module.named_parameters()}, (x,))


def content_attention(block: Any, h: torch.Tensor, memory: torch.Tensor, frozen: bool = False) -> torch.Tensor:
    """Per-head outputs [B, H, T, D] of layer ``block``'s queries from ``h`` [B, T, d] over keys/values
    from ``memory`` [B, n, d] (the layer's norm and projections; no positions, every memory visible).
    The queries carry no gradient; with ``frozen`` neither do the layer's weights."""
    attn = block.attn
    call = detached_call if frozen else (lambda module, x: module(x))

    def heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], n_heads, attn.head_dim).transpose(1, 2)

    with torch.no_grad():
        q = heads(attn.q_proj(block.attn_norm(h) if block.pre else h), attn.n_heads)
    m = call(block.attn_norm, memory) if block.pre else memory
    k, v = heads(call(attn.k_proj, m), attn.n_kv_heads), heads(call(attn.v_proj, m), attn.n_kv_heads)
    scale = 1.0 / math.sqrt(attn.head_dim) if attn.score == "scaled_dot" else 1.0
    return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=attn.n_heads != attn.n_kv_heads)


def reconstruction_loss(block: Any, h: torch.Tensor, old: torch.Tensor, compressed: torch.Tensor) -> torch.Tensor:
    """‖attn(h, old) − attn(h, compressed)‖² (mean): the attention-reconstruction loss of one layer,
    whose gradient reaches ``compressed`` only."""
    with torch.no_grad():
        target = content_attention(block, h.detach(), old.detach())
    return F.mse_loss(content_attention(block, h.detach(), compressed, frozen=True).float(), target.float())
