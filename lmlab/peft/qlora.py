"""QLoRA: the frozen base linear layers stored as NF4 (dequantised on the fly), LoRA on top.

The forward pass dequantises each weight to the compute dtype (bf16 by default, the paper's
16-bit compute path), multiplies, and returns activations in the caller's dtype; gradients
flow through the dequantised weight to the LoRA factors and the inputs, never to the codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import resolve_dtype
from ..core.validate import check_number
from . import record
from .lora import LoraConfig, wrap_lora
from .nf4 import dequantize_nf4, nf4_storage_bytes, quantize_nf4
from .targets import find_modules, freeze, replace_module

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is kept as NF4 codes plus (double-quantised) scales."""

    def __init__(self, linear: nn.Linear, block_size: int = 64, double_quant: bool = True,
                 dq_block_size: int = 256, compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.block_size = block_size
        self.dq_block_size = dq_block_size
        self.compute_dtype = compute_dtype
        self.quantized_numel = linear.weight.numel()
        self._keys = []
        for key, tensor in quantize_nf4(linear.weight, block_size, double_quant,
                                        dq_block_size).items():
            self.register_buffer(key, tensor)
            self._keys.append(key)
        self.bias = None
        if linear.bias is not None:
            self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def storage_bytes(self) -> int:
        """Bytes actually held by the quantised weight (codes and scales)."""
        return sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in self._keys)

    def predicted_storage_bytes(self) -> int:
        return nf4_storage_bytes(self.quantized_numel, self.block_size,
                                 "absmax_q" in self._keys, self.dq_block_size)["total"]

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        q = {k: getattr(self, k) for k in self._keys}
        return dequantize_nf4(q, (self.out_features, self.in_features), self.block_size,
                              self.dq_block_size, dtype or self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        y = F.linear(x.to(self.compute_dtype), self.dequantized_weight(), bias)
        return y.to(x.dtype)

    def to_linear(self, dtype: torch.dtype = torch.float32) -> nn.Linear:
        """A plain nn.Linear with the dequantised weight (for merging and export)."""
        weight = self.dequantized_weight(dtype)
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=weight.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.requires_grad_(False)
        return linear

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nf4 block={self.block_size}, double_quant={'absmax_q' in self._keys}, "
                f"compute_dtype={self.compute_dtype}")


@dataclass
class QLoraConfig(LoraConfig):
    """LoRA settings plus NF4 block size, double quantisation and the compute dtype."""

    method: ClassVar[str] = "qlora"
    targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    block_size: int = 64
    double_quant: bool = True
    dq_block_size: int = 256
    compute_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("block_size", self.block_size, low=2, integer=True)
        check_number("dq_block_size", self.dq_block_size, low=1, integer=True)
        resolve_dtype(self.compute_dtype)


def apply_qlora(model: nn.Module, config: QLoraConfig) -> nn.Module:
    """Quantise the targeted nn.Linear layers to NF4 (in place), freeze all, add LoRA on them."""
    fingerprint = record.start(model, config)
    names = find_modules(model, config.targets, kinds=(nn.Linear,))
    freeze(model)
    dtype = resolve_dtype(config.compute_dtype)
    for name in names:
        replace_module(model, name, NF4Linear(model.get_submodule(name), config.block_size,
                                              config.double_quant, config.dq_block_size, dtype))
    wrap_lora(model, names, config)
    return record.finish(model, config, fingerprint)
