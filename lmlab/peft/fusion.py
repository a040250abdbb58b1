"""AdapterFusion (Pfeiffer et al. 2021): attention over the outputs of several trained adapters.

At each adapted sub-module with output h and frozen adapters giving a_1..a_N (each already
h + its bottleneck), the fused output is Σ_i softmax_i(Q h · K a_i / √d) V a_i. Only Q, K and V
train. V starts as the identity and Q, K near zero, so with adapters that are themselves the
identity the fused model starts unchanged, and otherwise it starts near the adapters' mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_number
from . import record
from .adapters import AdapterConfig, BottleneckAdapter, map_first, output_features
from .targets import find_modules, freeze, replace_module


@dataclass
class FusionConfig(AdapterConfig):
    """The fused adapters' shape (as they were trained: bottleneck, activation, targets) and N."""

    method: ClassVar[str] = "adapter_fusion"
    n_adapters: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("n_adapters", self.n_adapters, low=1, integer=True)


class Fusion(nn.Module):
    """Scaled dot-product attention from the sub-module output over the adapters' outputs."""

    def __init__(self, dim: int, init_std: float = 1e-2, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.query = nn.Linear(dim, dim, **kw)
        self.key = nn.Linear(dim, dim, **kw)
        self.value = nn.Linear(dim, dim, **kw)
        for lin in (self.query, self.key):
            nn.init.normal_(lin.weight, std=init_std)
            nn.init.zeros_(lin.bias)
        nn.init.eye_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def weights(self, h: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Attention weights (..., N) of ``h`` (..., d) over ``outputs`` (..., N, d)."""
        scores = (self.query(h).unsqueeze(-2) * self.key(outputs)).sum(-1)
        return torch.softmax(scores / math.sqrt(h.shape[-1]), dim=-1)

    def forward(self, h: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return (self.weights(h, outputs).unsqueeze(-1) * self.value(outputs)).sum(-2)


class WithFusion(nn.Module):
    """Runs the wrapped sub-module, its N frozen adapters, and the fusion over them."""

    adapter_names = ("adapters", "fusion")

    def __init__(self, base: nn.Module, adapters: list[nn.Module], fusion: Fusion) -> None:
        super().__init__()
        self.base = base
        self.adapters = nn.ModuleList(adapters)
        self.fusion = fusion

    def _fuse(self, h: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([adapter(h) for adapter in self.adapters], dim=-2)
        return self.fusion(h, outputs)

    def forward(self, *args, **kwargs):
        return map_first(self.base(*args, **kwargs), self._fuse)


def apply_fusion(model: nn.Module, config: FusionConfig,
                 adapters: list[dict[str, torch.Tensor]] | None = None) -> nn.Module:
    """Freeze ``model``, load N trained bottleneck adapters at the targets and fuse them.

    ``adapters`` are the weights of adapters trained with ``apply_adapters`` on this base
    (e.g. ``read_adapter(dir)[1]``); None leaves them at their initial values, to be loaded.
    """
    fingerprint = record.start(model, config)
    if adapters is not None and len(adapters) != config.n_adapters:
        raise ConfigError(f"{len(adapters)} adapters given but n_adapters = {config.n_adapters}",
                          "pass one weight dict per fused adapter")
    names = find_modules(model, config.targets)
    freeze(model)
    for name in names:
        base = model.get_submodule(name)
        dim, dtype, device = output_features(base)
        blocks = [BottleneckAdapter(dim, config.bottleneck, config.activation, config.init_std,
                                    dtype, device) for _ in range(config.n_adapters)]
        for i, block in enumerate(blocks if adapters else []):
            prefix = f"{name}.adapter."
            state = {k[len(prefix):]: v for k, v in adapters[i].items() if k.startswith(prefix)}
            expected = block.state_dict()
            if set(state) != set(expected) or \
                    any(state[k].shape != expected[k].shape for k in expected):
                raise ConfigError(f"adapter {i} has no bottleneck adapter at {name!r} of this shape",
                                  "fuse adapters trained with apply_adapters and the same targets")
            block.load_state_dict(state)
        for block in blocks:
            block.requires_grad_(False)
        replace_module(model, name, WithFusion(base, blocks, Fusion(dim, config.init_std,
                                                                    dtype, device)))
    return record.finish(model, config, fingerprint)
