"""BERT's prediction-head transform: dense → activation → norm, applied to the last hidden states
before the (tied) output layer, which then carries a bias (``mlm_head=True``, the ``bert`` preset)."""

from __future__ import annotations

import torch
from torch import nn

from .mlp import ACTIVATION_FUNCTIONS
from .norms import make_norm


class HeadTransform(nn.Module):
    """norm(act(dense(x))): Hugging Face's ``BertPredictionHeadTransform``; with ``out_dim`` (ALBERT's
    factorised embeddings) the dense layer maps down to the embedding width (``AlbertMLMHead``)."""

    def __init__(self, dim: int, activation: str, norm: str, eps: float, bias: bool = True,
                 out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or dim
        self.dense = nn.Linear(dim, out_dim, bias=bias)
        self.act = ACTIVATION_FUNCTIONS["gelu" if activation == "swiglu" else activation]
        self.norm = make_norm(norm, out_dim, eps, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))
