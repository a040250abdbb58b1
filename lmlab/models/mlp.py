"""Position-wise feed-forward blocks: ReLU, GELU or SiLU MLPs and the gated SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import packed_outputs

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu")
ACTIVATION_FUNCTIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu,
                        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}  # GPT-2's "gelu_new"


class MLP(nn.Module):
    """down(act(up(x))), or down(silu(gate(x)) * up(x)) for SwiGLU (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int, activation: str, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.gate = nn.Linear(dim, hidden, bias=bias) if activation == "swiglu" else None
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.packed = None  # gate/up weights packed for decoding (lmlab.models.layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            gate, up = packed_outputs(x, (self.gate, self.up), self.packed) or (self.gate(x), self.up(x))
            h = F.silu(gate) * up
        else:
            h = ACTIVATION_FUNCTIONS[self.activation](self.up(x))
        return self.dropout(self.down(h))
