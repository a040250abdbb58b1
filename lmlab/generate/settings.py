"""Decoding settings: one object for how tokens are chosen, how many continuations, and when to stop.

Built once — from CLI flags (``lmlab generate``, ``lmlab chat``) or from request fields (``lmlab
serve``) — and validated here, so a bad value gets the same message, naming the setting, on
every surface. ``chain()`` turns the settings into the logits-processor chain
(``lmlab.generate.processors``); ``strategy`` names the search (greedy, sample, best-of,
beam, diverse or stochastic beam) that ``lmlab.generate.search`` runs.

Two fields take objects that bring their own parameters: ``method`` — a decoding method that runs
its own search over the plain one (speculative decoding, contrastive decoding and search, FUDGE;
``lmlab.generate.speculative`` / ``guided``) — and ``select``, which ranks the finished hypotheses
of best-of-n or beam search (MBR, self-consistency, a reward; ``lmlab.generate.select``). A method
object has ``name``, ``check(settings)`` (raise ``SettingError`` for combinations it cannot run),
``rows(settings)``, ``check_model(lm)`` and ``search(settings, prompt, lm=..., **context)``; a
selector has ``name`` and ``scores(completions) -> list[float]`` (higher is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ..core.errors import ConfigError
from ..core.validate import check_number
from ..kvcache.settings import KVCacheSettings
from .processors import Processor, standard_chain

STRATEGIES = ("greedy", "sample", "best_of", "beam", "diverse_beam", "stochastic_beam")


class SettingError(ConfigError):
    """A decoding setting is invalid; ``setting`` names it (the server reports it as ``param``)."""

    def __init__(self, setting: str, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix)
        self.setting = setting


@dataclass(frozen=True)
class DecodingSettings:
    """Everything that decides a continuation except the prompt (see the module docstring).

    Sampling knobs become processors on the model's raw scores (logits) in the usual order:
    penalties and biases, temperature, truncation; ``processors`` are appended after them.
    ``constraint`` (a token mask such as ``lmlab.generate.constrain.Constrain``) runs before all of
    them, so no penalty or truncation sees a token the constraint forbids.
    ``greedy`` (or ``temperature`` 0) takes the best token after the processors. ``n``
    continuations share one prefill; ``best_of`` samples that many and keeps the ``n`` with the
    highest mean log-probability; ``beam_size`` runs beam search (``diverse_groups`` for diverse
    beam search, ``stochastic_beam`` for sampling without replacement) and returns the ``n`` best.
    ``kv_cache`` (``lmlab.kvcache.settings``: a cache policy with a budget per row, and a KV
    quantization) decides what the model's KV cache keeps; None keeps everything.
    """

    max_new_tokens: int = 128
    temperature: float = 1.0
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    epsilon: float | None = None
    eta: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int | None = None
    logit_bias: Mapping[int, float] | None = None
    banned_ids: tuple[int, ...] = ()
    processors: tuple[Processor, ...] = ()
    constraint: Processor | None = None
    stop: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] | None = None  # None: the model's EOS
    seed: int | None = None
    n: int = 1
    best_of: int | None = None
    beam_size: int | None = None
    length_penalty: float = 1.0
    early_stopping: bool = True
    diverse_groups: int | None = None
    diversity_penalty: float = 0.5
    stochastic_beam: bool = False
    top_logprobs: int = 0
    kv_cache: KVCacheSettings | None = None
    method: Any = None
    select: Any = None

    def __post_init__(self) -> None:
        for name in ("stop", "banned_ids", "processors"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                if name == "stop" and isinstance(value, str):
                    raise SettingError("stop", "stop must be a list of strings, got one string",
                                       "pass stop=['...'] (or --stop TEXT, repeatable)")
                raise SettingError(name, f"{name} must be a list, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        if self.stop_ids is not None:
            object.__setattr__(self, "stop_ids", tuple(self.stop_ids))
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            if value is not None:
                try:
                    check(name, value)
                except SettingError:
                    raise
                except ConfigError as err:
                    raise SettingError(name, err.problem, err.fix) from None
        self._check_combinations()

    def _check_combinations(self) -> None:
        beams = self.beam_size is not None or self.diverse_groups is not None or self.stochastic_beam
        if beams and self.best_of is not None:
            raise SettingError("best_of", "best_of and beam search are two strategies", "choose one of them")
        if self.stochastic_beam and self.diverse_groups is not None:
            raise SettingError("diverse_groups", "stochastic and diverse beam search are two strategies",
                               "choose one of them")
        if self.greedy and (beams or self.best_of is not None):
            raise SettingError("greedy", f"greedy decoding and {self.strategy.replace('_', ' ')} are two "
                               "strategies", "leave greedy out")
        if self.diverse_groups is not None and self.beams % self.diverse_groups:
            raise SettingError("diverse_groups", f"diverse_groups = {self.diverse_groups} does not divide "
                               f"beam_size = {self.beams}", "use a beam size that is a multiple of the groups")
        if beams and self.n > self.beams:
            raise SettingError("n", f"n = {self.n} exceeds the beam size {self.beams}",
                               "ask for at most as many continuations as beams")
        if self.best_of is not None and self.best_of < self.n:
            raise SettingError("best_of", f"best_of = {self.best_of} is smaller than n = {self.n}",
                               "sample at least as many as you keep")
        if self.select is not None and self.base_strategy not in ("best_of", "beam", "diverse_beam", "stochastic_beam"):
            raise SettingError("select", f"{getattr(self.select, 'name', 'a selector')} chooses among several "
                               "hypotheses, and this request makes one", "sample several (best_of N) or run a beam "
                               "search (beam_size N)")
        if self.method is not None:
            self.method.check(self)

    # --- what the search needs ----------------------------------------------------------------
    @property
    def is_greedy(self) -> bool:
        """Take the best token after the processors: ``greedy``, or temperature 0."""
        return self.greedy or self.temperature == 0

    @property
    def strategy(self) -> str:
        """The search that runs: the method's name, else the plain strategy (``base_strategy``)."""
        return self.method.name if self.method is not None else self.base_strategy

    @property
    def base_strategy(self) -> str:
        """Greedy, sample, best-of or a beam search, as the plain settings ask (methods run over it)."""
        if self.diverse_groups is not None:
            return "diverse_beam"
        if self.stochastic_beam:
            return "stochastic_beam"
        if self.beam_size is not None:
            return "beam"
        if self.best_of is not None:
            return "best_of"
        return "greedy" if self.is_greedy else "sample"

    @property
    def beams(self) -> int:
        """Rows a beam search keeps: ``beam_size``, else 2 per diverse group, else ``n``."""
        if self.beam_size is not None:
            return self.beam_size
        if self.diverse_groups is not None:
            return 2 * self.diverse_groups
        return self.n

    @property
    def rows(self) -> int:
        """Batch rows the request occupies after its one prefill."""
        return self.method.rows(self) if self.method is not None else self.base_rows

    @property
    def base_rows(self) -> int:
        """The rows of the plain strategy (n samples, best-of, beams)."""
        if self.base_strategy in ("beam", "diverse_beam", "stochastic_beam"):
            return self.beams
        return self.best_of if self.best_of is not None else self.n

    def chain(self) -> list[Processor]:
        """The logits processors, in order (temperature left out when greedy: it cannot change the argmax)."""
        chain = standard_chain(
            temperature=1.0 if self.is_greedy else self.temperature, top_k=self.top_k, top_p=self.top_p,
            min_p=self.min_p, typical_p=self.typical_p, epsilon=self.epsilon, eta=self.eta,
            repetition_penalty=self.repetition_penalty, frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size or None,
            logit_bias=self.logit_bias, banned_ids=self.banned_ids or None)
        return ([self.constraint] if self.constraint is not None else []) + chain + list(self.processors)

    def check_for(self, vocab_size: int) -> None:
        """The checks that need the model: token ids of stops, biases and bans within its vocabulary."""
        for name, ids in (("stop_ids", self.stop_ids or ()), ("logit_bias", (self.logit_bias or {}).keys()),
                          ("banned_ids", self.banned_ids)):
            for i in ids:
                if not 0 <= int(i) < vocab_size:
                    raise SettingError(name, f"{name} names token {i}, outside the vocabulary [0, {vocab_size})",
                                       "use ids the model's tokenizer produces")

    def with_(self, **changes: Any) -> DecodingSettings:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults, JSON-ready (processors by their repr)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "constraint" and value is not None:
                out[f.name] = repr(value)
            elif f.name == "kv_cache" and value != f.default:
                out[f.name] = value.to_dict()
            elif f.name in ("method", "select") and value is not None:
                out[f.name] = repr(value)
            elif value != f.default and not (f.name == "processors" and not value):
                out[f.name] = [repr(p) for p in value] if f.name == "processors" else (
                    dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, tuple) else value)
        return out


