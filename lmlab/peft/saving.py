"""Save and load only the adapter: ``adapter_model.safetensors`` + ``adapter_config.json``.

The adapter is every tensor a PEFT wrapper owns (its ``adapter_names``) plus every base
parameter left trainable (BitFit's biases, full fine-tuning's weights). The JSON records the
method, its config and the base model's fingerprint, and loading onto another base is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..core.errors import InputError, ModelError
from ..core.io import atomic_path, write_json
from . import record

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def methods() -> dict[str, tuple[type, Callable]]:
    """Method name → (config class, apply function)."""
    from .adapters import AdapterConfig, apply_adapters
    from .fusion import FusionConfig, apply_fusion
    from .ia3 import IA3Config, apply_ia3
    from .lora import LoraConfig, apply_lora
    from .prefix import PrefixConfig, apply_prefix
    from .prompt import PromptConfig, apply_prompt
    from .qlora import QLoraConfig, apply_qlora
    from .selective import BitFitConfig, FullConfig, apply_bitfit, apply_full

    pairs = [(LoraConfig, apply_lora), (QLoraConfig, apply_qlora), (IA3Config, apply_ia3),
             (AdapterConfig, apply_adapters), (FusionConfig, apply_fusion),
             (PromptConfig, apply_prompt), (PrefixConfig, apply_prefix),
             (BitFitConfig, apply_bitfit), (FullConfig, apply_full)]
    return {cls.method: (cls, fn) for cls, fn in pairs}


def config_from_dict(data: dict):
    """Rebuild a method config from ``{"method": ..., "config": {...}}``."""
    table = methods()
    name = data.get("method")
    if name not in table:
        raise ModelError(f"unknown PEFT method {name!r}", f"known: {', '.join(sorted(table))}")
    cls = table[name][0]
    try:
        return cls(**data.get("config", {}))
    except TypeError as exc:
        raise ModelError(f"the {name} config is malformed: {exc}",
                         "was it written by another lmlab version?") from None


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors by their names in ``model`` (shared tensors once)."""
    out: dict[str, torch.Tensor] = {}
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        for attr in getattr(module, "adapter_names", ()):
            obj = getattr(module, attr, None)
            if isinstance(obj, nn.Module):
                out.update({f"{prefix}{attr}.{k}": v for k, v in obj.state_dict().items()})
            elif isinstance(obj, torch.Tensor):
                out[f"{prefix}{attr}"] = obj
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[name] = p
    return {k: v.detach() for k, v in out.items()}


def save_adapter(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the adapter weights and the method record into the directory ``path``."""
    from safetensors.torch import save_file

    rec = record.record_of(model)
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory", "choose another output path")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    with atomic_path(out / ADAPTER_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "method": rec["method"]})
    write_json(out / ADAPTER_CONFIG, rec)
    return out


def read_adapter(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(record, tensors) of a saved adapter directory, with clear errors for bad files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    src = Path(path)
    if not (src / ADAPTER_CONFIG).is_file() or not (src / ADAPTER_WEIGHTS).is_file():
        raise InputError(f"{src} is not an adapter directory",
                         f"it must hold {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (from save_adapter)")
    try:
        rec = json.loads((src / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(src / ADAPTER_WEIGHTS))
    except (json.JSONDecodeError, SafetensorError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the adapter in {src}: {exc}", "save it again") from None
    if not isinstance(rec, dict) or "base" not in rec:
        raise ModelError(f"{src / ADAPTER_CONFIG} is not an lmlab adapter record", "save it again")
    return rec, tensors


def check_base(model: nn.Module, rec: dict) -> None:
    """Refuse a base model whose shapes or weights differ from the one the adapter was made on."""
    here = record.base_fingerprint(model)
    if here["sha256"] == rec["base"]["sha256"]:
        return
    theirs = rec["base"]["shapes"]
    ours = here["shapes"]
    diff = [f"{k}: {theirs.get(k)} vs {ours.get(k)}"
            for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    detail = f"shapes differ ({'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''})" if diff \
        else "the shapes match but the weights differ"
    raise ModelError(f"this adapter was trained on another base model: {detail}",
                     "load it onto the exact base model it was trained from")


def load_adapter(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Apply the saved method to the base ``model`` (in place) and load the adapter weights."""
    rec, tensors = read_adapter(path)
    config = config_from_dict(rec)
    record.start(model, config)  # refuses a model that already carries a method
    check_base(model, rec)
    apply = methods()[config.method][1]
    apply(model, config)
    expected = adapter_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelError(f"adapter weights do not fit the {config.method} layout: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}",
                         "the adapter file is damaged or from another lmlab version")
    for name, value in tensors.items():
        target = expected[name]
        if target.shape != value.shape:
            raise ModelError(f"adapter tensor {name} has shape {list(value.shape)}, "
                             f"the model expects {list(target.shape)}", "save the adapter again")
    with torch.no_grad():
        state = model.state_dict(keep_vars=True)
        for name, value in tensors.items():
            state[name].copy_(value)
    return model

