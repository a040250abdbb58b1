"""Linear layers whose weights stay quantized at run time, and the CPU kernels that read them.

One storage form covers every weight-quantisation format lmlab makes or imports (its own
int8/int4/NF4/GPTQ/AWQ/HQQ/SmoothQuant weights and GGUF's Q8_0, Q4_0, Q4_1, Q4_K, Q5_x, Q6_K):
integer ``codes`` in ``bits`` bits (4: two per byte, the even column in the low nibble; 8: one
uint8 each) and, for each run of ``group_size`` values along a row, a ``scale`` (float16 where the
format stores it so, as GGUF and lmlab's quantizers do; float32 otherwise) and, for asymmetric
formats, a ``zero`` (the group's offset, GGUF's "min"). A weight is ``scale · (code − 2^(bits−1))``
(symmetric), ``scale · code + zero`` (asymmetric), or ``scale · code_book[code]`` for a
non-uniform code book (NF4). An optional ``input_scale`` multiplies the input channels first
(AWQ's and SmoothQuant's per-channel scaling), and ``act_bits=8`` rounds each input row to int8
(SmoothQuant's W8A8).

Kernels (chosen once per layer by ``kernel_for``, by shape and by the CPU's instruction set):

- ``int4pack``: PyTorch's ``_weight_int4pack_mm_for_cpu`` on 4-bit affine codes with groups of
  32/64/128/256 — reads 4 bits a weight; computes ``(code − 8)·s + z`` with bf16 s and z.
- ``int4pack-split``: an 8-bit code ``c`` is ``16·hi + lo``; both nibble planes go through the
  same int4 kernel as one matmul over a doubled input ``[x, x]`` (8 bits a weight, exact in
  the codes, groups of 32+ — GGUF's Q8_0 and group-wise int8).
- ``int8pack``: ``_weight_int8pack_mm`` for 8-bit codes with one scale per row, plus
  ``zero · Σx`` for a zero point.
- ``dequant``: any other shape (NF4's code book, Q6_K's groups of 16, dimensions the packed
  kernels refuse): the weight is rebuilt in the compute dtype at each call — correct, slow, and
  reported as such by ``kernel``.

The packed kernels vectorise their bf16 path (their float32 path is scalar: about 100× slower
at batch 1 when measured here), so they take bf16 inputs where the CPU has native bf16
(AVX-512 BF16 or AMX) and float16 elsewhere; the output comes back in the input's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, ModelError

INT4_GROUPS = (32, 64, 128, 256)
KERNELS = ("int4pack", "int4pack-split", "int8pack", "dequant")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_isa() -> str:
    """The widest vector instruction set the kernels can use here: amx, avx512_bf16, avx512, avx2 or baseline."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "baseline"


def kernel_dtype() -> torch.dtype:
    """The activation dtype of the packed kernels on this CPU: bf16 where it is native, float16 elsewhere."""
    return torch.bfloat16 if cpu_isa() in ("amx", "avx512_bf16") else torch.float16


