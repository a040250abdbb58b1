"""ELMo's task-specific mix of a pretrained model's layers (Peters et al., 2018, eq. 1):
ELMo_k = γ · Σ_j s_j · h_{k,j}, with s = softmax(w) over the layers. The weights w and the scale γ
are learned by the downstream task while the pretrained layers stay frozen. ``layer_norm`` normalises
each layer over its features first (no learned affine), which the paper found to help in some cases
(§3.2): the layers of a biLM differ in scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelError
from ..core.validate import check_number


class ScalarMix(nn.Module):
    """γ · Σ_j softmax(w)_j · layers[j] over ``n_layers`` layers of equal shape (w starts at 0: a plain mean),
    each layer normalised over its last dimension first with ``layer_norm``."""

    def __init__(self, n_layers: int, *, layer_norm: bool = False) -> None:
        super().__init__()
        check_number("n_layers", n_layers, low=1, integer=True)
        self.layer_norm = bool(layer_norm)
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        """``layers`` [n_layers, ...] → their mix [...]."""
        if layers.shape[0] != self.weights.shape[0]:
            raise ModelError(f"this mix weighs {self.weights.shape[0]} layers, got {layers.shape[0]}",
                             "build the ScalarMix with the model's layer count (n_layers + 1 for a biLM)")
        if self.layer_norm:
            layers = F.layer_norm(layers, layers.shape[-1:])
        s = torch.softmax(self.weights, 0).to(layers.dtype)
        return self.gamma.to(layers.dtype) * torch.einsum("l,l...->...", s, layers)
