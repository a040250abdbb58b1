"""Domain-adversarial training (DANN; Ganin et al. 2016, "Domain-adversarial training of neural networks").

A feature extractor feeds two heads: the label predictor, trained on labelled *source* examples,
and a domain classifier that tells source features from *target* features (the target examples
are unlabelled). Between the features and the domain classifier sits the gradient-reversal layer:
the identity going forward, −λ × the gradient going back. So one backward pass trains the domain
classifier to separate the domains while pushing the features to make them inseparable — features
that predict the label and carry no domain, which is what lets a source-trained classifier work on
the target. λ rises over training by the paper's schedule λ_p = 2 / (1 + exp(−γ p)) − 1 (γ = 10,
p the fraction of training done), so the noisy early domain signal does not swamp the label loss.

With ``reverse=False`` the same network and losses train with λ = 0: the domain classifier still
learns from the (unchanged) features, but no domain gradient reaches them — the source-only
baseline at equal cost, and a probe of how much domain the features carry.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_number


class GradientReversal(torch.autograd.Function):
    """y = x forward; dL/dx = −λ · dL/dy backward (λ gets no gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # noqa: ANN001 (autograd's ctx)
        ctx.lam = float(lam)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.lam * grad, None


def reverse_gradient(x: torch.Tensor, lam: float) -> torch.Tensor:
    """``x`` unchanged, with its gradient multiplied by −``lam`` on the way back."""
    return GradientReversal.apply(x, lam)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The paper's adaptation factor 2 / (1 + exp(−γ p)) − 1: 0 at p = 0, rising towards 1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainAdversarialLoss:
    """The DANN objective for ``lmlab.train.train``: label cross-entropy on the source examples plus
    ``domain_weight`` × the domain classifier's cross-entropy on source (domain 0) and target (domain 1)
    features seen through the gradient-reversal layer.

    The model offers ``features(ids, mask)``, ``classify(features)`` and ``domain(features)``; a batch is
    ``{"input", "mask", "label"}`` (source) plus ``{"target_input", "target_mask"}`` (unlabelled target).
    ``steps`` is the run's length, for λ's schedule. ``last`` keeps the latest step's λ, the two losses
    and the domain classifier's accuracy.
    """

    def __init__(self, steps: int, *, reverse: bool = True, gamma: float = 10.0, domain_weight: float = 1.0) -> None:
        self.steps = int(check_number("steps", steps, low=1, integer=True))
        self.gamma = float(check_number("gamma", gamma, low=0.0))
        self.domain_weight = float(check_number("domain_weight", domain_weight, low=0.0))
        self.reverse = bool(reverse)
        self.last: dict[str, float] = {}

    def lam(self, step: int) -> float:
        return dann_lambda(min(step / self.steps, 1.0), self.gamma) if self.reverse else 0.0

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        lam = self.lam(int(batch.get("step", 0)))
        source = model.features(batch["input"], batch["mask"])
        target = model.features(batch["target_input"], batch["target_mask"])
        label_loss = F.cross_entropy(model.classify(source).float(), batch["label"])
        feats = reverse_gradient(torch.cat([source, target]), lam)
        domains = torch.cat([torch.zeros(len(source), dtype=torch.long, device=source.device),
                             torch.ones(len(target), dtype=torch.long, device=target.device)])
        domain_logits = model.domain(feats).float()
        domain_loss = F.cross_entropy(domain_logits, domains)
        self.last = {"lambda": lam, "label_loss": label_loss.item(), "domain_loss": domain_loss.item(),
                     "domain_accuracy": float((domain_logits.argmax(-1) == domains).float().mean())}
        return label_loss + self.domain_weight * domain_loss, int(batch["label"].numel())
