"""Bottleneck adapters (Houlsby et al. 2019) wrapped around sub-modules' outputs.

h ↦ h + up(act(down(h))), inserted after the attention block and after the MLP (Houlsby
placement) by wrapping those sub-modules. The up-projection starts at zero, so each adapter
starts as the identity and the model starts unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number
from . import record
from .targets import find_modules, freeze, replace_module

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class AdapterConfig:
    """Bottleneck width, activation and the sub-modules whose outputs pass through an adapter."""

    method: ClassVar[str] = "adapter"
    bottleneck: int = 16
    activation: str = "relu"
    targets: list[str] = field(default_factory=lambda: ["self_attn", "mlp"])
    init_std: float = 1e-2

    def __post_init__(self) -> None:
        check_number("bottleneck", self.bottleneck, low=1, integer=True)
        check_choice("activation", self.activation, list(ACTIVATIONS))
        check_number("init_std", self.init_std, low=0)


class BottleneckAdapter(nn.Module):
    """Down-project, nonlinearity, up-project (zero at init), plus the skip connection."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "relu",
                 init_std: float = 1e-2, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, dtype=dtype, device=device)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim, dtype=dtype, device=device)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def output_features(module: nn.Module) -> tuple[int, torch.dtype, torch.device]:
    """Width, dtype and device of a module's output: its own or its last nn.Linear's."""
    last = module if isinstance(module, nn.Linear) else None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub
    if last is None:
        raise ConfigError(f"cannot tell the output width of {type(module).__name__}",
                          "target modules that are, or end with, an nn.Linear")
    return last.out_features, last.weight.dtype, last.weight.device


def map_first(out, fn):
    """Apply ``fn`` to a module's output, or to the first item of a tuple output."""
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return type(out)([fn(out[0]), *out[1:]])
    raise ConfigError(f"cannot put an adapter on an output of type {type(out).__name__}",
                      "target modules returning a tensor or a tuple starting with one")


class WithAdapter(nn.Module):
    """Runs the wrapped sub-module, then its adapter on the (first) output."""

    adapter_names = ("adapter",)

    def __init__(self, base: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter
        self.enabled = True  # False: the wrapped module alone (``lmlab.peft.adapters_disabled``)

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        return map_first(out, self.adapter) if self.enabled else out


def apply_adapters(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Freeze ``model`` and put a bottleneck adapter after each targeted sub-module (in place)."""
    fingerprint = record.start(model, config)
    names = find_modules(model, config.targets)
    freeze(model)
    for name in names:
        base = model.get_submodule(name)
        dim, dtype, device = output_features(base)
        adapter = BottleneckAdapter(dim, config.bottleneck, config.activation, config.init_std,
                                    dtype, device)
        replace_module(model, name, WithAdapter(base, adapter))
    return record.finish(model, config, fingerprint)
