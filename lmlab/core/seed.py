"""Seeding and deterministic kernels: what makes a run reproducible."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded with ``seed`` (or from OS entropy when ``seed`` is None)."""
    import torch

    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Within the block, PyTorch uses deterministic kernels only (``torch.use_deterministic_algorithms``):
    an operation whose result could depend on thread or GPU scheduling (atomic adds of repeated indices,
    some cuBLAS reductions) takes its deterministic implementation, or raises if it has none. On CUDA the
    cuBLAS workspace is fixed too (``CUBLAS_WORKSPACE_CONFIG``). PyTorch would also fill every new
    uninitialised tensor with NaN (a debugging aid that slowed training 1.6x here, bench/determinism.py);
    lmlab's code reads no uninitialised memory, so that stays off. The previous settings are restored after."""
    import torch
    import torch.utils.deterministic

    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.utils.deterministic.fill_uninitialized_memory = previous[1]
