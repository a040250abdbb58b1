"""Methods that train a subset of the base's own parameters: BitFit (biases) and full fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..core.errors import ConfigError
from . import record
from .targets import find_modules, freeze


@dataclass
class BitFitConfig:
    """Which modules' biases train; ``add_missing`` gives bias-free nn.Linear layers a zero bias.

    LLaMA-family models have no biases at all, so BitFit on them needs ``add_missing`` (a zero
    bias changes nothing until it is trained).
    """

    method: ClassVar[str] = "bitfit"
    targets: list[str] = field(default_factory=lambda: ["*"])
    add_missing: bool = False


def apply_bitfit(model: nn.Module, config: BitFitConfig) -> nn.Module:
    """Freeze everything but the biases of the targeted modules (in place)."""
    fingerprint = record.start(model, config)
    names = find_modules(model, config.targets)
    freeze(model)
    found = 0
    for name in names:
        module = model.get_submodule(name)
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):
            bias.requires_grad_(True)
            found += 1
        elif bias is None and config.add_missing and isinstance(module, nn.Linear):
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                   device=module.weight.device))
            found += 1
    if not found:
        raise ConfigError("BitFit found no bias parameters in the targeted modules",
                          "set add_missing=True to give bias-free nn.Linear layers a zero bias")
    return record.finish(model, config, fingerprint)


@dataclass
class FullConfig:
    """Full fine-tuning, the baseline: every parameter trains."""

    method: ClassVar[str] = "full"


def apply_full(model: nn.Module, config: FullConfig | None = None) -> nn.Module:
    """Make every parameter trainable; the 'adapter' saved is then the whole model."""
    config = config or FullConfig()
    fingerprint = record.start(model, config)
    for p in model.parameters():
        p.requires_grad_(True)
    return record.finish(model, config, fingerprint)
