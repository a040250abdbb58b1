"""A linear-chain conditional random field over per-token emission scores (Lafferty et al., 2001;
the BiLSTM-CRF of Huang et al., 2015 and Lample et al., 2016).

A tag sequence y of a sentence with emissions E [T, K] scores
start[y_1] + Σ_t E[t, y_t] + Σ_t transitions[y_{t-1}, y_t] + end[y_T]; the forward algorithm
sums exp(score) over all K^T sequences in O(T·K²) (the log partition function), so the
log-likelihood of the gold tags is their score minus it; Viterbi finds the best sequence with
max in place of the sum. ``allowed`` / ``start_allowed`` (e.g. from BIO tags: I-X only after B-X
or I-X) remove transitions outright: their score is −∞ in training and decoding alike.

The parameters and the batch convention (``mask`` [B, T] with every row's first token real, and
padding only at the end) are those of ``pytorch-crf``, so its numbers and these agree.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ModelError


class LinearChainCRF(nn.Module):
    """Transition scores between ``num_tags`` tags (``transitions[i, j]``: tag i then tag j), plus start
    and end scores; optional hard constraints (boolean ``allowed`` [K, K], ``start_allowed`` [K])."""

    def __init__(self, num_tags: int, allowed: torch.Tensor | None = None,
                 start_allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.register_buffer("allowed", torch.ones(num_tags, num_tags, dtype=torch.bool) if allowed is None
                             else allowed.bool().clone())
        self.register_buffer("start_allowed", torch.ones(num_tags, dtype=torch.bool) if start_allowed is None
                             else start_allowed.bool().clone())

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start [K], transitions [K, K], end [K]) with forbidden entries at −∞."""
        ninf = float("-inf")
        return (self.start.masked_fill(~self.start_allowed, ninf), self.transitions.masked_fill(~self.allowed, ninf),
                self.end)

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ModelError(f"emissions must be [batch, length, {self.num_tags}], got {tuple(emissions.shape)}")
        if mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        mask = mask.bool().to(emissions.device)
        if emissions.shape[1] and not bool(mask[:, 0].all()):
            raise ModelError("every sequence's first token must be unmasked", "right-pad the batch")
        return mask

    def sequence_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """Unnormalised score [B] of the given tag sequences."""
        mask = self._check(emissions, mask)
        start, transitions, end = self.scores()
        tags = tags.to(emissions.device).masked_fill(~mask, 0)
        m = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)
        score = start[tags[:, 0]] + (emitted * m).sum(1)
        stepped = transitions[tags[:, :-1], tags[:, 1:]]
        score = score + torch.where(mask[:, 1:], stepped, torch.zeros_like(stepped)).sum(1)
        last = tags.gather(1, (mask.long().sum(1) - 1).unsqueeze(1)).squeeze(1)
        return score + end[last]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log Σ_y exp(score(y)) [B] by the forward algorithm."""
        mask = self._check(emissions, mask)
        start, transitions, end = self.scores()
        alpha = start + emissions[:, 0]  # [B, K]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, t:t + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """log p(tags | emissions) [B] (−∞ for a sequence the constraints forbid)."""
        return self.sequence_score(emissions, tags, mask) - self.log_partition(emissions, mask)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """The highest-scoring tag sequence of each row (Viterbi), as lists of the real tokens' length."""
        mask = self._check(emissions, mask)
        start, transitions, end = self.scores()
        score = start + emissions[:, 0]
        back = []
        for t in range(1, emissions.shape[1]):
            best, index = (score.unsqueeze(2) + transitions).max(dim=1)  # over the previous tag
            back.append(index)
            score = torch.where(mask[:, t:t + 1], best + emissions[:, t], score)
        score = score + end
        lengths = mask.long().sum(1).tolist()
        paths = []
        for b, length in enumerate(lengths):
            tag = int(score[b].argmax())
            path = [tag]
            for t in range(length - 1, 0, -1):
                tag = int(back[t - 1][b, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths
