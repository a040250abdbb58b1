"""IA3 (Liu et al. 2022): learned vectors rescale keys, values and the MLP's inner activation.

Output targets (keys, values) compute l ⊙ (W x + b); input targets (the MLP's down projection)
compute W (l ⊙ x) + b, i.e. rescale the intermediate activation feeding the down projection,
as HF PEFT's ``feedforward_modules`` do. The vectors start at 1, so the model starts unchanged,
and both forms merge exactly into W (rows or columns scaled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..core.errors import ConfigError
from . import record
from .targets import find_modules, freeze, replace_module


@dataclass
class IA3Config:
    """Modules whose outputs are rescaled, and those (a subset) rescaled on their input instead."""

    method: ClassVar[str] = "ia3"
    targets: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"])
    input_targets: list[str] = field(default_factory=lambda: ["down_proj"])


class IA3Linear(nn.Module):
    """A frozen linear layer with a learned elementwise scale on its output or its input."""

    adapter_names = ("ia3_scale",)

    def __init__(self, base: nn.Linear, on_input: bool) -> None:
        super().__init__()
        self.base = base
        self.on_input = on_input
        size = base.in_features if on_input else base.out_features
        self.ia3_scale = nn.Parameter(torch.ones(size, dtype=base.weight.dtype,
                                                 device=base.weight.device))
        self.merged = False
        self.enabled = True  # False: the base layer alone (``lmlab.peft.adapters_disabled``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self.enabled:
            return self.base(x)
        if self.on_input:
            return self.base(x * self.ia3_scale)
        return self.base(x) * self.ia3_scale

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        if self.on_input:
            self.base.weight.mul_(self.ia3_scale[None, :])
        else:
            self.base.weight.mul_(self.ia3_scale[:, None])
            if self.base.bias is not None:
                self.base.bias.mul_(self.ia3_scale)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        if (self.ia3_scale == 0).any():
            raise ConfigError("cannot unmerge IA3 with a zero scale (the rows were erased)",
                              "keep an unmerged copy of the model")
        if self.on_input:
            self.base.weight.div_(self.ia3_scale[None, :])
        else:
            self.base.weight.div_(self.ia3_scale[:, None])
            if self.base.bias is not None:
                self.base.bias.div_(self.ia3_scale)
        self.merged = False

    def unload(self) -> nn.Module:
        self.merge()
        return self.base


def apply_ia3(model: nn.Module, config: IA3Config) -> nn.Module:
    """Freeze ``model`` and wrap the targeted nn.Linear layers with IA3 scales (in place)."""
    fingerprint = record.start(model, config)
    names = find_modules(model, config.targets, kinds=(nn.Linear,))
    on_input = set(find_modules(model, config.input_targets, kinds=(nn.Linear,))) \
        if config.input_targets else set()
    if not on_input <= set(names):
        raise ConfigError(f"input_targets {config.input_targets} name modules outside targets",
                          "every input target must also be a target")
    freeze(model)
    for name in names:
        replace_module(model, name, IA3Linear(model.get_submodule(name), name in on_input))
    return record.finish(model, config, fingerprint)
