"""Log-probabilities of completion tokens under a causal LM, and the frozen reference model.

Batches hold each distinct prompt once (``prompt_ids`` left-padded, ``prompt_mask``), the
completions right-padded (``completion_ids``, ``completion_mask``) and, per completion, the row of
its prompt (``prompt_of``). The forward runs the prompts once, hands their keys and values to every
completion of the prompt (``KVCache.select``, differentiable), then runs the completions: a GRPO
group of G samples, or DPO's chosen and rejected answers, pay for their shared prompt once instead
of G (or 2) times, in the reference's forward, the policy's and its backward. Only completion
positions go through the vocabulary projection. Scored tokens are kept flat ([N], row-major), with
``to_rows`` for the padded [B, T] view the policy-gradient maths uses — the flat order is the same
for the policy, the rollout-time policy and the reference, so their values line up token by token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..peft import adapters_disabled, can_disable

PROMPT_KEYS = ("prompt_ids", "prompt_mask")


def n_rows(batch: dict) -> int:
    """Completions in the batch."""
    return batch["completion_ids"].shape[0]


def row_counts(batch: dict) -> torch.Tensor:
    """Completion tokens per row [B]."""
    return batch["completion_mask"].sum(1)


def token_rows(batch: dict) -> torch.Tensor:
    """The row of each scored token [N] (row-major)."""
    return batch["completion_mask"].nonzero()[:, 0]


def n_tokens(batch: dict) -> int:
    """Tokens a forward of the batch processes (each prompt once, every completion)."""
    return int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())


def select_rows(batch: dict, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The sub-batch of completions ``rows`` (ascending) with the prompts they need; other per-row
    tensors (``ref_logps``, ``label``) are selected too."""
    rows = rows.to(batch["completion_ids"].device)
    needed, prompt_of = torch.unique(batch["prompt_of"][rows], return_inverse=True)
    n = n_rows(batch)
    out = {k: v[rows] for k, v in batch.items()
           if torch.is_tensor(v) and k not in PROMPT_KEYS and v.dim() and v.shape[0] == n}
    out.update({k: batch[k][needed] for k in PROMPT_KEYS}, prompt_of=prompt_of)
    return out


def scored_hidden(model: nn.Module, batch: dict) -> torch.Tensor:
    """The last hidden state before each completion token [N, D]: prompts run once, their cache shared
    by their completions."""
    prompt_states, cache = model.hidden_states(batch["prompt_ids"], None, batch["prompt_mask"])
    of = batch["prompt_of"]
    states, _ = model.hidden_states(batch["completion_ids"], cache.select(of), batch["completion_mask"])
    before = torch.cat([prompt_states[of, -1:], states[:, :-1]], dim=1)
    return before[batch["completion_mask"].bool()]


@dataclass
class Scored:
    """Per scored token: log-prob of the target, its row, entropy of the next-token distribution
    (when asked) and the last hidden state (when asked, for a value head)."""

    logps: torch.Tensor
    rows: torch.Tensor
    entropy: torch.Tensor | None = None
    hidden: torch.Tensor | None = None

    def sums(self, n_rows: int) -> torch.Tensor:
        """Σ log-prob per row [B] (a completion's log-probability)."""
        return per_row(self.logps, self.rows, n_rows)


def per_row(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Sum of per-token ``values`` within each row [B]."""
    return values.new_zeros(n_rows).index_add(0, rows, values)


def score_tokens(model: nn.Module, batch: dict, *, entropy: bool = False, hidden: bool = False) -> Scored:
    """Log-probabilities (float32) of the completion tokens of ``batch`` under ``model``."""
    states = scored_hidden(model, batch)
    logits = model.logits(states).float()
    targets = batch["completion_ids"][batch["completion_mask"].bool()]
    rows = token_rows(batch)
    if not entropy:
        return Scored(-F.cross_entropy(logits, targets, reduction="none"), rows, hidden=states if hidden else None)
    log_p = logits.log_softmax(-1)
    return Scored(log_p.gather(1, targets.unsqueeze(1)).squeeze(1), rows, -(log_p.exp() * log_p).sum(-1),
                  states if hidden else None)


def to_rows(values: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token ``values`` [N] as (padded [B, T], mask [B, T]) with each row's tokens first."""
    counts = row_counts(batch)
    width = max(int(counts.max()), 1)
    mask = torch.arange(width, device=values.device).unsqueeze(0) < counts.unsqueeze(1).to(values.device)
    return values.new_zeros(mask.shape).masked_scatter(mask, values), mask


class Reference:
    """The frozen reference of preference optimisation and RL: the policy with its PEFT adapter
    switched off (no second copy), or a separate ``model`` (e.g. for full fine-tuning)."""

    def __init__(self, policy: nn.Module, model: nn.Module | None = None) -> None:
        if model is None and not can_disable(policy):
            method = getattr(policy, "peft_record", None)
            what = f"its {method['method']} method" if method else "no PEFT adapter"
            raise ConfigError(f"the reference model is the policy with its adapter off, but the policy has {what}",
                              "train a LoRA adapter (the default), or pass a separate reference model")
        self.policy, self.model = policy, model
        if model is not None:
            model.eval().requires_grad_(False)

    @torch.no_grad()
    def score(self, batch: dict, *, logits: bool = False) -> Scored | torch.Tensor:
        """The reference's ``Scored`` tokens of ``batch`` (or, with ``logits``, its log-softmax [N, V])."""
        if self.model is not None:
            return _score_or_logits(self.model, batch, logits)
        was_training = self.policy.training
        self.policy.eval()
        try:
            with adapters_disabled(self.policy):
                return _score_or_logits(self.policy, batch, logits)
        finally:
            self.policy.train(was_training)


def _score_or_logits(model: nn.Module, batch: dict, logits: bool):
    if not logits:
        return score_tokens(model, batch)
    return model.logits(scored_hidden(model, batch)).float().log_softmax(-1)


@torch.no_grad()
def kl_to_reference(policy: nn.Module, reference: Reference, batches: list[dict]) -> float:
    """Mean over the completions' tokens of KL(π ‖ π_ref) between the whole next-token distributions
    (exact per position, teacher-forced on the given completions)."""
    was_training = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        log_p = policy.logits(scored_hidden(policy, batch)).float().log_softmax(-1)
        log_q = reference.score(batch, logits=True)
        total += float((log_p.exp() * (log_p - log_q)).sum())
        count += log_p.shape[0]
    policy.train(was_training)
    return total / max(count, 1)
