"""Weight layout for one-token decoding on CPU.

A linear layer computes ``x @ W.T``. For one row ``x`` (decoding at batch 1) that is a
matrix-vector product, and PyTorch's CPU kernel for it runs about a third faster when ``W.T`` is
contiguous, i.e. when ``W`` [out, in] is stored column-major (measured on SmolLM2's 211 weights:
48 → 36 ms a token in float32). Many rows (a prompt, training) run at the same speed either way.

``decode_layout`` also packs the linears that read the same input (an attention's q/k/v, a
SwiGLU's gate/up) into row blocks of one tensor, so that decoding runs one larger product instead
of three or two small ones. The layers keep their own parameters (views into the packed tensor),
so saving, loading and training see the usual modules; ``packed_outputs`` takes the one-product
path only while the views still share that tensor and no gradient is being recorded.
Quantized layers (``lmlab.models.quantized``) of one format are joined the same way, into one
``QuantLinear`` whose codes the members view (``QuantPack``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.memory import release_free_memory
from .quantized import QuantLinear, concat_rows

Packed = tuple[torch.Tensor, torch.Tensor | None]


class QuantPack(NamedTuple):
    """Quantized layers joined by rows: the joint layer and the members it stands for."""

    joint: QuantLinear
    members: tuple[nn.Module, ...]


def _eligible(w: torch.Tensor) -> bool:
    return w.device.type == "cpu" and w.dtype == torch.float32 and w.dim() == 2 and w.is_contiguous()


def column_major_linears(module: nn.Module) -> int:
    """Store every float32 CPU ``nn.Linear`` weight of ``module`` column-major, in place.

    Same shapes, values and parameters (a weight tied to an embedding stays tied), so results
    change only by float rounding order. Returns how many weights were restrided.
    """
    count = 0
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear) and _eligible(sub.weight):  # not seen before (a tied weight)
                sub.weight.data = sub.weight.data.t().contiguous().t()
                count += 1
    if count:
        release_free_memory(collect_cycles=False)  # the row-major copies, freed by reference counting
    return count


def pack_linears(linears: Sequence[nn.Module]) -> Packed | None:
    """Make the weights (and biases) of plain ``nn.Linear`` layers with one input width row blocks of
    one column-major tensor, in place; the packed (weight, bias), or None when they do not qualify."""
    if not all(type(lin) is nn.Linear and _eligible(lin.weight) for lin in linears):
        return None
    if len({lin.in_features for lin in linears}) != 1 or len({lin.bias is None for lin in linears}) != 1:
        return None
    with torch.no_grad():
        weight = torch.cat([lin.weight.t() for lin in linears], dim=1).t()  # [sum(out), in], column-major
        bias = None if linears[0].bias is None else torch.cat([lin.bias for lin in linears])
        start = 0
        for lin in linears:
            end = start + lin.out_features
            lin.weight.data = weight[start:end]
            if bias is not None:
                lin.bias.data = bias[start:end]
            start = end
    return weight, bias


def _still_packed(linears: Sequence[nn.Module], packed: Packed) -> bool:
    weight, bias = packed
    start = 0
    for lin in linears:
        if type(lin) is not nn.Linear:
            return False
        w = lin.weight
        if w.untyped_storage().data_ptr() != weight.untyped_storage().data_ptr() or w.storage_offset() != start:
            return False
        if bias is not None and (lin.bias is None or lin.bias.untyped_storage().data_ptr()
                                 != bias.untyped_storage().data_ptr() or lin.bias.storage_offset() != start):
            return False
        start += w.shape[0]
    return start == weight.shape[0]


def packed_outputs(x: torch.Tensor, linears: Sequence[nn.Module],
                   packed: Packed | QuantPack | None) -> tuple[torch.Tensor, ...] | None:
    """Each linear's output on ``x`` from one product over their packed weights; None (use the
    layers) when nothing is packed, gradients are being recorded, a weight was replaced since, or
    under ``torch.compile`` (which cannot trace the storage check; joint quantized layers are
    checked by identity, which it can)."""
    if isinstance(packed, QuantPack):
        if torch.is_grad_enabled() or len(linears) != len(packed.members) \
                or any(a is not b for a, b in zip(linears, packed.members, strict=False)):
            return None
        return packed.joint(x).split([lin.out_features for lin in linears], dim=-1)
    if packed is None or torch.is_grad_enabled() or torch.compiler.is_compiling() \
            or not _still_packed(linears, packed):
        return None
    out = F.linear(x, *packed)
    return out.split([lin.out_features for lin in linears], dim=-1)


def decode_layout(model: nn.Module) -> int:
    """Column-major float32 CPU linear weights, with q/k/v and gate/up packed (see the module
    docstring), in place; returns how many groups were packed."""
    from .attention import Attention
    from .mlp import MLP

    groups = 0
    for sub in model.modules():
        if isinstance(sub, Attention):
            linears = [sub.q_proj, sub.k_proj, sub.v_proj]
        elif isinstance(sub, MLP) and sub.gate is not None:
            linears = [sub.gate, sub.up]
        else:
            continue
        if all(isinstance(lin, QuantLinear) for lin in linears):
            if not (isinstance(sub.packed, QuantPack) and all(a is b for a, b in zip(linears, sub.packed.members, strict=False))):
                joint = concat_rows(linears)
                sub.packed = None if joint is None else QuantPack(joint, tuple(linears))
        elif sub.packed is None or isinstance(sub.packed, QuantPack) or not _still_packed(linears, sub.packed):
            sub.packed = pack_linears(linears)
        groups += sub.packed is not None
    column_major_linears(model)
    joined = {id(m) for sub in model.modules() if isinstance(getattr(sub, "packed", None), QuantPack)
              for m in sub.packed.members}
    for sub in model.modules():  # kernels' tensors built now, not inside a compiled step
        if isinstance(sub, QuantLinear) and sub.kernel_tensors is None and id(sub) not in joined:
            sub.pack()
    return groups
