"""LoRA (Hu et al. 2021): y = W x + (alpha/r) B A x with A random, B = 0, so training starts at W.

Options: rsLoRA scaling alpha/sqrt(r) (Kalajdzievski 2023) and DoRA (Liu et al. 2024), which
splits W into a per-output-row magnitude m and a direction: y = m ⊙ (W + s B A) x / ||W + s B A||
with the norm treated as a constant in the backward pass, as the DoRA paper does. Merging folds
the update into W (zero extra inference cost); unmerging restores W to within float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelError
from ..core.validate import check_number
from . import record
from .targets import find_modules, freeze, replace_module


@dataclass
class LoraConfig:
    """Rank, alpha, dropout on the LoRA input, target-module patterns, rsLoRA and DoRA switches."""

    method: ClassVar[str] = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    rslora: bool = False
    dora: bool = False

    def __post_init__(self) -> None:
        check_number("r", self.r, low=1, integer=True)
        check_number("alpha", self.alpha, low=0, low_inclusive=False)
        check_number("dropout", self.dropout, low=0, high=1, high_inclusive=False)

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


def base_weight(module: nn.Module) -> torch.Tensor:
    """The floating-point weight of a linear base (dequantised on the fly for an NF4 base)."""
    if isinstance(module, nn.Linear):
        return module.weight
    return module.dequantized_weight()


class LoraLinear(nn.Module):
    """A linear layer plus a low-rank update; the base layer stays frozen inside as ``base``."""

    adapter_names = ("lora_A", "lora_B", "magnitude")

    def __init__(self, base: nn.Module, config: LoraConfig) -> None:
        super().__init__()
        self.base = base
        weight = base_weight(base)
        # adapters of a quantised base train in fp32 (as PEFT keeps them), else in W's dtype
        dtype = weight.dtype if isinstance(base, nn.Linear) else torch.float32
        kw = {"dtype": dtype, "device": weight.device}
        self.lora_A = nn.Parameter(torch.empty(config.r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, config.r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's (and PEFT's) init
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.magnitude = None
        if config.dora:
            self.magnitude = nn.Parameter(weight.detach().to(dtype).norm(dim=1))
        self.merged = False
        self.enabled = True  # False: the base layer alone (``lmlab.peft.adapters_disabled``)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def lora_weight(self) -> torch.Tensor:
        """s · B A, the low-rank update in the shape of W."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def _dora_scale(self, weight: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        norm = (weight + update.to(weight.dtype)).norm(dim=1).detach()
        return self.magnitude / norm

    def delta_weight(self) -> torch.Tensor:
        """What merging adds to the base weight (a task vector for this layer)."""
        update = self.lora_weight()
        if self.magnitude is None:
            return update
        weight = base_weight(self.base)
        return self._dora_scale(weight, update)[:, None] * (weight + update) - weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged or not self.enabled:
            return result
        dropped = self.dropout(x).to(self.lora_A.dtype)
        if self.magnitude is None and (result.dtype == dropped.dtype or torch.is_autocast_enabled(x.device.type)):
            # result + (x Aᵀ)(s B)ᵀ as one addmm: s scales the small B, and the sum happens inside the
            # matmul, so no full-size elementwise product or sum runs forward or backward
            low = F.linear(dropped, self.lora_A).reshape(-1, self.lora_A.shape[0])
            out = torch.addmm(result.reshape(-1, result.shape[-1]), low, (self.lora_B * self.scaling).t())
            return out.view(result.shape)
        lora = F.linear(F.linear(dropped, self.lora_A), self.lora_B) * self.scaling
        if self.magnitude is None:
            return result + lora.to(result.dtype)
        weight = base_weight(self.base)
        scale = self._dora_scale(weight, self.lora_weight().detach())
        if isinstance(self.dropout, nn.Identity):
            plain = result if self.base.bias is None else result - self.base.bias
        else:
            plain = F.linear(dropped.to(weight.dtype), weight)
        return result + ((scale - 1) * plain + scale * lora).to(result.dtype)

    def _linear_base(self) -> nn.Linear:
        if not isinstance(self.base, nn.Linear):
            raise ModelError("cannot merge LoRA into a quantised base weight in place",
                             "use merge_and_unload(model), which dequantises the base first")
        return self.base

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight; forward then costs one matmul."""
        if self.merged:
            return
        base = self._linear_base()
        update = self.lora_weight()
        if self.magnitude is None:
            base.weight += update.to(base.weight.dtype)
        else:
            scale = self._dora_scale(base.weight, update)
            self._merge_scale = scale
            base.weight.copy_(scale[:, None] * (base.weight + update))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the base weight."""
        if not self.merged:
            return
        base = self._linear_base()
        update = self.lora_weight()
        if self.magnitude is None:
            base.weight -= update.to(base.weight.dtype)
        else:
            base.weight.copy_(base.weight / self._merge_scale[:, None] - update)
            del self._merge_scale
        self.merged = False

    def unload(self) -> nn.Module:
        """Merge and hand back the plain base layer (an NF4 base is dequantised first)."""
        if not isinstance(self.base, nn.Linear):
            self.base = self.base.to_linear()
        self.merge()
        return self.base


def wrap_lora(model: nn.Module, names: list[str], config: LoraConfig) -> None:
    """Replace each named linear (or NF4) module by a LoraLinear around it."""
    for name in names:
        replace_module(model, name, LoraLinear(model.get_submodule(name), config))


def apply_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Freeze ``model`` and put LoRA on every nn.Linear matching ``config.targets`` (in place)."""
    fingerprint = record.start(model, config)
    names = find_modules(model, config.targets, kinds=(nn.Linear,))
    freeze(model)
    wrap_lora(model, names, config)
    return record.finish(model, config, fingerprint)

