"""Sample-then-select: several hypotheses (best-of-n samples or a beam's n-best), then one rule picks.

A selector is given as ``DecodingSettings(select=...)`` with ``best_of=N`` (sampled hypotheses) or
``beam_size=N`` (beam hypotheses); the search ranks its finished hypotheses by the selector's
scores (higher is better; ties keep the search's own order) and returns the ``n`` best, each with
its ``score``. The rules:

* ``ModelScore`` — the model's mean log-probability per token (what best-of-n does without a selector);
* ``Reward`` — a reward or classifier score of each text (generate-then-rerank);
* ``MBR`` — minimum Bayes risk decoding (Kumar & Byrne, 2004; Eikema & Aziz, 2020): the hypothesis
  with the highest expected utility against the hypotheses themselves as evidence, i.e.
  EU(h) = (1/N) Σ_e u(h, e) over all N hypotheses e (h included), with any utility — BLEU, chrF,
  ROUGE, BERTScore from ``lmlab.eval.utility``;
* ``MajorityVote`` — self-consistency (Wang et al., 2023): extract each hypothesis's answer and score
  it by the share of hypotheses that reach the same answer (answers the extractor marks
  "[invalid]" get no votes); ``info`` holds the answer and the votes.

These are plain functions of texts, so they run on any model and in the server's batching loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from ..core.errors import ConfigError
from .output import Completion

#: a utility for MBR: (hypotheses, evidence) — two aligned lists — → u(hypothesis_i, evidence_i) for each i
PairUtility = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
INVALID = "[invalid]"


def rerank(completions: list[Completion], selector) -> list[Completion]:
    """``completions`` ordered by the selector's scores, best first (stable: ties keep their order);
    each gets its score."""
    if selector is None or not completions:
        return completions
    scores = list(selector.scores(completions))
    if len(scores) != len(completions):
        raise ConfigError(f"the selector {selector.name} gave {len(scores)} scores for {len(completions)} hypotheses",
                          "return one score per hypothesis")
    for completion, score in zip(completions, scores, strict=True):
        completion.score = float(score)
    order = sorted(range(len(completions)), key=lambda i: -scores[i])
    return [completions[i] for i in order]


@dataclass(frozen=True)
class ModelScore:
    """The model's mean log-probability per generated token."""

    name: ClassVar[str] = "model_score"

    def scores(self, completions: Sequence[Completion]) -> list[float]:
        return [c.mean_logprob for c in completions]


@dataclass(frozen=True)
class Reward:
    """A reward of each text: ``reward(texts) -> scores`` (a classifier's probability of a label, a reward
    model's output; ``lmlab.classify.guidance.label_reward`` makes one from an lmlab classifier)."""

    reward: Callable[[Sequence[str]], Sequence[float]]
    name: ClassVar[str] = "reward"

    def scores(self, completions: Sequence[Completion]) -> list[float]:
        return [float(s) for s in self.reward([c.text for c in completions])]


def expected_utilities(texts: Sequence[str], utility: PairUtility, evidence: Sequence[str] | None = None
                       ) -> list[float]:
    """EU(h) = mean over the evidence e of u(h, e), for every hypothesis h (evidence: the hypotheses)."""
    evidence = list(texts if evidence is None else evidence)
    if not evidence:
        raise ConfigError("MBR needs at least one evidence text", "sample some hypotheses first")
    hyps = [h for h in texts for _ in evidence]
    refs = [e for _ in texts for e in evidence]
    values = [float(v) for v in utility(hyps, refs)]
    n = len(evidence)
    return [sum(values[i * n:(i + 1) * n]) / n for i in range(len(texts))]


@dataclass(frozen=True)
class MBR:
    """Minimum Bayes risk: the hypothesis of highest expected ``utility`` against the others (and itself)."""

    utility: PairUtility
    metric: str = "utility"
    name: ClassVar[str] = "mbr"

    def scores(self, completions: Sequence[Completion]) -> list[float]:
        return expected_utilities([c.text for c in completions], self.utility)

    def __repr__(self) -> str:
        return f"MBR({self.metric})"


@dataclass(frozen=True)
class MajorityVote:
    """Self-consistency: the share of hypotheses whose ``extract``-ed answer equals this one's."""

    extract: Callable[[str], str]
    invalid: tuple[str, ...] = field(default=(INVALID,))
    name: ClassVar[str] = "majority_vote"

    def scores(self, completions: Sequence[Completion]) -> list[float]:
        answers = [self.extract(c.text) for c in completions]
        votes = Counter(a for a in answers if a not in self.invalid)
        for completion, answer in zip(completions, answers, strict=True):
            completion.info = {**completion.info, "answer": answer, "votes": votes.get(answer, 0),
                               "hypotheses": len(completions)}
        return [votes.get(a, 0) / len(completions) for a in answers]

    def __repr__(self) -> str:
        return f"MajorityVote({getattr(self.extract, '__name__', 'extract')})"
