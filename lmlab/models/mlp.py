"""Position-wise feed-forward blocks: ReLU, GELU or SiLU MLPs and the gated SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("relu", "gelu", "silu", "swiglu")
_ACT = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


class MLP(nn.Module):
    """down(act(up(x))), or down(silu(gate(x)) * up(x)) for SwiGLU (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int, activation: str, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.gate = nn.Linear(dim, hidden, bias=bias) if activation == "swiglu" else None
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            h = F.silu(self.gate(x)) * self.up(x)
        else:
            h = _ACT[self.activation](self.up(x))
        return self.dropout(self.down(h))
