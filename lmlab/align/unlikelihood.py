"""Unlikelihood training (Welleck et al. 2019, "Neural Text Generation with Unlikelihood Training").

Token-level unlikelihood adds to the likelihood loss a penalty on negative candidates C_t:
−α Σ_{c ∈ C_t} log(1 − p(c | x_<t)). With ``candidates="context"`` C_t is the set of tokens already
in the context (the paper's choice, which pushes down repetition) minus the true next token; with
``"given"``, a fixed list of ``negative_ids`` (tokens to avoid); ``"both"`` takes their union. It is an
objective of the one trainer on either batch layout: SFT rows (``input``/``target``/``mask``/
``attention_mask``, loss on the assistant tokens) or plain LM windows (``input``/``target``).
``repetition`` measures what it is for: the share of repeated n-grams in generated text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number
from .objectives import RunningMeans

CANDIDATES = ("context", "given", "both")


class UnlikelihoodObjective:
    """Cross-entropy on the targets plus ``alpha`` × the token-level unlikelihood of the candidates."""

    plot_keys = ("mle_loss", "unlikelihood_loss")

    def __init__(self, alpha: float = 1.0, candidates: str = "context", negative_ids: Sequence[int] = ()) -> None:
        self.alpha = float(check_number("alpha", alpha, low=0.0))
        self.candidates = check_choice("candidates", candidates, CANDIDATES)
        self.negative_ids = [int(i) for i in negative_ids]
        if candidates != "context" and not self.negative_ids:
            raise ConfigError(f"candidates={candidates!r} needs the negative token ids", "pass negative_ids")
        self.running = RunningMeans()

    def candidate_mask(self, inputs: torch.Tensor, targets: torch.Tensor, vocab: int,
                       attention: torch.Tensor | None) -> torch.Tensor:
        """[B, T, V] True where a token is a negative candidate for predicting position t's target."""
        b, t = inputs.shape
        mask = torch.zeros(b, t, vocab, dtype=torch.bool, device=inputs.device)
        if self.candidates in ("context", "both"):
            seen = torch.zeros(b, vocab, dtype=torch.bool, device=inputs.device)
            rows = torch.arange(b, device=inputs.device)
            for step in range(t):
                real = torch.ones(b, dtype=torch.bool, device=inputs.device) if attention is None else attention[:, step].bool()
                seen[rows[real], inputs[real, step]] = True
                mask[:, step] = seen
        if self.candidates in ("given", "both"):
            mask[:, :, self.negative_ids] = True
        mask.scatter_(2, targets.unsqueeze(-1), False)  # the true next token is never a negative
        return mask

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        attention = batch.get("attention_mask")
        logits, _ = model(batch["input"], None, attention)
        log_p = logits.float().log_softmax(-1)
        scored = batch.get("mask", torch.ones_like(batch["target"], dtype=torch.bool)).bool()
        mle = F.nll_loss(log_p[scored], batch["target"][scored])
        negatives = self.candidate_mask(batch["input"], batch["target"], log_p.shape[-1], attention)
        one_minus = torch.clamp(1 - log_p.exp(), min=1e-5)
        per_position = -(torch.log(one_minus) * negatives).sum(-1)
        unlikelihood = per_position[scored].mean()
        self.running.add(mle_loss=mle.detach(), unlikelihood_loss=unlikelihood.detach())
        return mle + self.alpha * unlikelihood, int(scored.sum())

    def metrics(self) -> dict[str, float]:
        return self.running.pop()


def repetition(token_ids: Sequence[Sequence[int]], n: int = 4) -> dict[str, float]:
    """seq-rep-n (the share of each continuation's n-grams that repeat an earlier one, averaged) and the
    share of distinct tokens: Welleck et al.'s repetition measures of generated text."""
    check_number("n", n, low=1, integer=True)
    reps, distinct = [], []
    for ids in token_ids:
        grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
        if grams:
            reps.append(1 - len(set(grams)) / len(grams))
        if ids:
            distinct.append(len(set(ids)) / len(ids))
    return {f"seq_rep_{n}": sum(reps) / max(len(reps), 1), "distinct_tokens": sum(distinct) / max(len(distinct), 1)}
