"""Objectives of offline preference optimisation for the one trainer: a batch → (loss, tokens).

``PreferenceObjective`` covers the paired losses (DPO sigmoid, cDPO, robust, IPO, hinge, SimPO,
ORPO) on batches of chosen rows followed by rejected rows; ``KTOObjective`` the unpaired one.
The reference log-probabilities come from the batch (precomputed once, ``ref_logps``) or from a
``Reference`` (the policy with its adapter off). Each objective keeps running means of what the
method's logs show — implicit-reward accuracy and margin, chosen/rejected rewards — and hands
them to the trainer through ``metrics()``.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number
from .logprobs import Reference, Scored, n_rows, n_tokens, row_counts, score_tokens
from .losses import (
    DPO_LOSSES,
    PAIRED_LOSSES,
    PairLoss,
    dpo_loss,
    kto_loss,
    kto_reference_point,
    orpo_loss,
    simpo_loss,
)


class RunningMeans:
    """Means of named values since the last ``pop`` (what one metrics record of the trainer shows)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, **values: float | torch.Tensor) -> None:
        for key, value in values.items():
            self.sums[key] += float(value)
            self.counts[key] += 1

    def pop(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


def pair_metrics(pair: PairLoss) -> dict[str, torch.Tensor]:
    """Implicit-reward accuracy and margin, and the mean chosen / rejected rewards, of a batch."""
    return {"reward_accuracy": (pair.chosen_rewards > pair.rejected_rewards).float().mean(),
            "reward_margin": (pair.chosen_rewards - pair.rejected_rewards).mean(),
            "reward_chosen": pair.chosen_rewards.mean(), "reward_rejected": pair.rejected_rewards.mean()}


class PreferenceObjective:
    """A paired preference loss ``loss`` (one of ``PAIRED_LOSSES``) on [chosen rows; rejected rows].

    ``beta`` is the method's β (DPO's KL strength, SimPO's reward scale, ORPO's λ); ``label_smoothing``
    cDPO's / robust DPO's ε (and SimPO's); ``gamma`` SimPO's target margin.
    """

    plot_keys = ("reward_accuracy", "reward_margin")

    def __init__(self, loss: str = "sigmoid", *, beta: float = 0.1, label_smoothing: float = 0.0,
                 gamma: float = 1.0, reference: Reference | None = None) -> None:
        self.loss = check_choice("loss", loss, PAIRED_LOSSES)
        self.beta = float(check_number("beta", beta, low=0.0, low_inclusive=False))
        self.label_smoothing = float(check_number("label_smoothing", label_smoothing, low=0.0, high=0.5,
                                                  high_inclusive=False))
        self.gamma = float(check_number("gamma", gamma))
        self.reference = reference
        self.running = RunningMeans()

    @property
    def needs_reference(self) -> bool:
        return self.loss in DPO_LOSSES

    def pair_loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, PairLoss, Scored]:
        """(loss, per-pair terms, the policy's scored tokens) of one batch."""
        scored = score_tokens(model, batch)
        n = n_rows(batch)
        half = n // 2
        sums, counts = scored.sums(n), row_counts(batch).to(scored.logps.dtype)
        if self.loss in DPO_LOSSES:
            ref = self.reference_sums(batch, n)
            pair = dpo_loss(sums[:half], sums[half:], ref[:half], ref[half:], beta=self.beta, kind=self.loss,
                            label_smoothing=self.label_smoothing, chosen_tokens=counts[:half],
                            rejected_tokens=counts[half:])
            return pair.losses.mean(), pair, scored
        means = sums / counts.clamp(min=1)
        if self.loss == "simpo":
            pair = simpo_loss(means[:half], means[half:], beta=self.beta, gamma=self.gamma,
                              label_smoothing=self.label_smoothing)
            return pair.losses.mean(), pair, scored
        nll = -sums[:half].sum() / counts[:half].sum().clamp(min=1)  # SFT loss on the chosen completions
        loss, pair = orpo_loss(nll, means[:half], means[half:], beta=self.beta)
        return loss, pair, scored

    def reference_sums(self, batch: dict, n: int) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"]
        if self.reference is None:
            raise ConfigError(f"the {self.loss} loss compares with a reference model, and none was given",
                              "pass a Reference (the policy with its adapter off) or precomputed ref_logps")
        return self.reference.score(batch).sums(n)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        loss, pair, _ = self.pair_loss(model, batch)
        self.running.add(**pair_metrics(pair))
        return loss, n_tokens(batch)

    def metrics(self) -> dict[str, float]:
        return self.running.pop()


class KTOObjective:
    """KTO (Ethayarajh et al. 2024) on unpaired examples; the KL reference point z is estimated per batch
    from mismatched (prompt, completion) pairs under the policy (no gradient) and the reference."""

    plot_keys = ("reward_chosen", "reward_rejected", "kl")

    def __init__(self, reference: Reference, *, beta: float = 0.1, desirable_weight: float = 1.0,
                 undesirable_weight: float = 1.0) -> None:
        self.reference, self.beta = reference, beta
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight
        self.running = RunningMeans()

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        n = n_rows(batch)
        kl_batch = {k[3:]: v for k, v in batch.items() if k.startswith("kl_")}
        with torch.no_grad():
            kl_policy = score_tokens(model, kl_batch).sums(n)
        kl = kto_reference_point(kl_policy, self.reference.score(kl_batch).sums(n))
        logps = score_tokens(model, batch).sums(n)
        ref = self.reference.score(batch).sums(n)
        good = batch["label"].bool()
        pair = kto_loss(logps[good], logps[~good], ref[good], ref[~good], kl, beta=self.beta,
                        desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight)
        self.running.add(kl=kl)
        if good.any():
            self.running.add(reward_chosen=pair.chosen_rewards.mean())
        if (~good).any():
            self.running.add(reward_rejected=pair.rejected_rewards.mean())
        return pair.losses.mean(), n_tokens(batch)

    def metrics(self) -> dict[str, float]:
        return self.running.pop()
