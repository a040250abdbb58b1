"""NF4 (Dettmers et al. 2023, QLoRA): 4-bit NormalFloat blockwise quantisation with double quantisation.

The 16 levels are quantiles of N(0, 1) normalised to [-1, 1]: 8 for the positive half and 7
for the negative half, the two halves sharing an exact 0 (the asymmetric construction of the
paper and bitsandbytes, so that 0, -1 and 1 are all representable). Weights are cut into blocks
of 64, each divided by its absmax and rounded to the nearest level. Double quantisation
stores those fp32 absmax scales themselves in 8 bits (blocks of 256, after subtracting their
mean), cutting the scales' cost from 32/64 = 0.5 to 8/64 + 32/(64·256) ≈ 0.127 bits per weight.
"""

from __future__ import annotations

import torch

from ..core.errors import ConfigError

#: the quantile grid of bitsandbytes' ``create_normal_map``: halfway between the
#: ``1 - 1/(2·15)`` and ``1 - 1/(2·16)`` choices for the outermost quantile
NF4_OFFSET = 0.5 * ((1 - 1 / (2 * 15)) + (1 - 1 / (2 * 16)))


def nf4_code_book(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, ascending, derived from quantiles of N(0, 1) (float32)."""
    grid = torch.linspace(offset, 0.5, 9, dtype=torch.float64)
    positive = torch.special.ndtri(grid[:-1])                      # 8 levels > 0
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive])
    levels = levels.sort().values
    return (levels / levels.abs().max()).to(torch.float32)


def _blocks(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    pad = (-flat.numel()) % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block_size)


def quantize_nf4(weight: torch.Tensor, block_size: int = 64, double_quant: bool = True,
                 dq_block_size: int = 256) -> dict[str, torch.Tensor]:
    """Quantise ``weight`` to packed NF4 codes (two per byte) and its block scales.

    Returns ``codes`` (uint8) and either ``absmax`` (fp32 per block) or, with double
    quantisation, ``absmax_q`` (int8), ``absmax_scale`` (fp32 per block of scales) and
    ``absmax_offset`` (their fp32 mean).
    """
    if block_size < 2 or block_size % 2:
        raise ConfigError(f"block_size must be an even number >= 2, got {block_size}")
    if weight.numel() == 0:
        raise ConfigError("cannot quantise an empty weight")
    blocks = _blocks(weight.detach().reshape(-1).to(torch.float32), block_size)
    absmax = blocks.abs().amax(dim=1)
    normalised = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    levels = nf4_code_book().to(weight.device)
    midpoints = (levels[1:] + levels[:-1]) / 2
    codes = torch.bucketize(normalised, midpoints).to(torch.uint8).reshape(-1)
    out = {"codes": (codes[0::2] << 4) | codes[1::2]}
    if not double_quant:
        out["absmax"] = absmax
        return out
    offset = absmax.mean()
    scale_blocks = _blocks(absmax - offset, dq_block_size)
    scale = scale_blocks.abs().amax(dim=1)
    q = torch.round(scale_blocks / scale.clamp_min(torch.finfo(torch.float32).tiny)[:, None] * 127)
    out["absmax_q"] = q.to(torch.int8).reshape(-1)[: absmax.numel()]
    out["absmax_scale"] = scale
    out["absmax_offset"] = offset.reshape(1)
    return out


def dequantize_absmax(q: dict[str, torch.Tensor], dq_block_size: int = 256) -> torch.Tensor:
    """The fp32 block scales, undoing double quantisation when it was used."""
    if "absmax" in q:
        return q["absmax"]
    n = q["absmax_q"].numel()
    blocks = _blocks(q["absmax_q"].to(torch.float32), dq_block_size)
    values = blocks * (q["absmax_scale"] / 127)[:, None]
    return values.reshape(-1)[:n] + q["absmax_offset"]


def dequantize_nf4(q: dict[str, torch.Tensor], shape: tuple[int, ...], block_size: int = 64,
                   dq_block_size: int = 256, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rebuild a weight of ``shape`` and ``dtype`` from ``quantize_nf4``'s output."""
    packed = q["codes"]
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()
    levels = nf4_code_book().to(packed.device)
    absmax = dequantize_absmax(q, dq_block_size)
    values = levels[codes].view(-1, block_size) * absmax[:, None]
    numel = 1
    for s in shape:
        numel *= s
    return values.reshape(-1)[:numel].reshape(shape).to(dtype)


def nf4_storage_bytes(numel: int, block_size: int = 64, double_quant: bool = True,
                      dq_block_size: int = 256) -> dict[str, int]:
    """Bytes needed to store ``numel`` weights as NF4: codes, scales and their total."""
    n_blocks = -(-numel // block_size)
    codes = n_blocks * block_size // 2
    if double_quant:
        scales = n_blocks + 4 * -(-n_blocks // dq_block_size) + 4
    else:
        scales = 4 * n_blocks
    return {"codes": codes, "scales": scales, "total": codes + scales}
