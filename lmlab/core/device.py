"""Device and dtype selection: CUDA, then MPS, then CPU; bf16 only where the device does it well."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # torch is imported when a device is resolved, so `lmlab --help` starts fast
    import torch

_DTYPES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "f16": "float16",
    "float64": "float64", "fp64": "float64",
}


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn 'auto', 'cpu', 'cuda', 'cuda:1', 'mps' into a device, checking that it exists."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {name!r}", "use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available",
                          "use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} was asked for but MPS is not available",
                          "use --device cpu or auto")
    return device


def resolve_dtype(name: str | torch.dtype | None = "auto",
                  device: torch.device | None = None) -> torch.dtype:
    """Turn 'auto', 'fp32', 'bf16', 'fp16' ... into a dtype; 'auto' is bf16 on capable GPUs, else fp32."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        device = device or resolve_device("auto")
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return getattr(torch, _DTYPES[str(name).lower()])
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}",
                          f"use one of auto, {', '.join(sorted(set(_DTYPES)))}") from None
