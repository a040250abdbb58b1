"""Pruning: set weights of the linear layers to zero by a score, unstructured or 2:4.

- magnitude: score |W_ij|, the smallest ``sparsity`` fraction of each layer removed (Han et al. 2015).
- Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): score
  |W_ij|·‖X_j‖₂ with X_j the j-th input feature over calibration tokens, compared within each
  output row; no weight update, no retraining.
- 2:4 semi-structured (NVIDIA Ampere's sparse tensor cores): in every run of 4 consecutive
  inputs of a row the 2 lowest scores are removed — 50 % sparsity in a pattern hardware can skip.

Pruning keeps the dense layout (the zeros are stored), so it changes quality, not speed, here;
``sparsity_of`` reports the fraction of zero weights. The output head and embeddings are kept.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number
from .calibration import blockwise

PATTERNS = ("unstructured", "2:4")
SCORES = ("magnitude", "wanda")


def prune_mask(score: torch.Tensor, sparsity: float, pattern: str = "unstructured", per_row: bool = False
               ) -> torch.Tensor:
    """Keep-mask (True = keep) of a weight's ``score`` [N, K]: 2:4 per run of 4 inputs, or the lowest
    ``sparsity`` fraction removed per row (``per_row``, Wanda) or over the whole layer (magnitude)."""
    n, k = score.shape
    if pattern == "2:4":
        if k % 4:
            raise ConfigError(f"2:4 sparsity needs an input width divisible by 4, got {k}", "prune unstructured")
        runs = score.reshape(n, k // 4, 4)
        drop = runs.topk(2, dim=2, largest=False).indices
        return torch.ones_like(runs, dtype=torch.bool).scatter(2, drop, False).reshape(n, k)
    if per_row:
        count = int(k * sparsity)
        if count == 0:
            return torch.ones_like(score, dtype=torch.bool)
        drop = score.topk(count, dim=1, largest=False).indices
        return torch.ones_like(score, dtype=torch.bool).scatter(1, drop, False)
    count = int(score.numel() * sparsity)
    if count == 0:
        return torch.ones_like(score, dtype=torch.bool)
    threshold = score.reshape(-1).kthvalue(count).values
    return score > threshold


def prune_model(model: nn.Module, sparsity: float = 0.5, *, score: str = "magnitude",
                pattern: str = "unstructured", calibration: torch.Tensor | None = None) -> nn.Module:
    """``model`` with its linear layers (not the output head) pruned in place; returned.

    ``score`` magnitude or wanda (needs ``calibration`` token ids); ``pattern`` unstructured (at
    ``sparsity``) or 2:4 (always 50 %)."""
    check_choice("score", score, SCORES)
    check_choice("pattern", pattern, PATTERNS)
    check_number("sparsity", sparsity, low=0.0, high=0.99)
    head = getattr(model, "head", None)

    def prune(module: nn.Module, inputs: dict[str, torch.Tensor] | None) -> None:
        with torch.no_grad():
            for name, m in module.named_modules():
                if isinstance(m, nn.Linear) and m is not head:
                    s = m.weight.abs().float()
                    if inputs is not None:
                        s = s * inputs[name].norm(dim=0)[None, :]
                    m.weight.mul_(prune_mask(s, sparsity, pattern, per_row=inputs is not None).to(m.weight.dtype))

    if score == "wanda":
        if calibration is None:
            raise ConfigError("Wanda scores weights by calibration activations", "pass calibration token ids")
        blockwise(model, calibration, prune, head=False)
    else:
        prune(model, None)
    return model


def sparsity_of(model: nn.Module) -> float:
    """Fraction of zero weights over the linear layers other than the output head."""
    head = getattr(model, "head", None)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m is not head]
    return sum(int((w == 0).sum()) for w in weights) / max(sum(w.numel() for w in weights), 1)
