"""Sampling-based decoding through the language-model protocol only (works for any LanguageModel).

A prompt is fed once; its state is fanned out to ``num_samples`` rows with ``select_state``
and all rows advance together, one token per step, through a chain of logits processors,
until each emits a stop id or reaches ``max_new_tokens``. A seed makes the result
reproducible. Log-probabilities reported are the model's own (before any processor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.errors import ConfigError
from ..core.seed import make_generator
from ..core.validate import check_number
from ..lm import LanguageModel, State, as_id_tensor
from .processors import Processor, Temperature, apply


@dataclass
class Generation:
    """One continuation: its ids (stop token excluded), their model log-probs, why it ended, and
    a strategy-specific score (beam score, mean log-prob, Gumbel key) where one applies."""

    ids: list[int]
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" when a stop id was produced
    score: float | None = None

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


def prefill(lm: LanguageModel, prompt: Sequence[int], rows: int) -> tuple[torch.Tensor, State, torch.Tensor]:
    """Feed ``prompt`` once and fan it out: (next log-probs [rows, V], state, prompt ids [rows, P])."""
    if len(prompt) == 0:
        raise ConfigError("the prompt has no tokens", "start it with the tokenizer's BOS id at least")
    ids = as_id_tensor(list(prompt), lm.vocab_size, lm.device)
    logprobs, state = lm.next_logprobs(ids, lm.initial_state(1))
    fan_out = torch.zeros(rows, dtype=torch.long, device=lm.device)
    return logprobs[fan_out].float(), lm.select_state(state, fan_out), ids[fan_out]


def stop_set(lm: LanguageModel, stop_ids: Sequence[int] | None) -> set[int]:
    """The ids that end a sequence: ``stop_ids`` if given, else the model's EOS."""
    if stop_ids is not None:
        return set(stop_ids)
    return {lm.eos_id} if lm.eos_id is not None else set()


def sample(lm: LanguageModel, prompt: Sequence[int], *, processors: Sequence[Processor] = (),
           greedy: bool = False, max_new_tokens: int = 50, num_samples: int = 1, seed: int | None = None,
           stop_ids: Sequence[int] | None = None) -> list[Generation]:
    """Draw ``num_samples`` continuations (``greedy``: always the best token after the processors)."""
    check_number("max_new_tokens", max_new_tokens, low=0, integer=True)
    check_number("num_samples", num_samples, low=1, integer=True)
    stops = stop_set(lm, stop_ids)
    gen = make_generator(seed, lm.device)
    results = [Generation(ids=[]) for _ in range(num_samples)]
    if max_new_tokens == 0:
        return results
    with torch.no_grad():
        logprobs, state, history = prefill(lm, prompt, num_samples)
        prompt_length = history.shape[1]
        alive = list(range(num_samples))  # result index of each live row
        for step in range(max_new_tokens):
            scores = apply(processors, logprobs, history, prompt_length)
            if greedy:
                next_ids = scores.argmax(dim=-1)
            else:
                next_ids = torch.multinomial(scores.softmax(dim=-1), 1, generator=gen).squeeze(1)
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
            history = torch.cat([history, next_ids.unsqueeze(1)], dim=1)
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long, device=lm.device)
                state, next_ids, history = lm.select_state(state, index), next_ids[index], history[index]
                alive = [alive[r] for r in keep]
            logprobs, state = lm.next_logprobs(next_ids.unsqueeze(1), state)
            logprobs = logprobs.float()
    return results


def ancestral_sample(lm: LanguageModel, prompt: Sequence[int], *, max_new_tokens: int = 50,
                     num_samples: int = 1, temperature: float = 1.0, seed: int | None = None,
                     stop_ids: Sequence[int] | None = None) -> list[Generation]:
    """Plain ancestral sampling at a temperature (0 means greedy)."""
    check_number("temperature", temperature, low=0.0)
    procs = [] if temperature in (0.0, 1.0) else [Temperature(temperature)]
    return sample(lm, prompt, processors=procs, greedy=temperature == 0, max_new_tokens=max_new_tokens,
                  num_samples=num_samples, seed=seed, stop_ids=stop_ids)


def best_of_n(lm: LanguageModel, prompt: Sequence[int], n: int, *, processors: Sequence[Processor] = (),
              max_new_tokens: int = 50, seed: int | None = None, stop_ids: Sequence[int] | None = None,
              keep: int = 1) -> list[Generation]:
    """Generate-then-rerank: sample ``n`` continuations and keep the ``keep`` with the highest mean
    model log-probability (a length-normalised likelihood, so short outputs are not favoured)."""
    check_number("n", n, low=1, integer=True)
    gens = sample(lm, prompt, processors=processors, max_new_tokens=max_new_tokens, num_samples=n,
                  seed=seed, stop_ids=stop_ids)
    for g in gens:
        g.score = g.mean_logprob
    return sorted(gens, key=lambda g: -g.score)[:keep]
