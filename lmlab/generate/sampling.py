"""Ancestral sampling through the language-model protocol only (works for any LanguageModel).

Each prompt is fed once; its state is then fanned out to ``num_samples`` rows with
``select_state`` and all rows are sampled together, one token per step, until they emit a
stop id or reach ``max_new_tokens``. A seed makes the result reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.errors import ConfigError
from ..core.seed import make_generator
from ..core.validate import check_number
from ..lm import LanguageModel, as_id_tensor


@dataclass
class Generation:
    """One generated continuation: its ids (stop token excluded), their log-probabilities, why it ended."""

    ids: list[int]
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" when a stop id was produced


def ancestral_sample(lm: LanguageModel, prompt: Sequence[int], *, max_new_tokens: int = 50,
                     num_samples: int = 1, temperature: float = 1.0, seed: int | None = None,
                     stop_ids: Sequence[int] | None = None) -> list[Generation]:
    """Draw ``num_samples`` continuations of ``prompt`` (a non-empty id list, usually starting with BOS).

    ``temperature`` 0 means greedy (argmax); the log-probabilities reported are those of
    the model's distribution at temperature 1. ``stop_ids`` defaults to the model's EOS.
    """
    check_number("max_new_tokens", max_new_tokens, low=0, integer=True)
    check_number("num_samples", num_samples, low=1, integer=True)
    check_number("temperature", temperature, low=0.0)
    if len(prompt) == 0:
        raise ConfigError("the prompt has no tokens", "start it with the tokenizer's BOS id at least")
    stops = set(stop_ids if stop_ids is not None else ([lm.eos_id] if lm.eos_id is not None else []))
    gen = make_generator(seed, lm.device)
    ids = as_id_tensor(list(prompt), lm.vocab_size, lm.device)
    results = [Generation(ids=[]) for _ in range(num_samples)]
    if max_new_tokens == 0:
        return results
    with torch.no_grad():
        logprobs, state = lm.next_logprobs(ids, lm.initial_state(1))
        fan_out = torch.zeros(num_samples, dtype=torch.long, device=lm.device)
        state = lm.select_state(state, fan_out)
        logprobs = logprobs[fan_out]
        alive = list(range(num_samples))  # result index of each live row
        for step in range(max_new_tokens):
            logprobs = logprobs.float()
            if temperature == 0:
                next_ids = logprobs.argmax(dim=-1)
            else:
                probs = torch.softmax(logprobs / temperature, dim=-1)
                next_ids = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            chosen = logprobs.gather(1, next_ids.unsqueeze(1)).squeeze(1)
            keep = []
            for row, (tok, lp) in enumerate(zip(next_ids.tolist(), chosen.tolist(), strict=True)):
                res = results[alive[row]]
                if tok in stops:
                    res.finish_reason = "stop"
                else:
                    res.ids.append(tok)
                    res.logprobs.append(lp)
                    keep.append(row)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long, device=lm.device)
                state = lm.select_state(state, index)
                next_ids = next_ids[index]
                alive = [alive[r] for r in keep]
            logprobs, state = lm.next_logprobs(next_ids.unsqueeze(1), state)
    return results
