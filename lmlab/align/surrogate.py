"""The policy-gradient losses on per-token log-probabilities [B, T] (``mask`` marks real tokens).

* ``clipped_surrogate`` — PPO's clipped ratio objective (Schulman et al. 2017), per token:
  −min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A) with ρ = π/π_old; with no clipping it is the plain
  importance-weighted policy gradient, and ρ = 1 at the rollout's own weights makes it REINFORCE.
  ε_high > ε_low is DAPO's "clip-higher" (Yu et al. 2025).
* ``kl_penalty`` — the per-token KL estimate to the reference: k1 = log π − log π_ref (the PPO-RLHF
  reward penalty) or k3 = e^{ref − log π} − (ref − log π) − 1 (GRPO's, unbiased and ≥ 0; Schulman 2020).
* ``aggregate`` — how per-token losses become one number: ``sequence`` (mean over each completion's
  tokens, then over completions: GRPO), ``token`` (mean over all tokens of the batch: DAPO/BNPO), or
  ``constant`` (sum over tokens / (B × max_tokens): Dr. GRPO, Liu et al. 2025, no length bias).
* ``value_loss`` — PPO's clipped value loss ½ max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²).
"""

from __future__ import annotations

import torch

from ..core.errors import ConfigError
from ..core.validate import check_choice

AGGREGATIONS = ("sequence", "token", "constant")
KL_ESTIMATORS = ("k1", "k3")


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, *,
                      clip_low: float | None = 0.2, clip_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss, clipped) [B, T]; ``advantages`` [B] (one per sequence) or [B, T]; ``clip_low``
    None turns clipping off; ``clip_high`` defaults to ``clip_low``. ``clipped`` marks the tokens whose
    ratio left the trust region in the direction the advantage pushes (they carry no gradient)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    if clip_low is None:
        return -ratio * advantages, torch.zeros_like(ratio, dtype=torch.bool)
    high = clip_low if clip_high is None else clip_high
    clipped_ratio = torch.clamp(ratio, 1 - clip_low, 1 + high)
    loss = -torch.min(ratio * advantages, clipped_ratio * advantages)
    clipped = ((ratio < 1 - clip_low) & (advantages < 0)) | ((ratio > 1 + high) & (advantages > 0))
    return loss, clipped


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """The per-token KL(π ‖ π_ref) estimate ``k1`` or ``k3`` at the sampled tokens."""
    check_choice("kl estimator", estimator, KL_ESTIMATORS)
    if estimator == "k1":
        return logps - ref_logps
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str = "sequence",
              max_tokens: int | None = None) -> torch.Tensor:
    """One loss from per-token losses [B, T]: per-sequence means averaged, the mean over all tokens, or
    the sum over (B × ``max_tokens``) (the generation budget, a constant)."""
    check_choice("aggregation", how, AGGREGATIONS)
    mask = mask.to(per_token.dtype)
    if how == "sequence":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if how == "token":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if max_tokens is None:
        raise ConfigError("the constant (Dr. GRPO) aggregation divides by the generation budget",
                          "pass max_tokens (the rollouts' max_new_tokens)")
    return (per_token * mask).sum() / (per_token.shape[0] * max_tokens)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clipped fraction): the clipped squared error of the value head, averaged over real tokens."""
    mask = mask.to(values.dtype)
    count = mask.sum().clamp(min=1.0)
    plain = (values - returns) ** 2
    if clip is None:
        return 0.5 * (plain * mask).sum() / count, torch.zeros((), device=values.device)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * (torch.max(plain, clipped) * mask).sum() / count
    return loss, ((clipped > plain).to(values.dtype) * mask).sum() / count


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the real tokens."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
