"""Dequantisation of GGML tensor blocks (the formats inside GGUF files) with numpy.

Each quantised type stores fixed-size blocks: scales as float16 followed by packed integer
codes. ``dequantize(raw, type, n)`` unpacks ``n`` values from the raw bytes, vectorised over
all blocks at once. Layouts follow ggml's reference C (``ggml-quants.c``):

- Q8_0: d, 32 × int8                       x = d·q
- Q4_0: d, 16 bytes of nibbles             x = d·(q − 8)       (low nibbles first, then high)
- Q4_1: d, m, 16 bytes of nibbles          x = d·q + m
- Q5_0 / Q5_1: as Q4 with a 32-bit mask of fifth bits; Q5_0 subtracts 16
- Q4_K / Q5_K: 256-value super-blocks, 8 sub-blocks with 6-bit scales and mins
- Q6_K: 256-value super-blocks, 16 int8 scales, 6-bit codes (4 low + 2 high bits) − 32
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..core.errors import ModelError

#: ggml type id → name (all of ggml's, so that errors can name the ones lmlab does not read)
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
              10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
              17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
              24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16"}
#: name → (values per block, bytes per block)
BLOCK = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
         "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q4_K": (256, 144),
         "Q5_K": (256, 176), "Q6_K": (256, 210)}


def type_name(ggml_type: int | str) -> str:
    """The name of a ggml type id (or name), with a clear error for types lmlab cannot read."""
    name = GGML_TYPES.get(ggml_type, f"#{ggml_type}") if isinstance(ggml_type, int) else str(ggml_type).upper()
    if name not in BLOCK:
        raise ModelError(f"GGML tensor type {name} is not supported",
                         f"lmlab reads {', '.join(BLOCK)}; re-quantise the model to one of them")
    return name


def nbytes(ggml_type: int | str, n_elements: int) -> int:
    """Bytes that ``n_elements`` values of this type occupy."""
    per_block, size = BLOCK[type_name(ggml_type)]
    if n_elements % per_block:
        raise ModelError(f"{n_elements} values do not fill whole {type_name(ggml_type)} blocks of {per_block}")
    return n_elements // per_block * size


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """Column of float16 scales at byte offset ``start`` of each block, as float32 [nb, 1]."""
    return blocks[:, start:start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[nb, 16] packed bytes → [nb, 32] codes: the 16 low nibbles, then the 16 high ones."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int16)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """[nb, 4] little-endian 32-bit masks → [nb, 32] bits (bit j belongs to value j)."""
    mask = qh.copy().view("<u4")  # [nb, 1]
    return ((mask >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16)


def _scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and mins packed into 12 bytes of a Q4_K/Q5_K super-block."""
    s = scales.astype(np.int16)
    sc = np.empty((s.shape[0], 8), np.int16)
    mn = np.empty((s.shape[0], 8), np.int16)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc.astype(np.float32), mn.astype(np.float32)


