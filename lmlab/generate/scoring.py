"""Prompt scoring: the log-probability of every token of a sequence given the tokens before it, with
the most likely alternatives at each position — what OpenAI's ``echo`` with ``logprobs`` returns
and what lm-evaluation-harness reads to score multiple-choice answers through a server."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..lm import LanguageModel, as_id_tensor

TokenScore = tuple[float, list[tuple[int, float]]]


def prompt_logprobs(lm: LanguageModel, ids: Sequence[int], top: int = 0) -> list[TokenScore]:
    """For tokens 1..T-1 of ``ids``: (log p(token | tokens before it), the ``top`` most likely tokens
    there with their log-probabilities). A transformer scores the whole sequence in one forward pass;
    any other protocol model steps through it with ``next_logprobs``."""
    if len(ids) < 2:
        return []
    x = as_id_tensor([list(ids)], lm.vocab_size, lm.device)
    with torch.inference_mode():
        if hasattr(lm, "hidden_states") and hasattr(lm, "logits"):
            logits, _ = lm(x[:, :-1])
            logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        else:
            rows = []
            lp, state = lm.next_logprobs(x[:, :1], lm.initial_state(1))
            for t in range(1, x.shape[1]):
                rows.append(lp[0].float())
                if t < x.shape[1] - 1:
                    lp, state = lm.next_logprobs(x[:, t:t + 1], state)
            logprobs = torch.stack(rows)
    chosen = logprobs.gather(1, x[0, 1:].unsqueeze(1)).squeeze(1).tolist()
    if not top:
        return [(c, []) for c in chosen]
    values, index = logprobs.topk(min(top, logprobs.shape[1]), dim=-1)
    return [(c, list(zip(i, v, strict=True))) for c, i, v in zip(chosen, index.tolist(), values.tolist(), strict=True)]


__all__ = ["prompt_logprobs"]
