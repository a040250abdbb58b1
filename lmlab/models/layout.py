"""Weight layout for one-token decoding on CPU.

A linear layer computes ``x @ W.T``. For one row ``x`` (decoding at batch 1) that is a
matrix-vector product, and PyTorch's CPU kernel for it runs about a third faster when ``W.T`` is
contiguous, i.e. when ``W`` [out, in] is stored column-major (measured on SmolLM2's 211 weights:
48 → 36 ms a token in float32). Many rows (a prompt, training) run at the same speed either way.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.memory import release_free_memory


def column_major_linears(module: nn.Module) -> int:
    """Store every float32 CPU ``nn.Linear`` weight of ``module`` column-major, in place.

    Same shapes, values and parameters (a weight tied to an embedding stays tied), so results
    change only by float rounding order. Returns how many weights were restrided.
    """
    count = 0
    with torch.no_grad():
        for sub in module.modules():
            if not isinstance(sub, nn.Linear):
                continue
            w = sub.weight
            if w.device.type != "cpu" or w.dtype != torch.float32 or w.dim() != 2 or not w.is_contiguous():
                continue  # not float32 on CPU, or already restrided (a tied weight seen before)
            w.data = w.data.t().contiguous().t()
            count += 1
    if count:
        release_free_memory()  # the row-major copies just freed
    return count
