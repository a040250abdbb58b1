"""Objectives: callables that turn a batch into a loss. The trainer knows nothing else about the task.

An objective is called as ``objective(model, batch) -> (loss, tokens)`` where ``tokens`` is
the number of predicted tokens; ``state_dict`` / ``load_state_dict`` carry anything it keeps
between steps (the hidden state of truncated BPTT) through checkpoints, so resuming is exact.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_number
from ..models.recurrent import detach_state


def token_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy (in float32) over the target positions that ``mask`` keeps."""
    if mask is not None:
        target = target.masked_fill(~mask.bool(), -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                           ignore_index=-100, label_smoothing=label_smoothing)


class CausalLM:
    """Next-token prediction with teacher forcing; ``carry_state`` keeps the model's state across
    consecutive batches (truncated BPTT over ``ContiguousStream``), cleared when a batch says ``reset``."""

    def __init__(self, label_smoothing: float = 0.0, carry_state: bool = False) -> None:
        self.label_smoothing = float(check_number("label_smoothing", label_smoothing, low=0.0, high=1.0,
                                                  high_inclusive=False))
        self.carry_state = carry_state
        self.state: Any = None

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        state = self.state if self.carry_state and not batch.get("reset", False) else None
        logits, new_state = model(batch["input"], state)
        if self.carry_state:
            self.state = detach_state(new_state)
        mask = batch.get("mask")
        loss = token_loss(logits, batch["target"], mask, self.label_smoothing)
        return loss, int(mask.sum()) if mask is not None else batch["target"].numel()

    def state_dict(self) -> dict[str, Any]:
        return {"carried": self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state.get("carried")


class ScheduledSampling(CausalLM):
    """Bengio et al. (2015): while training a recurrent LM, feed the model's own sampled token
    instead of the true one with a probability that rises linearly from 0 to ``max_prob`` over
    ``ramp_steps`` optimizer steps (fights exposure bias; seed 000). Runs token by token."""

    def __init__(self, max_prob: float = 0.25, ramp_steps: int = 1000, label_smoothing: float = 0.0,
                 carry_state: bool = False) -> None:
        super().__init__(label_smoothing, carry_state)
        self.max_prob = float(check_number("max_prob", max_prob, low=0.0, high=1.0))
        self.ramp_steps = int(check_number("ramp_steps", ramp_steps, low=1, integer=True))

    def sampling_prob(self, step: int) -> float:
        return self.max_prob * min(1.0, step / self.ramp_steps)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        state = self.state if self.carry_state and not batch.get("reset", False) else None
        inputs, prob = batch["input"], self.sampling_prob(int(batch.get("step", 0)))
        logits_steps, previous = [], None
        for t in range(inputs.shape[1]):
            token = inputs[:, t:t + 1]
            if previous is not None and prob > 0:
                with torch.no_grad():
                    sampled = torch.multinomial(torch.softmax(previous.float(), -1), 1)
                use_own = torch.rand(token.shape, device=token.device) < prob
                token = torch.where(use_own, sampled, token)
            logits, state = model(token, state)
            logits_steps.append(logits)
            previous = logits[:, -1].detach()
        if self.carry_state:
            self.state = detach_state(state)
        mask = batch.get("mask")
        loss = token_loss(torch.cat(logits_steps, 1), batch["target"], mask, self.label_smoothing)
        return loss, int(mask.sum()) if mask is not None else batch["target"].numel()


class BidirectionalLM:
    """ELMo's biLM objective (Peters et al., 2018, §3.1): the forward LM's next-token loss plus the backward
    LM's previous-token loss over the same window, summed (so the loss of a window is about twice a
    one-direction LM's). The window is the batch's ``input`` with the last ``target`` token appended
    when there is one; ``tokens`` counts the predictions of one direction."""

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        ids = batch["input"]
        if "target" in batch:
            ids = torch.cat([ids, batch["target"][:, -1:]], dim=1)
        forward, backward = getattr(model, "module", model).bidirectional_logits(ids)
        loss = token_loss(forward[:, :-1], ids[:, 1:]) + token_loss(backward[:, 1:], ids[:, :-1])
        return loss, ids[:, 1:].numel()


OBJECTIVES = {"causal_lm": CausalLM, "scheduled_sampling": ScheduledSampling, "bilm": BidirectionalLM}
