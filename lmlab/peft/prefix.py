"""Prefix tuning (Li and Liang 2021): trainable key/value prefixes at every attention layer.

P prefix positions per layer come from a reparameterising MLP: a small table E (P, d) goes
through Linear → tanh → Linear to all layers' keys and values at once, which trains more
stably than learning the prefixes directly; after training ``materialize`` keeps only the
result.

The attention interface (what an attention module must do to honour a prefix):
    ``attn.past_prefix`` is None or a callable; ``attn.past_prefix(batch_size)`` returns
    ``(keys, values)``, each (batch, n_kv_heads, P, head_dim), already in key/value space
    (no positional rotation is applied to them). The attention concatenates them in front of
    its own keys and values along the sequence axis, and every query may attend to all P
    prefix positions (the causal and padding masks get P leading "visible" columns).
See ``docs/peft.md`` for a reference attention that does this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_number
from . import record
from .targets import find_modules, freeze

PREFIX_ATTR = "past_prefix"
ENCODER_NAME = "prefix_encoder"


@dataclass
class PrefixConfig:
    """Prefix length, MLP width, attention modules, and (if they do not say) their kv shape."""

    method: ClassVar[str] = "prefix"
    n_tokens: int = 10
    hidden: int = 128
    targets: list[str] = field(default_factory=lambda: ["self_attn"])
    n_kv_heads: int | None = None
    head_dim: int | None = None
    reparameterize: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("n_tokens", self.n_tokens, low=1, integer=True)
        check_number("hidden", self.hidden, low=1, integer=True)


class PrefixEncoder(nn.Module):
    """Produces every layer's (keys, values) prefix from a table through an MLP (or directly)."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_tokens: int,
                 hidden: int, reparameterize: bool = True) -> None:
        super().__init__()
        self.shape = (n_layers, 2, n_kv_heads, head_dim)
        width = n_kv_heads * head_dim
        out = n_layers * 2 * width
        if reparameterize:
            self.table = nn.Parameter(torch.randn(n_tokens, width) * 0.02)
            self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, out))
        else:
            self.table = nn.Parameter(torch.randn(n_tokens, out) * 0.02)
            self.mlp = None

    def layer(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of layer ``index``, each (batch, n_kv_heads, P, head_dim)."""
        n_layers, _, heads, dim = self.shape
        rows = slice(index * 2 * heads * dim, (index + 1) * 2 * heads * dim)
        if self.mlp is None:
            flat = self.table[:, rows]
        else:
            first, last = self.mlp[0], self.mlp[2]
            hidden = torch.tanh(first(self.table))
            flat = F.linear(hidden, last.weight[rows], last.bias[rows])  # only this layer's rows
        kv = flat.view(-1, 2, heads, dim).permute(1, 2, 0, 3)        # (2, heads, P, dim)
        kv = kv.unsqueeze(1).expand(2, batch_size, heads, kv.shape[2], dim)
        return kv[0], kv[1]

    @torch.no_grad()
    def materialize(self) -> None:
        """Replace table + MLP by the prefixes they produce (inference needs no MLP)."""
        if self.mlp is None:
            return
        self.table = nn.Parameter(self.mlp(self.table), requires_grad=self.table.requires_grad)
        self.mlp = None


class LayerPrefix:
    """The callable placed at ``attn.past_prefix``: one layer's view of the shared encoder."""

    def __init__(self, encoder: PrefixEncoder, index: int) -> None:
        self.encoder = encoder
        self.index = index

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.layer(self.index, batch_size)


def _kv_shape(module: nn.Module, config: PrefixConfig) -> tuple[int, int]:
    heads = config.n_kv_heads or getattr(module, "n_kv_heads", None) or \
        getattr(module, "num_key_value_heads", None) or \
        getattr(getattr(module, "config", None), "num_key_value_heads", None)
    dim = config.head_dim or getattr(module, "head_dim", None)
    if not heads or not dim:
        raise ConfigError(f"cannot tell the key/value shape of {type(module).__name__}",
                          "set n_kv_heads and head_dim in the PrefixConfig")
    return int(heads), int(dim)


def apply_prefix(model: nn.Module, config: PrefixConfig) -> nn.Module:
    """Freeze ``model``, add a prefix encoder, and point each attention's ``past_prefix`` at it."""
    fingerprint = record.start(model, config)
    names = find_modules(model, config.targets)
    modules = [model.get_submodule(n) for n in names]
    shapes = {_kv_shape(m, config) for m in modules}
    if len(shapes) != 1:
        raise ConfigError(f"the targeted attention modules disagree on (kv heads, head dim): {shapes}",
                          "target attention modules of one shape")
    (heads, dim), = shapes
    freeze(model)
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        encoder = PrefixEncoder(len(modules), heads, dim, config.n_tokens, config.hidden,
                                config.reparameterize)
    ref = next(model.parameters(), None)
    if ref is not None:
        encoder.to(device=ref.device, dtype=ref.dtype)
    model.add_module(ENCODER_NAME, encoder)
    for index, module in enumerate(modules):
        object.__setattr__(module, PREFIX_ATTR, LayerPrefix(encoder, index))
    return record.finish(model, config, fingerprint)
