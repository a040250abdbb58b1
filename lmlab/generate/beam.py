"""Beam search and its variants on any protocol model, as plain functions over the decoding loop.

The algorithms live in ``lmlab.generate.search`` (``BeamSearch``, ``StochasticBeamSearch``) and
run inside the one decoding loop; these functions run one prompt through it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..lm import LanguageModel
from .output import Completion
from .processors import Processor
from .sampling import run_one
from .settings import DecodingSettings


def beam_search(lm: LanguageModel, prompt: Sequence[int], *, beam_size: int = 4, max_new_tokens: int = 50,
                length_penalty: float = 1.0, early_stopping: bool = True, processors: Sequence[Processor] = (),
                stop_ids: Sequence[int] | None = None, num_return: int = 1) -> list[Completion]:
    """Standard beam search: the ``num_return`` best hypotheses, best first."""
    return run_one(lm, prompt, DecodingSettings(
        beam_size=beam_size, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
        early_stopping=early_stopping, processors=tuple(processors), stop_ids=stop_ids, n=num_return))


def diverse_beam_search(lm: LanguageModel, prompt: Sequence[int], *, beam_size: int = 4, groups: int = 2,
                        diversity_penalty: float = 0.5, max_new_tokens: int = 50, length_penalty: float = 1.0,
                        early_stopping: bool = True, processors: Sequence[Processor] = (),
                        stop_ids: Sequence[int] | None = None, num_return: int = 1) -> list[Completion]:
    """Diverse beam search (Vijayakumar et al., 2018): ``beam_size`` beams in ``groups`` groups, each
    group's scores lowered by ``diversity_penalty`` × how often earlier groups chose each token."""
    return run_one(lm, prompt, DecodingSettings(
        beam_size=beam_size, diverse_groups=groups, diversity_penalty=diversity_penalty,
        max_new_tokens=max_new_tokens, length_penalty=length_penalty, early_stopping=early_stopping,
        processors=tuple(processors), stop_ids=stop_ids, n=num_return))


def stochastic_beam_search(lm: LanguageModel, prompt: Sequence[int], *, beam_size: int = 4,
                           max_new_tokens: int = 50, processors: Sequence[Processor] = (),
                           seed: int | None = None, stop_ids: Sequence[int] | None = None) -> list[Completion]:
    """Stochastic beam search (Kool et al., 2019): ``beam_size`` sequences sampled without replacement,
    ordered by their Gumbel keys; ``score`` is each sequence's log-probability."""
    return run_one(lm, prompt, DecodingSettings(
        beam_size=beam_size, stochastic_beam=True, max_new_tokens=max_new_tokens, processors=tuple(processors),
        seed=seed, stop_ids=stop_ids, n=beam_size))
