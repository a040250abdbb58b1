"""Quantizers that rescale input channels by activation statistics before rounding.

- AWQ (Lin et al. 2023, "Activation-aware Weight Quantization"): a few input channels carry large
  activations, and their weights matter most. Scaling those weight columns up by s (and the input
  down by s) shrinks their relative rounding error; s = mean|x|^α, normalised, with α chosen from
  a grid by the layer group's output error on calibration inputs. Layers reading the same input
  (q/k/v, gate/up) share one s.
- SmoothQuant (Xiao et al. 2022): for W8A8, activation outliers make per-token int8 activations
  coarse; s_j = max|x_j|^α / max|W_:,j|^(1−α) moves that difficulty into the weights (W·s, x/s),
  then weights are int8 per output channel and activations int8 per token at run time.

Both keep s as the layer's ``input_scale`` (1/s multiplies the input) instead of folding it into
the previous norm, so any layer can be treated alike.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.quantized import QuantLinear
from .weights import affine_codes, quant_layer

#: AWQ's search looks at this many calibration tokens (the output error of every grid point)
AWQ_SEARCH_TOKENS = 512


def awq_scales(x: torch.Tensor, weights: list[torch.Tensor], *, bits: int, group_size: int,
               symmetric: bool, grid: int = 20) -> torch.Tensor:
    """AWQ's per-input-channel scale s [K] for layers with the same input ``x`` [tokens, K]."""
    x = x[:AWQ_SEARCH_TOKENS]
    w = torch.cat([t.detach().float() for t in weights])
    reference = x @ w.T
    x_mean = x.abs().mean(dim=0)
    best, best_s = float("inf"), torch.ones_like(x_mean)
    for i in range(grid):
        s = x_mean.pow(i / grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        codes, scale, zero = affine_codes(w * s, bits, group_size, symmetric)
        dq = quant_layer(codes, scale, zero, bits, group_size, None, "awq").dequantize()
        err = float(((x / s) @ dq.T - reference).pow(2).mean())
        if err < best:
            best, best_s = err, s
    return best_s


def smooth_scales(x: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's s_j = max|x_j|^α / max|W_:,j|^(1−α) for layers with input ``x`` [tokens, K]."""
    act = x.abs().amax(dim=0).clamp(min=1e-5)
    w = torch.cat([t.detach().float() for t in weights]).abs().amax(dim=0).clamp(min=1e-5)
    return (act.pow(alpha) / w.pow(1 - alpha)).clamp(min=1e-5)


def shared_input_groups(module: nn.Module, inputs: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names of ``module``'s linears grouped by identical captured input (q/k/v, gate/up share one)."""
    groups: dict[int, list[str]] = {}
    for name, x in inputs.items():
        groups.setdefault(x.data_ptr(), []).append(name)
    return list(groups.values())


def quantize_awq(linears: dict[str, nn.Linear], x: torch.Tensor, *, bits: int = 4, group_size: int = 128,
                 symmetric: bool = False) -> dict[str, QuantLinear]:
    """AWQ-quantized replacements for ``linears`` that read the same input ``x``."""
    s = awq_scales(x, [m.weight for m in linears.values()], bits=bits, group_size=group_size, symmetric=symmetric)
    out = {}
    for name, m in linears.items():
        codes, scale, zero = affine_codes(m.weight.detach().float() * s, bits, group_size, symmetric)
        out[name] = quant_layer(codes, scale, zero, bits, group_size, m.bias, f"awq{bits}", input_scale=1 / s)
    return out


def quantize_smoothquant(linears: dict[str, nn.Linear], x: torch.Tensor, *, alpha: float = 0.5
                         ) -> dict[str, QuantLinear]:
    """SmoothQuant W8A8 replacements for ``linears`` that read the same input ``x``."""
    s = smooth_scales(x, [m.weight for m in linears.values()], alpha)
    out = {}
    for name, m in linears.items():
        w = m.weight.detach().float() * s
        codes, scale, zero = affine_codes(w, 8, w.shape[1], True)
        out[name] = quant_layer(codes, scale, zero, 8, w.shape[1], m.bias, "smoothquant-w8a8",
                                input_scale=1 / s, act_bits=8)
    return out
