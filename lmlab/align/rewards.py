"""Rewards behind one interface: ``reward(samples) -> list[float]``, one number per completion.

Rule-based and verifiable rewards (Lambert et al. 2024, "RLVR"; DeepSeek-R1's accuracy and format
rewards): ``exact`` (the completion is the answer), ``number`` (the last number in the completion
equals the answer's number — GSM8K's flexible extraction, ``lmlab.analysis.answers``), ``format``
(the completion matches a regular expression), ``length`` (closeness to a target length); a trained
reward model (``ModelReward``); weighted sums of those. An LM-as-judge reward lives with the
evaluation suite (``lmlab.eval.judge_reward``) and plugs in through the same interface.
``StepReward`` gives process supervision: a reward per step (a line) of each completion.

Rewards are checked as they come back: a NaN or a missing value stops the run with the reward's
name and the completion that caused it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..analysis.answers import FLEXIBLE_NUMBER, extract_answer, normalize_number_answer
from ..core.errors import ConfigError, DataError, ModelError
from ..core.validate import check_number
from .preferences import Messages, Truncation


@dataclass
class Sample:
    """What a reward sees of one rollout: the prompt's messages, the completion text, the checkable
    answer of the prompt (None when the data has none)."""

    prompt: Messages
    completion: str
    answer: str | None = None


class Reward(Protocol):
    """One score per sample (higher is better); ``name`` labels its logs and errors."""

    name: str

    def __call__(self, samples: Sequence[Sample]) -> list[float]: ...


GSM8K_ANSWER = r"#### (\-?[0-9\.\,]+)"


def gold_number(answer: str) -> str:
    """The number an answer states: after GSM8K's '####' when present, else its last number."""
    found = extract_answer(answer, GSM8K_ANSWER)
    if found == "[invalid]":
        found = extract_answer(answer, FLEXIBLE_NUMBER, last=True)
    return normalize_number_answer(found)


def _answer(sample: Sample, name: str) -> str:
    if sample.answer is None:
        raise DataError(f"the {name} reward checks answers, and a prompt has none",
                        "give every prompt row an 'answer' field")
    return sample.answer


@dataclass
class ExactAnswer:
    """1 when the completion, stripped, is exactly the answer, else 0."""

    name: str = "exact"

    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        return [float(s.completion.strip() == _answer(s, self.name).strip()) for s in samples]


@dataclass
class NumberMatch:
    """1 when the last number of the completion equals the answer's number (commas, $ and a final
    period ignored), else 0."""

    name: str = "number"

    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        out = []
        for s in samples:
            said = normalize_number_answer(extract_answer(s.completion, FLEXIBLE_NUMBER, last=True))
            out.append(float(said == gold_number(_answer(s, self.name))))
        return out


@dataclass
class RegexFormat:
    """1 when the whole stripped completion matches ``pattern``, else 0 (the strict format check)."""

    pattern: str = r"-?\d+\.?"
    name: str = "format"

    def __post_init__(self) -> None:
        try:
            self._compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"the format pattern {self.pattern!r} is not a regular expression: {exc}",
                              "fix --format-regex") from None

    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        return [float(self._compiled.fullmatch(s.completion.strip()) is not None) for s in samples]


@dataclass
class LengthReward:
    """1 − |words − target| / target, floored at 0: closeness of the completion's length to ``target`` words."""

    target: int = 50
    name: str = "length"

    def __post_init__(self) -> None:
        check_number("target", self.target, low=1, integer=True)

    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        return [max(0.0, 1.0 - abs(len(s.completion.split()) - self.target) / self.target) for s in samples]


@dataclass
class Weighted:
    """Σ weight · reward over several rewards (e.g. accuracy plus a smaller format bonus)."""

    parts: list[tuple[Reward, float]]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.parts:
            raise ConfigError("a weighted reward needs at least one part", "name one reward or more")
        self.name = self.name or "+".join(f"{w:g}*{r.name}" if w != 1 else r.name for r, w in self.parts)

    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        total = [0.0] * len(samples)
        for reward, weight in self.parts:
            for i, value in enumerate(checked(reward, samples)):
                total[i] += weight * value
        return total