def kernel_for(bits: int, group_size: int, in_features: int, code_book: bool, out_features: int = 16) -> str:
    """Which kernel a layer of this format and shape runs (see the module docstring)."""
    if code_book or in_features % group_size:
        return "dequant"
    if bits == 8 and group_size == in_features and in_features % 16 == 0:
        return "int8pack"
    if out_features % 16:  # the int4 packing works on tiles of 16 rows
        return "dequant"
    if bits == 4 and group_size in INT4_GROUPS:
        return "int4pack"
    if bits == 8 and group_size in INT4_GROUPS:
        return "int4pack-split"
    return "dequant"


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes in 0..15 → [N, K/2] uint8, the even column in the low nibble."""
    c = codes.to(torch.uint8)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_nibbles``: [N, K/2] uint8 → [N, K] uint8 codes."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def check_group_size(group_size: int, in_features: int, what: str = "the weight") -> None:
    """A clear error when ``group_size`` does not divide the input width."""
    if group_size < 1 or in_features % group_size:
        divisors = [g for g in (32, 64, 128, 256) if in_features % g == 0] or [in_features]
        raise ConfigError(f"group size {group_size} does not divide the input dimension {in_features} of {what}",
                          f"use a group size that divides it ({', '.join(map(str, divisors))})")


class QuantLinear(nn.Module):
    """A linear layer with quantized weights (see the module docstring); ``dequantize()`` gives the
    float32 weight it stands for."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None, *,
                 bits: int, group_size: int, in_features: int, code_book: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, input_scale: torch.Tensor | None = None,
                 act_bits: int | None = None, method: str = "") -> None:
        super().__init__()
        if bits not in (4, 8):
            raise ConfigError(f"codes of {bits} bits are not stored", "store 4- or 8-bit codes")
        check_group_size(group_size, in_features)
        if act_bits not in (None, 8):
            raise ConfigError(f"activation quantisation to {act_bits} bits is not implemented", "use act_bits=8")
        self.in_features, self.out_features = in_features, scale.shape[0]
        self.bits, self.group_size, self.act_bits, self.method = bits, group_size, act_bits, method
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scale", scale.contiguous() if scale.dtype == torch.float16 else scale.float().contiguous())
        self.register_buffer("zero", None if zero is None else
                             zero.contiguous() if zero.dtype == torch.float16 else zero.float().contiguous())
        self.register_buffer("code_book", None if code_book is None else code_book.float())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float().contiguous())
        self.kernel = kernel_for(bits, group_size, in_features, code_book is not None, self.out_features)
        self.compute_dtype = kernel_dtype()
        self.kernel_tensors: tuple[torch.Tensor, ...] | None = None
        expect = (self.out_features, in_features // 2 if bits == 4 else in_features)
        if tuple(codes.shape) != expect or codes.dtype != torch.uint8:
            raise ModelError(f"codes of shape {tuple(codes.shape)} ({codes.dtype}) do not fit a {bits}-bit "
                             f"{self.out_features}×{in_features} weight", "the quantized weights are damaged")

    # --- what the weight is ---------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The format of this layer (what ``config.json`` records so the directory loads without re-quantizing)."""
        return {"bits": self.bits, "group_size": self.group_size, "in_features": self.in_features,
                "out_features": self.out_features, "zero": self.zero is not None,
                "scale_dtype": str(self.scale.dtype).removeprefix("torch."),
                "zero_dtype": None if self.zero is None else str(self.zero.dtype).removeprefix("torch."),
                "code_book": self.code_book is not None, "bias": self.bias is not None,
                "input_scale": self.input_scale is not None, "act_bits": self.act_bits, "method": self.method}

    @classmethod
    def empty(cls, spec: dict[str, Any]) -> QuantLinear:
        """A layer of ``spec``'s format with zero-filled tensors, to load saved ones into."""
        n, k, g = spec["out_features"], spec["in_features"], spec["group_size"]
        codes = torch.zeros(n, k // 2 if spec["bits"] == 4 else k, dtype=torch.uint8)
        half = {"float16": torch.float16}
        scale = torch.zeros(n, k // g, dtype=half.get(spec.get("scale_dtype"), torch.float32))
        zero = torch.zeros(n, k // g, dtype=half.get(spec.get("zero_dtype"), torch.float32)) if spec["zero"] else None
        return cls(codes, scale, zero,
                   bits=spec["bits"], group_size=g, in_features=k,
                   code_book=torch.zeros(2 ** spec["bits"]) if spec["code_book"] else None,
                   bias=torch.zeros(n) if spec["bias"] else None,
                   input_scale=torch.ones(k) if spec["input_scale"] else None,
                   act_bits=spec["act_bits"], method=spec.get("method", ""))

    def integer_codes(self) -> torch.Tensor:
        """The codes as [N, K] uint8 (unpacking 4-bit pairs)."""
        return unpack_nibbles(self.codes) if self.bits == 4 else self.codes

    def dequantize(self) -> torch.Tensor:
        """The float32 weight [N, K] (before ``input_scale``) the codes stand for."""
        codes = self.integer_codes()
        n, k, g = self.out_features, self.in_features, self.group_size
        scale = self.scale.float()[:, :, None]
        if self.code_book is not None:
            values = self.code_book[codes.long()].view(n, k // g, g) * scale
        elif self.zero is None:
            values = (codes.float() - 2 ** (self.bits - 1)).view(n, k // g, g) * scale
        else:
            values = codes.float().view(n, k // g, g) * scale + self.zero.float()[:, :, None]
        return values.reshape(n, k)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the layer multiplies its input by (``input_scale`` folded in): what a LoRA
        adapter around this layer (``lmlab.peft.lora.LoraLinear``) or an export reads."""
        w = self.dequantize()
        return w * self.input_scale[None, :] if self.input_scale is not None else w

    def kernel_zero(self) -> torch.Tensor:
        """z of ``scale·(code − 2^(bits−1)) + z``, the form the packed kernels take (float32)."""
        offset = torch.zeros_like(self.scale, dtype=torch.float32) if self.zero is None else \
            self.zero.float() + 2 ** (self.bits - 1) * self.scale.float()
        return offset

    def storage_bits(self) -> int:
        """Bits this layer's weight takes in memory and on disk: codes, scales, zero points, code book."""
        tensors = [self.codes, self.scale, self.zero, self.code_book, self.input_scale]
        return sum(t.numel() * t.element_size() * 8 for t in tensors if t is not None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, kernel={self.kernel}, method={self.method or 'custom'}")

    # --- kernels --------------------------------------------------------------------------------
    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.kernel_tensors = None  # new codes: pack again

    def pack(self) -> None:
        """Build the kernel's tensors from the codes (done on the first call; call it before ``torch.compile``)."""
        dtype, n, k = self.compute_dtype, self.out_features, self.in_features
        scale, zero = self.scale.float(), self.kernel_zero()
        if self.kernel == "int4pack":
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_nibbles(self.codes).to(torch.int32), 1)
            scales = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)  # [K/G, N, 2]
            self.kernel_tensors = (weight, scales)
        elif self.kernel == "int4pack-split":
            c = self.codes.to(torch.int32)
            planes = torch.cat([c >> 4, c & 15], dim=1)  # [N, 2K]: the hi plane, then the lo plane
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(planes, 1)
            # s·(code − 128) + z = (hi − 8)·16s + [(lo − 8)·s + 8s + z], with code = 16·hi + lo
            hi = torch.stack([16 * scale, torch.zeros_like(scale)], dim=-1)
            lo = torch.stack([scale, 8 * scale + zero], dim=-1)
            scales = torch.cat([hi, lo], dim=1).transpose(0, 1).contiguous().to(dtype)  # [2K/G, N, 2]
            self.kernel_tensors = (weight, scales)
        elif self.kernel == "int8pack":
            signed = (self.codes.to(torch.int16) - 128).to(torch.int8).contiguous()
            offset = (zero[:, 0].to(dtype),) if self.zero is not None else ()
            self.kernel_tensors = (signed, scale[:, 0].to(dtype)) + offset
        else:
            self.kernel_tensors = ()
        if self.kernel != "dequant" and (n == 0 or k == 0):
            raise ModelError("an empty weight cannot be packed")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_tensors is None:
            self.pack()
        dtype = self.compute_dtype if x.device.type == "cpu" else x.dtype
        flat = x.reshape(-1, self.in_features)
        if self.input_scale is not None:
            flat = flat * self.input_scale.to(flat.dtype)
        row_scale = None
        if self.act_bits == 8:  # per-token absmax int8 (SmoothQuant's dynamic activations); rescaled after
            row_scale = flat.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-8) / 127
            flat = torch.round(flat.float() / row_scale).clamp(-127, 127)
        flat = flat.to(dtype).contiguous()
        packed = x.device.type == "cpu" and not (torch.is_grad_enabled() and flat.requires_grad)
        if not packed:  # the packed kernels have no backward: gradients to the input (LoRA below) need the weight
            out = F.linear(flat, self.dequantize().to(flat.device, dtype))
        elif self.kernel == "int4pack":
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.kernel_tensors[0], self.group_size, self.kernel_tensors[1])
        elif self.kernel == "int4pack-split":
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(torch.cat([flat, flat], dim=1), self.kernel_tensors[0],
                                                            self.group_size, self.kernel_tensors[1])
        elif self.kernel == "int8pack":
            out = torch.ops.aten._weight_int8pack_mm(flat, self.kernel_tensors[0], self.kernel_tensors[1])
            if len(self.kernel_tensors) == 3:
                out = out + flat.sum(dim=1, keepdim=True) * self.kernel_tensors[2]
        else:
            out = F.linear(flat, self.dequantize().to(flat.device, dtype))
        out = out.to(x.dtype)
        if row_scale is not None:
            out = out * row_scale.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)


def concat_rows(layers: Sequence[QuantLinear]) -> QuantLinear | None:
    """One layer computing ``layers``' outputs side by side (q/k/v, gate/up), or None when their formats
    differ; the members' code/scale/zero buffers become row views of the joint ones (no second copy)."""
    first = layers[0]
    same = ("bits", "group_size", "in_features", "act_bits", "kernel")
    if not all(isinstance(m, QuantLinear) for m in layers) or any(
            getattr(m, a) != getattr(first, a) for m in layers for a in same):
        return None
    for name in ("zero", "code_book", "bias", "input_scale"):
        present = [getattr(m, name) is not None for m in layers]
        if len(set(present)) != 1:
            return None
    if first.code_book is not None and not all(torch.equal(m.code_book, first.code_book) for m in layers):
        return None
    if first.input_scale is not None and not all(torch.equal(m.input_scale, first.input_scale) for m in layers):
        return None

    def cat(name: str) -> torch.Tensor | None:
        return None if getattr(first, name) is None else torch.cat([getattr(m, name) for m in layers])

    joint = QuantLinear(cat("codes"), cat("scale"), cat("zero"), bits=first.bits, group_size=first.group_size,
                        in_features=first.in_features, code_book=first.code_book, bias=cat("bias"),
                        input_scale=first.input_scale, act_bits=first.act_bits, method=first.method)
    start = 0
    for m in layers:
        rows = slice(start, start + m.out_features)
        for name in ("codes", "scale", "zero", "bias"):
            if getattr(m, name) is not None:
                setattr(m, name, getattr(joint, name)[rows])
        start += m.out_features
    return joint


def quantized_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """Every ``QuantLinear`` of ``model`` by its module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted path) of ``model`` is."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def quantization_config(model: nn.Module) -> dict[str, Any] | None:
    """What ``config.json`` records of a model's quantized layers ({"layers": {name: spec}}), None without any."""
    layers = quantized_layers(model)
    if not layers:
        return None
    methods = sorted({layer.method for layer in layers.values()})
    return {"methods": methods, "layers": {name: layer.spec() for name, layer in layers.items()}}


def use_quantized_layers(model: nn.Module, quantization: dict[str, Any]) -> None:
    """Put empty ``QuantLinear`` layers where ``quantization`` (from ``quantization_config``) lists them,
    ready for the saved tensors."""
    layers = quantization.get("layers") if isinstance(quantization, dict) else None
    if not isinstance(layers, dict):
        raise ModelError("config.json's quantization entry has no layer list", "save the quantized model again")
    for name, spec in layers.items():
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ModelError(f"config.json lists a quantized layer {name!r} the model does not have",
                             "the files come from different models") from None
        replace_module(model, name, QuantLinear.empty(spec))
