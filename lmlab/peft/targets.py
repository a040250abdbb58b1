"""Choose the modules a PEFT method wraps by name pattern, swap them in place, report parameters.

A pattern is a glob matched against the full dotted module name *or* its last component
(``q_proj`` matches every ``...self_attn.q_proj``; ``layers.0.*`` only layer 0's modules),
or, written ``re:<regex>``, a regular expression that must match the full name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

import torch
from torch import nn

from ..core.errors import ConfigError


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], pattern)


def _check_patterns(patterns: Iterable[str]) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"target patterns must be non-empty strings, got {patterns!r}",
                          "name modules like 'q_proj', 'layers.*.mlp' or 're:.*\\.(k|v)_proj'")
    for p in patterns:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as exc:
                raise ConfigError(f"target pattern {p!r} is not a valid regular expression: {exc}",
                                  "fix the expression after 're:'") from None
    return patterns


def _name_list(model: nn.Module, limit: int = 40) -> str:
    names = [n for n, _ in model.named_modules() if n]
    # collapse per-layer repetition ("layers.0.x", "layers.1.x" → "layers.<i>.x") to keep it short
    short = list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".<i>", n) for n in names))
    more = f", ... ({len(short) - limit} more)" if len(short) > limit else ""
    return ", ".join(short[:limit]) + more


def find_modules(model: nn.Module, patterns: str | Iterable[str],
                 kinds: tuple[type, ...] | None = None) -> list[str]:
    """Names of the modules matching any pattern (and of one of ``kinds``), in model order.

    Every pattern must match at least one module; otherwise a ConfigError lists the names.
    """
    patterns = _check_patterns(patterns)
    found: list[str] = []
    used = set()
    for name, module in model.named_modules():
        if not name:
            continue
        hits = [p for p in patterns if _matches(name, p)]
        if not hits:
            continue
        if kinds is not None and not isinstance(module, kinds):
            continue
        found.append(name)
        used.update(hits)
    unused = [p for p in patterns if p not in used]
    if unused:
        what = "" if kinds is None else f" of kind {'/'.join(k.__name__ for k in kinds)}"
        raise ConfigError(f"target pattern(s) {', '.join(map(repr, unused))} matched no module{what}",
                          f"module names in this model: {_name_list(model)}")
    return found


def block_linear_names(model: nn.Module) -> list[str]:
    """Last names of the linear layers inside a transformer's blocks, in model order (the default
    targets of LoRA: every projection of attention and the MLP)."""
    names = [n.rsplit(".", 1)[-1] for n, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and n.startswith("blocks.")]
    return list(dict.fromkeys(names))



def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the sub-module ``name`` was (the parent's attribute or list slot)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def freeze(model: nn.Module) -> None:
    """Make every parameter of ``model`` non-trainable."""
    for p in model.parameters():
        p.requires_grad_(False)


def cast_frozen_linears(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen weights of linear layers in ``dtype`` (bf16 for bf16 autocast), returning the bytes saved.

    Autocast casts every linear weight to its dtype before each matmul anyway, so the outputs are
    unchanged while the fp32 copies of weights nothing updates, and the per-step casts, go away.
    A weight shared with another kind of module (an embedding tied to the output layer) stays.
    """
    shared = {id(p) for m in model.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    saved = 0
    for module in model.modules():
        w = module.weight if isinstance(module, nn.Linear) else None
        if w is None or w.requires_grad or id(w) in shared or not w.is_floating_point() or w.dtype == dtype:
            continue
        module.weight = nn.Parameter(w.detach().to(dtype), requires_grad=False)
        saved += w.numel() * (w.element_size() - module.weight.element_size())
    return saved


def parameter_report(model: nn.Module) -> dict:
    """Trainable and total parameter counts and the trainable percentage.

    Base weights stored quantised (QLoRA's NF4 buffers) count in the total as the parameters
    they stand for, so the percentage compares with the unquantised model's.
    """
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    total += sum(getattr(m, "quantized_numel", 0) for m in model.modules())
    return {"trainable_params": trainable, "total_params": total,
            "trainable_percent": 100.0 * trainable / total if total else 0.0}
