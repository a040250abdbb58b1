"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): quantize a weight one column at a time, pushing each column's rounding error onto the
columns not yet quantized through the inverse Hessian of the layer's squared output error.

For a layer with inputs X (tokens × K), H = 2·XᵀX/n. Quantizing column q with H⁻¹ gives the
optimal update of the remaining weights δ = −(w_q − quant(w_q)) / [H⁻¹]_qq · H⁻¹_{q,:}
(the Optimal Brain Surgeon step); the paper's algorithm computes all those H⁻¹ rows at once
from the upper Cholesky factor of H⁻¹ and applies updates lazily in blocks of columns.
Damping adds λ·mean(diag H) to the diagonal; act-order quantizes columns by decreasing
diag(H) (with group scales fixed from the unquantized weight beforehand, "static groups",
so groups stay contiguous for the packed kernel).
"""

from __future__ import annotations

import math

import torch

from ..core.errors import ConfigError
from ..models.quantized import QuantLinear, check_group_size
from .weights import affine_codes, quant_layer, symmetric_levels


def hessian(inputs: torch.Tensor) -> torch.Tensor:
    """H = 2·XᵀX / n of a layer's inputs [n, K] (float64 accumulation, returned as float32)."""
    x = inputs.double()
    return (2 * x.T @ x / x.shape[0]).float()


def _group_params(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero [N] of one group of columns w [N, G]."""
    _, scale, zero = affine_codes(w, bits, w.shape[1], symmetric)
    return scale[:, 0].float(), None if zero is None else zero[:, 0].float()


def _quantize_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, dequantized values) of one column under its group's scale and zero (``affine_codes``' forms)."""
    if zero is None:
        mid = 2 ** (bits - 1)
        codes = torch.round(w / scale).clamp(*symmetric_levels(bits)) + mid
        return codes, scale * (codes - mid)
    codes = torch.round((w - zero) / scale).clamp(0, 2 ** bits - 1)
    return codes, scale * codes + zero


def inverse_hessian_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λ·mean(diag H)·I)⁻¹, with a clear error when H is not positive definite."""
    h = h.double().clone()
    h.diagonal().add_(damp * h.diagonal().mean())
    try:
        lower = torch.linalg.cholesky(h)
        return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True).float()
    except torch.linalg.LinAlgError:
        raise ConfigError(f"the GPTQ Hessian is not positive definite with damping {damp}",
                          "raise the damping (e.g. --damp 0.1) or calibrate on more tokens") from None


def gptq_codes(weight: torch.Tensor, h: torch.Tensor, *, bits: int = 4, group_size: int = 128,
               symmetric: bool = False, act_order: bool = False, damp: float = 0.01,
               block_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GPTQ's codes [N, K], scale and zero [N, K/G] of ``weight`` [N, K] given the Hessian ``h`` [K, K]."""
    n, k = weight.shape
    check_group_size(group_size, k)
    w = weight.detach().float().clone()
    h = h.float().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    groups = k // group_size
    scales = torch.zeros(n, groups)  # float16 values (affine_codes'), held in float32 for the arithmetic
    zeros = None if symmetric else torch.zeros(n, groups)
    if act_order:  # static groups: every group's scale from the unquantized weight
        for g in range(groups):
            s, z = _group_params(w[:, g * group_size:(g + 1) * group_size], bits, symmetric)
            scales[:, g] = s
            if zeros is not None:
                zeros[:, g] = z
        perm = torch.argsort(h.diagonal(), descending=True)
    else:
        perm = torch.arange(k)
    w, h = w[:, perm], h[perm][:, perm]
    u = inverse_hessian_factor(h, damp)
    codes = torch.zeros(n, k)
    block = group_size * math.ceil(block_size / group_size)  # a group never straddles two blocks
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1, err1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = int(perm[col]) // group_size
            if not act_order and col % group_size == 0:  # the group's scale from its current (updated) values
                s, z = _group_params(w1[:, i:i + group_size], bits, symmetric)
                scales[:, g] = s
                if zeros is not None:
                    zeros[:, g] = z
            c, q = _quantize_column(w1[:, i], scales[:, g], None if zeros is None else zeros[:, g], bits)
            codes[:, col] = c
            e = (w1[:, i] - q) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    codes = codes[:, torch.argsort(perm)]
    return codes.to(torch.uint8), scales.half(), None if zeros is None else zeros.half()


def quantize_gptq(weight: torch.Tensor, inputs: torch.Tensor, bias: torch.Tensor | None = None, *,
                  bits: int = 4, group_size: int = 128, symmetric: bool = False, act_order: bool = False,
                  damp: float = 0.01) -> QuantLinear:
    """One layer quantized by GPTQ from its calibration ``inputs`` [tokens, K]."""
    codes, scale, zero = gptq_codes(weight, hessian(inputs), bits=bits, group_size=group_size,
                                    symmetric=symmetric, act_order=act_order, damp=damp)
    return quant_layer(codes, scale, zero, bits, group_size, bias, f"gptq{bits}" + ("-act-order" if act_order else ""))