def _integer(low: int) -> Callable[[str, Any], None]:
    return lambda name, value: check_number(name, value, low=low, integer=True)


def _between(low: float, high: float, low_inclusive: bool = True, high_inclusive: bool = True):
    return lambda name, value: check_number(name, value, low=low, high=high, low_inclusive=low_inclusive,
                                            high_inclusive=high_inclusive)


def _stops(name: str, value: tuple) -> None:
    if any(not isinstance(s, str) or not s for s in value):
        raise SettingError(name, "stop strings must be non-empty strings", "pass stop=['...']")


def _ids(name: str, value: tuple) -> None:
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in value):
        raise SettingError(name, f"{name} must be non-negative token ids, got {list(value)}")


def _bias(name: str, value: Mapping) -> None:
    for key, bias in value.items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise SettingError(name, f"logit_bias keys are token ids, got {key!r}")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise SettingError(name, f"logit_bias: the bias of token {key} must be a finite number, got {bias!r}")


def _seed(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2 ** 63) <= value < 2 ** 64:
        raise SettingError(name, f"seed must be an integer in [-2^63, 2^64), got {value!r}")


def _has(*members: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        missing = [m for m in members if not hasattr(value, m)]
        if missing:
            raise SettingError(name, f"{name} must be a {'decoding method' if name == 'method' else 'selection rule'} "
                               f"object, got {type(value).__name__} (it lacks {', '.join(missing)})",
                               "use one from lmlab.generate.speculative/guided/contrastive_search"
                               if name == "method" else "use one from lmlab.generate.select")
    return check


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SettingError(name, f"{name} must be true or false, got {value!r}")


def _kv_cache(name: str, value: Any) -> None:
    if not isinstance(value, KVCacheSettings):
        raise SettingError(name, f"kv_cache must be lmlab.kvcache.KVCacheSettings, got {type(value).__name__}",
                           "build it with lmlab.kvcache.cache_settings(...)")


_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "max_new_tokens": _integer(0),
    "temperature": lambda name, value: check_number(name, value, low=0.0),
    "greedy": _flag,
    "top_k": _integer(1),
    "top_p": _between(0.0, 1.0, low_inclusive=False),
    "min_p": _between(0.0, 1.0),
    "typical_p": _between(0.0, 1.0, low_inclusive=False),
    "epsilon": _between(0.0, 1.0, low_inclusive=False, high_inclusive=False),
    "eta": _between(0.0, 1.0, low_inclusive=False, high_inclusive=False),
    "repetition_penalty": lambda name, value: check_number(name, value, low=0.0, low_inclusive=False),
    "frequency_penalty": _between(-2.0, 2.0),
    "presence_penalty": _between(-2.0, 2.0),
    "no_repeat_ngram_size": _integer(0),
    "logit_bias": _bias,
    "banned_ids": _ids,
    "stop": _stops,
    "stop_ids": _ids,
    "seed": _seed,
    "n": _integer(1),
    "best_of": _integer(1),
    "beam_size": _integer(1),
    "length_penalty": lambda name, value: check_number(name, value),
    "early_stopping": _flag,
    "diverse_groups": _integer(1),
    "diversity_penalty": lambda name, value: check_number(name, value, low=0.0),
    "stochastic_beam": _flag,
    "top_logprobs": _integer(0),
    "kv_cache": _kv_cache,
    "method": _has("name", "check", "rows", "check_model", "search"),
    "select": _has("name", "scores"),
}


def settings_from(values: Mapping[str, Any], **defaults: Any) -> DecodingSettings:
    """Settings from a mapping of names (CLI flags as ``argparse`` names them, request fields), where
    None means "not given"; names that are not settings are an error, not ignored."""
    known = {f.name for f in fields(DecodingSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown decoding settings: {', '.join(unknown)}", f"known: {', '.join(sorted(known))}")
    given = {k: v for k, v in values.items() if v is not None}
    return DecodingSettings(**{**defaults, **given})


__all__ = ["STRATEGIES", "DecodingSettings", "SettingError", "settings_from"]
