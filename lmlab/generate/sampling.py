"""Sampling-based decoding on any protocol model, as plain functions over the decoding loop.

``sample`` draws ``num_samples`` continuations of one prompt (greedy: the best token after the
processors); the prompt is prefilled once and fanned out, each continuation with its own
generator seeded ``seed + i``. ``best_of_n`` samples n and keeps the best by mean log-probability
(generate-then-rerank). Log-probabilities reported are the model's own (before any processor).
These are conveniences over ``Engine``: the same loop the CLI and the server run.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.validate import check_number
from ..lm import LanguageModel
from .engine import Engine
from .loop import Request
from .output import Completion
from .processors import Processor
from .settings import DecodingSettings


def run_one(lm: LanguageModel, prompt: Sequence[int], settings: DecodingSettings, tokenizer=None) -> list[Completion]:
    """The completions of one prompt under ``settings`` (weights left in their layout)."""
    return Engine(lm, tokenizer, decode_layout=False).generate([Request(prompt, settings=settings)])


def sample(lm: LanguageModel, prompt: Sequence[int], *, processors: Sequence[Processor] = (),
           greedy: bool = False, max_new_tokens: int = 50, num_samples: int = 1, seed: int | None = None,
           stop_ids: Sequence[int] | None = None) -> list[Completion]:
    """Draw ``num_samples`` continuations (``greedy``: always the best token after the processors)."""
    return run_one(lm, prompt, DecodingSettings(processors=tuple(processors), greedy=greedy,
                                                max_new_tokens=max_new_tokens, n=num_samples, seed=seed,
                                                stop_ids=stop_ids))


def ancestral_sample(lm: LanguageModel, prompt: Sequence[int], *, max_new_tokens: int = 50,
                     num_samples: int = 1, temperature: float = 1.0, seed: int | None = None,
                     stop_ids: Sequence[int] | None = None) -> list[Completion]:
    """Plain ancestral sampling at a temperature (0 means greedy)."""
    return run_one(lm, prompt, DecodingSettings(temperature=temperature, max_new_tokens=max_new_tokens,
                                                n=num_samples, seed=seed, stop_ids=stop_ids))


def best_of_n(lm: LanguageModel, prompt: Sequence[int], n: int, *, processors: Sequence[Processor] = (),
              max_new_tokens: int = 50, seed: int | None = None, stop_ids: Sequence[int] | None = None,
              keep: int = 1) -> list[Completion]:
    """Generate-then-rerank: sample ``n`` continuations and keep the ``keep`` with the highest mean
    model log-probability (a length-normalised likelihood, so short outputs are not favoured)."""
    check_number("n", n, low=1, integer=True)
    return run_one(lm, prompt, DecodingSettings(processors=tuple(processors), best_of=n, n=keep,
                                                max_new_tokens=max_new_tokens, seed=seed, stop_ids=stop_ids))
