"""Weight-only int8: per-output-channel symmetric int8 weights, activations stay bf16 (or fp32).

Decoding a small model at batch 1 reads every weight once per token, so it is bound by memory
bandwidth: int8 weights are a quarter of fp32's bytes. Each output row ``w`` is stored as
``round(w / s)`` in [-127, 127] with ``s = max|w| / 127``; the matmul runs through PyTorch's
``_weight_int8pack_mm`` CPU kernel, which dequantises on the fly (no activation quantisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.device import resolve_dtype
from ..core.errors import ConfigError, MissingDependencyError
from ..core.validate import check_choice

SCHEMES = ("int8",)
ACTIVATION_DTYPES = ("bfloat16", "float32", "float16")


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight [N, K], float32 scale [N]) of a float weight [N, K], one scale per output row."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight that ``q`` and ``scale`` stand for."""
    return q.float() * scale[:, None]


class Int8Linear(nn.Module):
    """A Linear with int8 weights and per-row scales, multiplied in ``compute_dtype`` (None: ``x``'s own);
    the output comes back in ``x``'s dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype | None = torch.bfloat16) -> None:
        super().__init__()
        q, scale = quantize_int8(weight)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.compute_dtype = compute_dtype
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        # the CPU kernel needs K a multiple of 16; other shapes dequantise (still 1/4 of the stored bytes)
        self.packed = self.in_features % 16 == 0

    @classmethod
    def from_linear(cls, linear: nn.Linear, compute_dtype: torch.dtype | None = torch.bfloat16) -> Int8Linear:
        return cls(linear.weight, linear.bias, compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype or x.dtype
        flat = x.reshape(-1, self.in_features).to(dtype)
        if self.packed and x.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight_int8, self.scale.to(dtype))
        else:
            out = F.linear(flat, self.weight_int8.to(dtype)) * self.scale.to(dtype)
        out = out.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_model(model: nn.Module, scheme: str = "int8", *, dtype: str = "float32",
                   compute_dtype: str = "bfloat16", head: bool = True) -> nn.Module:
    """``model`` with every ``nn.Linear`` replaced by an int8-weight one, in place; returned.

    The matmuls take their inputs in ``compute_dtype`` (bfloat16: the kernel's fast path on
    CPU; its float32 path is not vectorised); everything else (residual stream, norms,
    attention, KV cache) stays in ``dtype``: float32 drifts least from the float model,
    bfloat16 saves two small casts per matmul. ``head=False`` keeps the output projection
    in ``dtype``; a head tied to the embedding is quantised as its own copy (the embedding
    stays a float lookup table).
    """
    check_choice("scheme", scheme, SCHEMES)
    check_choice("dtype", dtype, ACTIVATION_DTYPES)
    check_choice("compute_dtype", compute_dtype, ACTIVATION_DTYPES)
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        raise MissingDependencyError(f"this PyTorch ({torch.__version__}) has no _weight_int8pack_mm kernel",
                                     "install PyTorch 2.4 or newer for --quant int8")
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        raise ConfigError("the model is already quantised", "quantise a freshly loaded model")
    skip = {id(getattr(model, "head", None))} if not head else set()
    compute = resolve_dtype(compute_dtype)
    _replace_linears(model, skip, None if compute == resolve_dtype(dtype) else compute)  # from the original weights
    model.to(resolve_dtype(dtype))
    for m in model.modules():  # scales in the matmul's dtype: no cast per call
        if isinstance(m, Int8Linear):
            m.scale = m.scale.to(m.compute_dtype or resolve_dtype(dtype))
    return model.eval()


def _replace_linears(module: nn.Module, skip: set[int], compute: torch.dtype | None) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and id(child) not in skip:
            setattr(module, name, Int8Linear.from_linear(child, compute))
        else:
            _replace_linears(child, skip, compute)