@dataclass
class ModelReward:
    """A trained reward model's score of prompt + completion (``lmlab.align.reward_model``)."""

    model: Any
    tokenizer: Any
    limits: Truncation = field(default_factory=lambda: Truncation(max_length=512, max_prompt_length=384))
    batch_size: int = 16
    name: str = "reward-model"

    def check_tokenizer(self, policy_tokenizer: Any) -> None:
        """Refuse a policy whose tokenizer is not the reward model's (their ids would not mean the same)."""
        mine, theirs = self.tokenizer.fingerprint(), policy_tokenizer.fingerprint()
        if mine != theirs:
            raise ModelError(f"the policy's tokenizer ({theirs}) differs from the reward model's ({mine})",
                             "train the reward model on the policy's own backbone (same tokenizer)")

    @torch.no_grad()
    def __call__(self, samples: Sequence[Sample]) -> list[float]:
        from ..data.loaders import pad_batch
        from .reward_model import conversation_ids

        self.model.eval()
        device = next(self.model.parameters()).device
        ids = [conversation_ids(self.tokenizer, s.prompt, [{"role": "assistant", "content": s.completion}],
                                self.limits) for s in samples]
        scores: list[float] = []
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        for start in range(0, len(ids), self.batch_size):
            batch, mask = pad_batch(ids[start:start + self.batch_size], pad)
            scores += self.model(batch.to(device), mask.to(device)).tolist()
        return scores


def checked(reward: Reward, samples: Sequence[Sample]) -> list[float]:
    """The reward's values, refused with a clear message when one is missing, not a number, or NaN."""
    values = list(reward(samples))
    if len(values) != len(samples):
        raise ModelError(f"the reward {reward.name!r} returned {len(values)} values for {len(samples)} completions",
                         "return one number per completion")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ModelError(f"the reward {reward.name!r} returned {v!r} for completion {i} "
                             f"({samples[i].completion[:60]!r})", "make the reward return a finite number for every completion")
    return [float(v) for v in values]


class StepReward(Protocol):
    """Process supervision: for each sample, (end character offset, reward) of each of its steps."""

    name: str

    def __call__(self, samples: Sequence[Sample]) -> list[list[tuple[int, float]]]: ...


@dataclass
class LineSteps:
    """Each line of a completion is a step, rewarded ``check(line, sample)`` (a number); the default check
    rewards a line that states the answer's number."""

    check: Callable[[str, Sample], float] | None = None
    name: str = "line-steps"

    def __call__(self, samples: Sequence[Sample]) -> list[list[tuple[int, float]]]:
        out = []
        for s in samples:
            steps, at = [], 0
            for line in s.completion.splitlines(keepends=True):
                at += len(line)
                if line.strip():
                    steps.append((at, self._score(line, s)))
            out.append(steps)
        return out

    def _score(self, line: str, sample: Sample) -> float:
        if self.check is not None:
            return float(self.check(line, sample))
        said = normalize_number_answer(extract_answer(line, FLEXIBLE_NUMBER, last=True))
        return float(said == gold_number(_answer(sample, self.name)))


RULE_REWARDS: dict[str, Callable[..., Reward]] = {
    "exact": ExactAnswer, "number": NumberMatch, "format": RegexFormat, "length": LengthReward}


def make_reward(spec: str, *, format_regex: str | None = None, target_length: int | None = None,
                extra: dict[str, Reward] | None = None) -> Reward:
    """A reward from a spec: names joined by ',' each with an optional ':weight' (``number,format:0.2``).
    ``extra`` adds named rewards built elsewhere (a reward model, an LM judge)."""
    parts: list[tuple[Reward, float]] = []
    known = sorted({*RULE_REWARDS, *(extra or {})})
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = item.partition(":")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"the reward weight {weight!r} in {spec!r} is not a number",
                              "write NAME or NAME:WEIGHT, e.g. number,format:0.2") from None
        if extra and name in extra:
            parts.append((extra[name], w))
        elif name == "format":
            parts.append((RegexFormat(format_regex) if format_regex else RegexFormat(), w))
        elif name == "length":
            parts.append((LengthReward(target_length) if target_length else LengthReward(), w))
        elif name in RULE_REWARDS:
            parts.append((RULE_REWARDS[name](), w))
        else:
            raise ConfigError(f"unknown reward {name!r}", f"known: {', '.join(known)}")
    if not parts:
        raise ConfigError(f"no reward in {spec!r}", f"name one of: {', '.join(known)}")
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else Weighted(parts)
