"""``quantize_model``: a model with every linear layer (and, by default, the output head) quantized
by one method, in place. The methods and their defaults are in ``METHODS``; those that need
activations (GPTQ, AWQ, SmoothQuant) take calibration token ids and run block by block
(``lmlab.quant.calibration``). The embedding lookup table stays in float.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..core.device import resolve_dtype
from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number
from ..models.quantized import QuantLinear, quantized_layers, replace_module
from .activation_aware import quantize_awq, quantize_smoothquant, shared_input_groups
from .calibration import blockwise
from .gptq import quantize_gptq
from .weights import quantize_affine, quantize_hqq, quantize_nf4_layer


@dataclass(frozen=True)
class Method:
    """A quantization method: its code width, default group size (None: per channel), whether its
    codes are symmetric, and whether it needs calibration data."""

    bits: int
    group_size: int | None
    symmetric: bool = True
    calibrated: bool = False
    per_tensor: bool = False


METHODS: dict[str, Method] = {
    "int8": Method(8, None),                                 # absmax per output channel
    "int8-tensor": Method(8, None, per_tensor=True),         # absmax, one scale for the tensor
    "int8-group": Method(8, 32),                             # absmax per group
    "int8-zeropoint": Method(8, None, symmetric=False),      # asymmetric per channel
    "int8-zeropoint-group": Method(8, 32, symmetric=False),
    "int4": Method(4, 32),                                   # symmetric group-wise
    "int4-zeropoint": Method(4, 32, symmetric=False),        # asymmetric group-wise
    "nf4": Method(4, 64),
    "hqq": Method(4, 64, symmetric=False),
    "gptq": Method(4, 64, symmetric=False, calibrated=True),
    "awq": Method(4, 64, symmetric=False, calibrated=True),
    "smoothquant": Method(8, None, calibrated=True),         # W8A8
}
ACTIVATION_DTYPES = ("float32", "bfloat16", "float16")


def quantize_model(model: nn.Module, method: str = "int8", *, group_size: int | None = None,
                   symmetric: bool | None = None, calibration: torch.Tensor | None = None,
                   act_order: bool = False, damp: float = 0.01, alpha: float = 0.5, dtype: str = "float32",
                   head: bool = True, head_method: str | None = None) -> nn.Module:
    """``model`` with its linear layers quantized by ``method`` (see ``METHODS``), in place; returned.

    ``group_size`` and ``symmetric`` override the method's; ``calibration`` [sequences, length] token ids for GPTQ
    (``act_order``, ``damp``), AWQ and SmoothQuant (``alpha``); ``dtype`` is the dtype of everything
    that stays float (residual stream, norms, attention, KV cache); ``head=False`` keeps the output
    projection in float; ``head_method`` quantizes it with another calibration-free method instead
    (e.g. ``int8-group``: llama.cpp's Q4_0/Q4_1 files keep the tied embedding/head in Q8_0).
    """
    check_choice("method", method, tuple(METHODS))
    if head_method is not None:
        check_choice("head_method", head_method, tuple(m for m, s in METHODS.items() if not s.calibrated))
        if not head or not isinstance(getattr(model, "head", None), nn.Linear):
            raise ConfigError("head_method needs a model with a float output head to quantize",
                              "leave head_method out, or head=True")
    check_choice("dtype", dtype, ACTIVATION_DTYPES)
    check_number("damp", damp, low=0.0)
    check_number("alpha", alpha, low=0.0, high=1.0)
    spec = METHODS[method]
    if symmetric is not None and symmetric != spec.symmetric:
        if method in ("nf4", "hqq", "smoothquant", "int8-tensor"):
            raise ConfigError(f"{method} has no {'symmetric' if symmetric else 'asymmetric'} variant",
                              "leave the symmetry to the method")
        spec = replace(spec, symmetric=symmetric)
    if quantized_layers(model):
        raise ConfigError("the model is already quantized", "quantize a freshly loaded float model")
    group = group_size or spec.group_size
    if spec.per_tensor and group_size:
        raise ConfigError("int8-tensor has one scale per tensor; a group size does not apply", "leave it out")
    if spec.calibrated:
        if calibration is None:
            raise ConfigError(f"{method} needs calibration text", "pass calibration token ids (--calibration FILE)")
        if not hasattr(model, "blocks"):
            raise ConfigError(f"{method} quantizes transformer models block by block", "use a calibration-free method")
        model.float()
        blockwise(model, calibration, lambda module, inputs: _calibrated(module, inputs, method, spec, group,
                                                                          act_order, damp, alpha),
                  head=head and head_method is None)
    else:
        skip = set() if head and head_method is None else {id(getattr(model, "head", None))}
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Linear) and id(module) not in skip:
                replace_module(model, name, _weight_only(module, method, spec, group))
    if head_method is not None:
        head_spec = METHODS[head_method]
        replace_module(model, "head", _weight_only(model.head, head_method, head_spec,
                                                   None if head_spec.per_tensor else head_spec.group_size))
    if not quantized_layers(model):
        raise ConfigError(f"the model has no linear layers to quantize with {method}", "quantize a neural model")
    float_dtype = resolve_dtype(dtype)
    for module in model.modules():  # what stays float takes dtype; the quantized layers keep float32 scales
        if not isinstance(module, QuantLinear):
            for p in module.parameters(recurse=False):
                p.data = p.data.to(float_dtype)
            for name, b in module.named_buffers(recurse=False):
                if b is not None and b.is_floating_point():
                    setattr(module, name, b.to(float_dtype))
    return model.eval()


def _weight_only(linear: nn.Linear, method: str, spec: Method, group: int | None) -> QuantLinear:
    w, b = linear.weight, linear.bias
    if method == "nf4":
        return quantize_nf4_layer(w, b, group_size=group)
    if method == "hqq":
        return quantize_hqq(w, b, bits=spec.bits, group_size=group)
    return quantize_affine(w, b, bits=spec.bits, group_size=group, symmetric=spec.symmetric,
                           per_tensor=spec.per_tensor, method=method)


def _calibrated(module: nn.Module, inputs: dict[str, torch.Tensor], method: str, spec: Method,
                group: int | None, act_order: bool, damp: float, alpha: float) -> None:
    linears = {name: module.get_submodule(name) for name in inputs}
    if method == "gptq":
        for name, linear in linears.items():
            replace_module(module, name, quantize_gptq(linear.weight, inputs[name], linear.bias, bits=spec.bits,
                                                       group_size=group or linear.in_features,
                                                       symmetric=spec.symmetric, act_order=act_order, damp=damp))
        return
    for names in shared_input_groups(module, inputs):
        members = {n: linears[n] for n in names}
        x = inputs[names[0]]
        if method == "awq":
            new = quantize_awq(members, x, bits=spec.bits, group_size=group or x.shape[1], symmetric=spec.symmetric)
        else:
            new = quantize_smoothquant(members, x, alpha=alpha)
        for name, layer in new.items():
            replace_module(module, name, layer)


def method_summary(method: str) -> dict[str, Any]:
    """The defaults of ``method`` (for reports)."""
    spec = METHODS[method]
    return {"method": method, "bits": spec.bits, "group_size": spec.group_size, "symmetric": spec.symmetric,
            "calibrated": spec.calibrated}
