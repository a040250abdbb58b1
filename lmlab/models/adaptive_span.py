"""Adaptive attention span (Sukhbaatar et al. 2019, "Adaptive Attention Span in Transformers").

Each head learns how far back it looks: a span z·S (z ∈ [0, 1], S the largest span) and a soft
mask m(x) = clamp((R + z·S - x) / R, 0, 1) over the distance x between query and key, with a
ramp of width R so the span gets a gradient. The attention weights are m·exp(s) renormalised,
which is softmax(s + log m): the mask enters as an additive bias, so keys beyond R + z·S cost
nothing and the attention runs on the sliding-window path with window S + R.

Training adds the paper's L1 penalty λ·S·mean(z) to the loss and clamps z to [0, 1] after every
optimizer step (the trainer's hooks ``auxiliary_loss`` / ``after_optimizer_step``); the mean span
is logged (``training_stats``).
"""

from __future__ import annotations

import torch
from torch import nn


def span_mask(distance: torch.Tensor, spans: torch.Tensor, ramp: int) -> torch.Tensor:
    """m(x) [H, *distance.shape] for distances ``distance`` and spans z·S [H] (in tokens)."""
    shape = (-1,) + (1,) * distance.dim()
    return ((ramp + spans.view(shape) - distance.unsqueeze(0).float()) / ramp).clamp(0, 1)


class AdaptiveSpan(nn.Module):
    """The per-head spans (``fraction`` z, clamped to [0, 1], starting at 0) for a largest span S."""

    def __init__(self, n_heads: int, max_span: int, ramp: int, loss_weight: float = 2e-6) -> None:
        super().__init__()
        self.max_span, self.ramp, self.loss_weight = max_span, ramp, loss_weight
        self.fraction = nn.Parameter(torch.zeros(n_heads))

    @property
    def window(self) -> int:
        """The farthest distance (exclusive) any span can reach."""
        return self.max_span + self.ramp

    def spans(self) -> torch.Tensor:
        """Each head's current span z·S in tokens, [H]."""
        return self.fraction.clamp(0, 1) * self.max_span

    def bias(self, distance: torch.Tensor) -> torch.Tensor:
        """log m(x) [H, ...]: the additive score bias of the soft mask (-inf beyond the span)."""
        mask = span_mask(distance, self.spans(), self.ramp)
        # log of a clamped value where m > 0, so m = 0 gives -inf without a 0·∞ gradient
        return torch.where(mask > 0, mask.clamp(min=1e-30).log(), float("-inf"))

    # --- the trainer's hooks (``lmlab.train.trainer.TrainingHooks``) -----------------------------
    def auxiliary_loss(self) -> torch.Tensor:
        """λ·S·mean(z): the span penalty that makes each head look no farther than it needs."""
        return self.loss_weight * self.max_span * self.fraction.mean()

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.fraction.clamp_(0, 1)

    def training_stats(self) -> dict:
        return {"mean_span": float(self.spans().detach().mean())}
