"""What a PEFT method leaves on the model: its config and a fingerprint of the base it adapted.

``save_adapter`` writes that record next to the adapter weights, so ``load_adapter`` can refuse
an adapter trained on another base model (different shapes or different weights).
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import nn

from ..core.errors import ConfigError

RECORD_ATTR = "peft_record"


def base_fingerprint(model: nn.Module) -> dict:
    """SHA-256 over every parameter's name, shape, dtype and bytes, plus the shapes themselves."""
    digest = hashlib.sha256()
    shapes = {}
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        shapes[name] = list(tensor.shape)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"sha256": digest.hexdigest(), "shapes": shapes}


def start(model: nn.Module, config) -> dict:
    """Fingerprint ``model`` before a method changes it; refuse a second method on one model."""
    if getattr(model, RECORD_ATTR, None) is not None:
        raise ConfigError(f"this model already carries the PEFT method "
                          f"{getattr(model, RECORD_ATTR)['method']!r}",
                          "apply one method per model: start again from the base model")
    return base_fingerprint(model)


def finish(model: nn.Module, config, fingerprint: dict) -> nn.Module:
    """Attach the record (method, config, base fingerprint) to the adapted model."""
    record = {"method": config.method, "config": dataclasses.asdict(config),
              "base": fingerprint}
    object.__setattr__(model, RECORD_ATTR, record)
    return model


def record_of(model: nn.Module) -> dict:
    """The record a method attached, or a ConfigError if none was applied."""
    record = getattr(model, RECORD_ATTR, None)
    if record is None:
        raise ConfigError("this model carries no lmlab PEFT method",
                          "apply one first, e.g. lmlab.peft.apply_lora(model, LoraConfig(...))")
    return record
