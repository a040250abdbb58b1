"""Merge adapters into the base weights and back, for every wrapper that can (LoRA, DoRA, IA3)."""

from __future__ import annotations

from torch import nn

from ..core.errors import ConfigError
from . import record
from .targets import replace_module


def _mergeable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "merge") and hasattr(m, "unmerge")]


def merge(model: nn.Module) -> nn.Module:
    """Fold every mergeable adapter into its base weight (outputs unchanged, no extra matmuls)."""
    for _, module in _mergeable(model):
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo ``merge``: the base weights are restored and the adapters act separately again."""
    for _, module in _mergeable(model):
        module.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then replace each wrapper by its plain base layer: the model is ordinary again.

    QLoRA's NF4 bases are dequantised first. Methods without a mergeable form are refused.
    """
    rec = record.record_of(model)
    wrappers = _mergeable(model)
    if not wrappers:
        raise ConfigError(f"the {rec['method']} method cannot be merged into the base weights",
                          "only LoRA, QLoRA, DoRA and IA3 merge; keep the adapter separate")
    for name, module in wrappers:
        replace_module(model, name, module.unload())
    object.__setattr__(model, record.RECORD_ATTR, None)
    return model
