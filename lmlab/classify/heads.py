"""The classification head for fine-tuning a pretrained encoder or decoder: pool, then project.

Mean pooling averages the hidden states of real tokens (padding masked out) — the encoder's
choice; last-token pooling takes each sequence's final real token — the causal decoder's,
as only it has seen the whole text. The trainer's classification objective puts this on top
of an lmlab model's hidden states.
"""

from __future__ import annotations

import torch

from ..core.validate import check_choice

POOLINGS = ("mean", "last")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(batch, time, dim) hidden states and a (batch, time) 0/1 mask → (batch, dim)."""
    check_choice("pooling", how, POOLINGS)
    mask = mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)  # works for left or right padding
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class ClassificationHead(torch.nn.Module):
    """Pooling + dropout + linear layer to ``n_classes`` logits."""

    def __init__(self, dim: int, n_classes: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.dropout = torch.nn.Dropout(dropout)
        self.proj = torch.nn.Linear(dim, n_classes)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(pool(hidden, mask, self.pooling)))
