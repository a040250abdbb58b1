"""Preference losses on sequence log-probabilities: the DPO family, KTO, SimPO, ORPO, Bradley-Terry.

Every function here is pure arithmetic on tensors of per-sequence log-probabilities (sums over
the completion's tokens, or their means where the method says so), so the objectives that wrap
them (``lmlab.align.objectives``) and the tests that check them against TRL see the same maths.
Each returns per-example losses (the objective takes their mean) and the implicit rewards the
method defines, which the logs turn into reward accuracy and margins.

* DPO (Rafailov et al. 2023): -log σ(β Δ), Δ = (log π/π_ref)(chosen) − (log π/π_ref)(rejected).
* conservative DPO / cDPO (Mitchell 2023): labels flipped with probability ε (label smoothing).
* robust DPO (Chowdhury et al. 2024): the unbiased loss under label noise ε.
* IPO (Azar et al. 2023): (Δ/|y| − 1/(2β))², log-ratios averaged over tokens, as its authors do.
* hinge / SLiC (Zhao et al. 2023): max(0, 1 − β Δ).
* KTO (Ethayarajh et al. 2024): unpaired, prospect-theory value against a KL reference point.
* SimPO (Meng et al. 2024): reference-free, length-normalised log-probs and a target margin γ.
* ORPO (Hong et al. 2024): SFT loss − λ log σ(log-odds ratio of chosen over rejected).
* Bradley-Terry (1952), the reward-model loss of InstructGPT (Ouyang et al. 2022), with an
  optional margin (Llama 2) and reward centring (Eisenstein et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number

DPO_LOSSES = ("sigmoid", "cdpo", "robust", "ipo", "hinge")
PAIRED_LOSSES = (*DPO_LOSSES, "simpo", "orpo")


@dataclass
class PairLoss:
    """Per-pair losses [B] and the implicit rewards of the chosen and rejected completions [B]."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _check_beta(beta: float) -> float:
    return float(check_number("beta", beta, low=0.0, low_inclusive=False))


def _check_smoothing(label_smoothing: float, high: float = 1.0) -> float:
    return float(check_number("label_smoothing", label_smoothing, low=0.0, high=high, high_inclusive=False))


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, *, beta: float = 0.1, kind: str = "sigmoid",
             label_smoothing: float = 0.0, chosen_tokens: torch.Tensor | None = None,
             rejected_tokens: torch.Tensor | None = None) -> PairLoss:
    """The DPO-family loss ``kind`` (sigmoid, cdpo, robust, ipo, hinge) from summed log-probabilities.

    ``label_smoothing`` ε is cDPO's and robust DPO's label-noise rate; IPO needs the completions'
    token counts (``chosen_tokens``, ``rejected_tokens``) to average the log-ratios.
    """
    check_choice("loss", kind, DPO_LOSSES)
    beta = _check_beta(beta)
    eps = _check_smoothing(label_smoothing, 0.5)
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * delta)
    elif kind == "cdpo":
        losses = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    elif kind == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    elif kind == "hinge":
        losses = torch.relu(1 - beta * delta)
    else:
        if chosen_tokens is None or rejected_tokens is None:
            raise ConfigError("the IPO loss averages log-ratios over tokens and needs the token counts",
                              "pass chosen_tokens and rejected_tokens")
        per_token = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (per_token - 1 / (2 * beta)) ** 2
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def simpo_loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, *, beta: float = 2.0,
               gamma: float = 1.0, label_smoothing: float = 0.0) -> PairLoss:
    """SimPO from per-token mean log-probabilities: -log σ(β (mean_c − mean_r) − γ), no reference model."""
    beta = _check_beta(beta)
    check_number("gamma", gamma)
    eps = _check_smoothing(label_smoothing, 0.5)
    logits = chosen_mean_logps - rejected_mean_logps - gamma / beta
    losses = -(1 - eps) * F.logsigmoid(beta * logits) - eps * F.logsigmoid(-beta * logits)
    return PairLoss(losses, beta * chosen_mean_logps.detach(), beta * rejected_mean_logps.detach())


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, stable on both sides of −log 2 (Mächler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_odds_ratio(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor) -> torch.Tensor:
    """log σ(log odds(chosen) − log odds(rejected)) per pair, odds(y) = P(y) / (1 − P(y)) with P the
    per-token mean probability (ORPO's eq. 4 and 7)."""
    c, r = chosen_mean_logps.float(), rejected_mean_logps.float()
    return F.logsigmoid((c - r) - (log1mexp(c) - log1mexp(r)))


def orpo_loss(chosen_nll: torch.Tensor, chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, *,
              beta: float = 0.1) -> tuple[torch.Tensor, PairLoss]:
    """ORPO's total loss (the chosen completions' NLL − β · mean log σ(log-odds ratio)) and its pair terms."""
    beta = _check_beta(beta)
    ratio = orpo_odds_ratio(chosen_mean_logps, rejected_mean_logps)
    pair = PairLoss(-beta * ratio, beta * chosen_mean_logps.detach(), beta * rejected_mean_logps.detach())
    return chosen_nll + pair.losses.mean(), pair


def kto_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, kl: torch.Tensor, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> PairLoss:
    """KTO's per-example losses: desirable 1 − σ(β (r − z)), undesirable 1 − σ(β (z − r)), with r the
    log-ratio to the reference and z the (detached, non-negative) KL reference point. The result's
    ``losses`` holds the desirable examples first, then the undesirable ones (weighted)."""
    beta = _check_beta(beta)
    check_number("desirable_weight", desirable_weight, low=0.0)
    check_number("undesirable_weight", undesirable_weight, low=0.0)
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    chosen = 1 - torch.sigmoid(beta * (chosen_ratio - kl))
    rejected = 1 - torch.sigmoid(beta * (kl - rejected_ratio))
    losses = torch.cat([desirable_weight * chosen, undesirable_weight * rejected])
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def kto_reference_point(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """KTO's z: the batch's mean log-ratio on mismatched (prompt, completion) pairs, ≥ 0, no gradient."""
    return (policy_logps - reference_logps).mean().detach().clamp(min=0)


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, *,
                       margin: torch.Tensor | float | None = None, center: float | None = None) -> torch.Tensor:
    """Mean −log σ(r_c − r_r − m) over the pairs, plus ``center`` · mean((r_c + r_r)²) when given."""
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center is not None:
        check_number("center", center, low=0.0)
        loss = loss + center * torch.mean((chosen_scores + rejected_scores) ** 2)
    return loss