def _q4_k_parts(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K codes [nb, 8, 32] (0..15), sub-block scales d·sc and mins dmin·mn [nb, 8, 1]: x = scale·q − min."""
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _scale_min_k4(b[:, 4:16])
    qs = b[:, 16:144].reshape(-1, 4, 32)  # 4 groups of 64 values, 32 bytes each
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
    return q, d[:, :, None] * sc[:, :, None], dmin[:, :, None] * mn[:, :, None]


def _q5_k_parts(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q5_K codes [nb, 8, 32] (0..31), scales and mins as ``_q4_k_parts``."""
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _scale_min_k4(b[:, 4:16])
    qh = b[:, 16:48]  # one byte per position l, bit 2i / 2i+1 for sub-blocks 2i / 2i+1
    qs = b[:, 48:176].reshape(-1, 4, 32)
    low = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.int16)
    high = ((qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1).astype(np.int16)
    q = (low + 16 * high).astype(np.float32)
    return q, d[:, :, None] * sc[:, :, None], dmin[:, :, None] * mn[:, :, None]


def _q6_k_parts(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q6_K signed codes [nb, 16, 16] (−32..31) and their sub-block scales d·sc [nb, 16, 1]."""
    ql = b[:, 0:128].reshape(-1, 2, 64).astype(np.int16)  # two halves of 128 values
    qh = b[:, 128:192].reshape(-1, 2, 32).astype(np.int16)
    scales = b[:, 192:208].copy().view(np.int8).astype(np.float32)  # [nb, 16], one per 16 values in order
    d = _f16(b, 208)
    q1 = (ql[:, :, :32] & 0x0F) | (((qh >> 0) & 3) << 4)
    q2 = (ql[:, :, 32:] & 0x0F) | (((qh >> 2) & 3) << 4)
    q3 = (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4)
    q4 = (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4)
    q = np.stack([q1, q2, q3, q4], axis=2).astype(np.float32) - 32  # [nb, 2, 4, 32]: value order
    return q.reshape(-1, 16, 16), (d * scales)[:, :, None]


def _q4_k(b: np.ndarray) -> np.ndarray:
    q, scale, minimum = _q4_k_parts(b)
    return (scale * q - minimum).reshape(-1)


def _q5_k(b: np.ndarray) -> np.ndarray:
    q, scale, minimum = _q5_k_parts(b)
    return (scale * q - minimum).reshape(-1)


def _q6_k(b: np.ndarray) -> np.ndarray:
    q, scale = _q6_k_parts(b)
    return (scale * q).reshape(-1)


def _raw_blocks(raw: np.ndarray | bytes, name: str, n_elements: int) -> np.ndarray:
    """The bytes of ``n_elements`` values of type ``name`` as [blocks, bytes per block] uint8."""
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) \
        else np.asarray(raw).view(np.uint8).reshape(-1)
    need = nbytes(name, n_elements)
    if data.size < need:
        raise ModelError(f"tensor data is truncated: {data.size} bytes where {name} needs {need}",
                         "the file is incomplete; download or convert it again")
    return data[:need].reshape(-1, BLOCK[name][1])


def dequantize(raw: np.ndarray | bytes, ggml_type: int | str, n_elements: int) -> np.ndarray:
    """Unpack ``n_elements`` float32 values of a ggml type from ``raw`` bytes."""
    name = type_name(ggml_type)
    data = _raw_blocks(raw, name, n_elements).reshape(-1)
    if name == "F32":
        return data.view("<f4").astype(np.float32)
    if name == "F16":
        return data.view("<f2").astype(np.float32)
    if name == "BF16":
        return (data.view("<u2").astype(np.uint32) << 16).view(np.float32)
    b = data.reshape(-1, BLOCK[name][1])
    if name == "Q8_0":
        return (_f16(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)
    if name == "Q4_0":
        return (_f16(b, 0) * (_nibbles(b[:, 2:]) - 8)).reshape(-1)
    if name == "Q4_1":
        return (_f16(b, 0) * _nibbles(b[:, 4:]) + _f16(b, 2)).reshape(-1)
    if name == "Q5_0":
        return (_f16(b, 0) * (_nibbles(b[:, 6:]) + 16 * _fifth_bits(b[:, 2:6]) - 16)).reshape(-1)
    if name == "Q5_1":
        return (_f16(b, 0) * (_nibbles(b[:, 8:]) + 16 * _fifth_bits(b[:, 4:8])) + _f16(b, 2)).reshape(-1)
    return {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}[name](b)


#: block types that ``block_codes`` keeps as integer codes (lmlab.models.quantized runs them quantized)
CODE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")


class BlockCodes(NamedTuple):
    """A block-quantised tensor as codes and per-group scale/zero: x = scale·(code − 2^(bits−1)) without
    a zero, x = scale·code + zero with one (scales and zeros float16 where the file stores them so)."""

    codes: np.ndarray        # uint8 [n]
    scale: np.ndarray        # float16 or float32 [n / group_size]
    zero: np.ndarray | None  # float16 or float32 [n / group_size], None for symmetric types
    bits: int                # 4: codes 0..15; 8: codes 0..255
    group_size: int


def block_codes(raw: np.ndarray | bytes, ggml_type: int | str, n_elements: int) -> BlockCodes:
    """The codes, scales and zero points of ``n_elements`` values of a block type in ``CODE_TYPES``
    (F32/F16/BF16 carry no codes: use ``dequantize``)."""
    name = type_name(ggml_type)
    if name not in CODE_TYPES:
        raise ModelError(f"GGML tensor type {name} has no integer codes to keep",
                         f"types kept quantized: {', '.join(CODE_TYPES)}")
    b = _raw_blocks(raw, name, n_elements)
    def half(start: int) -> np.ndarray:  # a float16 field of every block, kept float16
        return b[:, start:start + 2].copy().view(np.float16).reshape(-1)

    if name == "Q8_0":
        return BlockCodes((b[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8).reshape(-1),
                          half(0), None, 8, 32)
    if name == "Q4_0":
        return BlockCodes(_nibbles(b[:, 2:]).astype(np.uint8).reshape(-1), half(0), None, 4, 32)
    if name == "Q4_1":  # x = d·q + m
        return BlockCodes(_nibbles(b[:, 4:]).astype(np.uint8).reshape(-1), half(0), half(2), 4, 32)
    if name == "Q5_0":
        q = _nibbles(b[:, 6:]) + 16 * _fifth_bits(b[:, 2:6])  # x = d·(q − 16)
        return BlockCodes((q + 112).astype(np.uint8).reshape(-1), half(0), None, 8, 32)
    if name == "Q5_1":
        q = _nibbles(b[:, 8:]) + 16 * _fifth_bits(b[:, 4:8])  # x = d·q + m
        return BlockCodes(q.astype(np.uint8).reshape(-1), half(0), half(2), 8, 32)
    flat = np.ravel
    if name == "Q4_K":
        q, scale, minimum = _q4_k_parts(b)
        return BlockCodes(q.astype(np.uint8).reshape(-1), flat(scale), flat(-minimum), 4, 32)
    if name == "Q5_K":
        q, scale, minimum = _q5_k_parts(b)
        return BlockCodes(q.astype(np.uint8).reshape(-1), flat(scale), flat(-minimum), 8, 32)
    q, scale = _q6_k_parts(b)  # Q6_K
    return BlockCodes((q + 128).astype(np.uint8).reshape(-1), flat(scale), None, 8, 16)


#: block types ``quantize`` writes (F32/F16 are plain arrays)
WRITE_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")


def _round_away(x: np.ndarray) -> np.ndarray:
    """C's ``roundf``: halves away from zero (ggml's Q8_0 rounding)."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def quantize(values: np.ndarray, ggml_type: str) -> np.ndarray:
    """The raw bytes (uint8) of ``values`` (float32, a multiple of the block size) in a ggml type,
    bit-identical to ggml's reference quantisers (``quantize_row_*_ref`` in ``ggml-quants.c``)."""
    name = str(ggml_type).upper()
    if name not in WRITE_TYPES:
        raise ModelError(f"writing GGML type {name} is not supported", f"lmlab writes {', '.join(WRITE_TYPES)}")
    x = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if name == "F32":
        return x.view(np.uint8)
    if name == "F16":
        return x.astype(np.float16).view(np.uint8)
    per_block, _ = BLOCK[name]
    if x.size % per_block:
        raise ModelError(f"{x.size} values do not fill whole {name} blocks of {per_block}",
                         "export this tensor as F16 (its rows are not a multiple of the block size)")
    b = x.reshape(-1, per_block)
    with np.errstate(divide="ignore"):
        if name == "Q8_0":
            d = np.abs(b).max(axis=1, keepdims=True) / 127
            inv = np.where(d == 0, 0, 1 / d)
            qs = _round_away(b * inv).astype(np.int8).view(np.uint8)
            return np.concatenate([d.astype(np.float16).view(np.uint8), qs], axis=1).reshape(-1)
        if name == "Q4_0":
            top = np.take_along_axis(b, np.abs(b).argmax(axis=-1, keepdims=True), axis=-1)
            d = top / -8
            inv = np.where(d == 0, 0, 1 / d)
            q = np.trunc(b * inv + np.float32(8.5), dtype=np.float32).astype(np.uint8).clip(0, 15)
            header = [d.astype(np.float16).view(np.uint8)]
        else:  # Q4_1
            high, low = b.max(axis=-1, keepdims=True), b.min(axis=-1, keepdims=True)
            d = (high - low) / 15
            inv = np.where(d == 0, 0, 1 / d)
            q = np.trunc((b - low) * inv + np.float32(0.5), dtype=np.float32).astype(np.uint8).clip(0, 15)
            header = [d.astype(np.float16).view(np.uint8), low.astype(np.float16).view(np.uint8)]
    q = q.reshape(-1, 2, per_block // 2)
    return np.concatenate([*header, q[:, 0] | (q[:, 1] << np.uint8(4))], axis=1).reshape(-1)
