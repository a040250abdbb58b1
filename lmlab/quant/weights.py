"""Calibration-free weight quantizers: absmax / zero-point (int8, int4), NF4 and HQQ.

Each turns a float weight [N, K] into a ``QuantLinear`` (``lmlab.models.quantized``): codes plus a
float16 scale (and zero point) for every ``group_size`` consecutive values of a row — stored as GGUF
stores them, so that equal group sizes mean equal bits per weight (4-bit g32: 4.5 symmetric as
Q4_0, 5.0 with zero points as Q4_1; 8-bit g32: 8.5 as Q8_0). Codes are rounded against the
float16-rounded scale. ``group_size``
equal to K is per output channel; ``per_tensor`` shares one scale across the whole weight.

- absmax (symmetric): zero maps to zero. 8 bits: s = max|w| / 127, codes ±127 (Q8_0); 4 bits: ggml's Q4_0
  rule, s = (the signed value of largest magnitude) / −8, codes −8…7 — all 16 levels, not 15.
- zero-point (asymmetric): s = (max − min) / (2^b − 1), code = round((w − min) / s), w ≈ s·code + min —
  the full code range covers [min, max] (better for skewed groups, one more float per group).
- NF4 (Dettmers et al. 2023, QLoRA): ``lmlab.peft.nf4``'s code book and block absmax, with
  double quantisation of the block scales (the stored scales are the doubly-quantised values).
- HQQ (Badri & Shaji 2023, Half-Quadratic Quantization): zero-point codes whose zero points are
  refined by a proximal solver minimising the ℓ_p (p < 1) norm of the weight error — robust to
  outliers, no calibration data.
"""

from __future__ import annotations

import torch

from ..core.errors import ConfigError
from ..models.quantized import QuantLinear, check_group_size, pack_nibbles


def grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = weight.shape
    check_group_size(group_size, k)
    return weight.detach().float().reshape(n, k // group_size, group_size)


def quant_layer(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int, group_size: int,
           bias: torch.Tensor | None, method: str, **extra) -> QuantLinear:
    n = codes.shape[0]
    codes = codes.reshape(n, -1).to(torch.uint8)
    return QuantLinear(pack_nibbles(codes) if bits == 4 else codes, scale.reshape(n, -1),
                       None if zero is None else zero.reshape(n, -1), bits=bits, group_size=group_size,
                       in_features=codes.shape[1], bias=bias, method=method, **extra)


def to_half(x: torch.Tensor) -> torch.Tensor:
    """float16 values of ``x`` (scales: at least the smallest normal float16, so none rounds to 0)."""
    return x.clamp(min=6.2e-5, max=65504).to(torch.float16)


def signed_half(x: torch.Tensor) -> torch.Tensor:
    """``to_half`` of |x| with x's sign (a signed scale: ggml's Q4_0 stores the sign in d)."""
    return torch.where(x < 0, -1.0, 1.0).to(torch.float16) * to_half(x.abs())


def symmetric_levels(bits: int) -> tuple[int, int]:
    """The signed code range of absmax codes. 4 bits use all 16 levels as ggml's Q4_0 does: the scale is the
    group's largest-magnitude value over −8 (so that value maps to −8 exactly and the other side reaches +7);
    8 bits stay ±127 as Q8_0 (the 256th level buys little and breaks the symmetry)."""
    return (-8, 7) if bits == 4 else (-127, 127)


def affine_codes(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool,
                 per_tensor: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(codes [N, K/G, G] in 0..2^bits−1, float16 scale [N, K/G], float16 zero [N, K/G] or None) with
    weight ≈ scale·(code − 2^(bits−1)) (symmetric) or scale·code + zero."""
    if bits not in (4, 8):
        raise ConfigError(f"{bits}-bit codes are not implemented", "use 4 or 8 bits")
    w = grouped(weight, group_size)
    mid = 2 ** (bits - 1)
    if symmetric:
        low_code, high_code = symmetric_levels(bits)
        values = w.reshape(1, 1, -1) if per_tensor else w
        top = values.gather(2, values.abs().argmax(dim=2, keepdim=True)).squeeze(2)  # signed largest magnitude
        raw = top / low_code if bits == 4 else top.abs() / high_code
        scale = signed_half(raw.expand(w.shape[:2]).contiguous())
        codes = torch.round(w / scale.float()[:, :, None]).clamp(low_code, high_code) + mid
        return codes.to(torch.uint8), scale, None
    low = (w.amin() if per_tensor else w.amin(dim=2)).expand(w.shape[:2])
    high = (w.amax() if per_tensor else w.amax(dim=2)).expand(w.shape[:2])
    zero = low.clamp(-65504, 65504).to(torch.float16)
    scale = to_half((high - zero.float()) / (2 ** bits - 1))
    codes = torch.round((w - zero.float()[:, :, None]) / scale.float()[:, :, None]).clamp(0, 2 ** bits - 1)
    return codes.to(torch.uint8), scale.contiguous(), zero.contiguous()


def quantize_affine(weight: torch.Tensor, bias: torch.Tensor | None = None, *, bits: int = 8,
                    group_size: int | None = None, symmetric: bool = True, per_tensor: bool = False,
                    method: str = "") -> QuantLinear:
    """Absmax (``symmetric``) or zero-point quantization per tensor, per channel (``group_size`` None) or per group."""
    g = weight.shape[1] if group_size is None or per_tensor else group_size
    codes, scale, zero = affine_codes(weight, bits, g, symmetric, per_tensor)
    return quant_layer(codes, scale, zero, bits, g, bias, method or f"int{bits}-{'absmax' if symmetric else 'zeropoint'}")


def quantize_nf4_layer(weight: torch.Tensor, bias: torch.Tensor | None = None, *, group_size: int = 64,
                       double_quant: bool = True) -> QuantLinear:
    """NF4 with QLoRA's code book (``lmlab.peft.nf4``), blocks of ``group_size`` along each row."""
    from ..peft.nf4 import dequantize_absmax, nf4_code_book, quantize_nf4

    w = grouped(weight, group_size)
    q = quantize_nf4(w.reshape(-1), block_size=group_size, double_quant=double_quant)
    packed = q["codes"]  # the even value in the high nibble
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(w.shape)
    scale = dequantize_absmax(q)[: w.shape[0] * w.shape[1]].reshape(w.shape[:2])
    return quant_layer(codes, scale, None, 4, group_size, bias, "nf4" + ("-dq" if double_quant else ""),
                  code_book=nf4_code_book())


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """The proximal operator of β/2‖·‖² + ‖·‖_p^p used by HQQ: sign(x)·max(|x| − |x|^(p−1)/β, 0)."""
    return torch.sign(x) * torch.relu(x.abs() - x.abs().clamp(min=1e-12).pow(p - 1) / beta)


def hqq_codes(weight: torch.Tensor, bits: int, group_size: int, *, p: float = 0.7, beta: float = 10.0,
              kappa: float = 1.01, iterations: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HQQ's half-quadratic solver: start from zero-point codes and alternate (1) the sparse error
    e = shrink(w − ŵ) and (2) the zero point z = mean(code − (w − e)/s), stopping when the mean
    absolute error no longer falls; returns (codes, scale, zero) as ``affine_codes``."""
    w = grouped(weight, group_size)
    top = 2 ** bits - 1
    low, high = w.amin(dim=2, keepdim=True), w.amax(dim=2, keepdim=True)
    inv = top / (high - low).clamp(min=1e-8)  # HQQ's "scale" multiplies: code = round(w·inv + z)
    z = -low * inv
    best, best_z = float("inf"), z
    for _ in range(iterations):
        q = torch.round(w * inv + z).clamp(0, top)
        w_r = (q - z) / inv
        err = float((w - w_r).abs().mean())
        if err >= best:
            break
        best, best_z = err, z
        e = shrink_lp(w - w_r, beta, p)
        z = (q - (w - e) * inv).mean(dim=2, keepdim=True)
        beta *= kappa
    # (code − z)/inv = s·code − s·z, stored float16 as every other zero-point form; codes re-rounded against them
    scale = to_half((1 / inv).squeeze(2))
    zero = (-(1 / inv) * best_z).squeeze(2).clamp(-65504, 65504).to(torch.float16)
    q = torch.round((w - zero.float()[:, :, None]) / scale.float()[:, :, None]).clamp(0, top)
    return q.to(torch.uint8), scale, zero


def quantize_hqq(weight: torch.Tensor, bias: torch.Tensor | None = None, *, bits: int = 4,
                 group_size: int = 64) -> QuantLinear:
    """HQQ zero-point quantization of one weight (no calibration data)."""
    codes, scale, zero = hqq_codes(weight, bits, group_size)
    return quant_layer(codes, scale, zero, bits, group_size, bias, f"hqq{bits}")
