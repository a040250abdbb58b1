"""Logits processors: each turns next-token scores [B, V] into new scores, given the ids so far.

Decoding = search strategy × processors (DESIGN principle 6): any chain of these works with
sampling, greedy, beam and its variants, on any protocol model. A processor is called as
``proc(scores, ids, prompt_length)`` where ``ids`` [B, t] holds each row's prompt and
generated tokens; filters set removed tokens to -inf and never remove the most likely one.
Scores may be log-probabilities or logits: search strategies renormalise after the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..core.validate import check_number

Processor = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
NEG_INF = float("-inf")


def apply(processors: Sequence[Processor], scores: torch.Tensor, ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Run a chain of processors in order."""
    for proc in processors:
        scores = proc(scores, ids, prompt_length)
    return scores


def _keep_at_least_top(remove: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Never remove a row's best token, so every row keeps a valid distribution."""
    return remove.scatter(1, scores.argmax(dim=1, keepdim=True), False)


@dataclass(frozen=True)
class Temperature:
    """Divide scores by t (t > 0): t < 1 sharpens the distribution, t > 1 flattens it."""

    t: float

    def __post_init__(self) -> None:
        check_number("temperature", self.t, low=0.0, low_inclusive=False)

    def __call__(self, scores, ids, prompt_length):
        return scores / self.t


@dataclass(frozen=True)
class TopK:
    """Keep the k highest-scoring tokens."""

    k: int

    def __post_init__(self) -> None:
        check_number("top_k", self.k, low=1, integer=True)

    def __call__(self, scores, ids, prompt_length):
        k = min(self.k, scores.shape[1])
        kth = scores.topk(k, dim=1).values[:, -1:]
        return scores.masked_fill(scores < kth, NEG_INF)


@dataclass(frozen=True)
class TopP:
    """Nucleus sampling: keep the smallest set of most likely tokens whose mass reaches p."""

    p: float

    def __post_init__(self) -> None:
        check_number("top_p", self.p, low=0.0, high=1.0, low_inclusive=False)

    def __call__(self, scores, ids, prompt_length):
        sorted_scores, order = scores.sort(dim=1, descending=True)
        mass_before = sorted_scores.softmax(dim=1).cumsum(dim=1) - sorted_scores.softmax(dim=1)
        remove_sorted = mass_before >= self.p  # tokens reached only after the mass is already p
        remove = remove_sorted.scatter(1, order, remove_sorted)
        return scores.masked_fill(_keep_at_least_top(remove, scores), NEG_INF)


@dataclass(frozen=True)
class MinP:
    """Keep tokens whose probability is at least p times the most likely token's."""

    p: float

    def __post_init__(self) -> None:
        check_number("min_p", self.p, low=0.0, high=1.0)

    def __call__(self, scores, ids, prompt_length):
        probs = scores.softmax(dim=1)
        remove = probs < self.p * probs.max(dim=1, keepdim=True).values
        return scores.masked_fill(_keep_at_least_top(remove, scores), NEG_INF)


@dataclass(frozen=True)
class Epsilon:
    """Epsilon sampling (Hewitt et al., 2022): drop tokens with probability below ε."""

    epsilon: float

    def __post_init__(self) -> None:
        check_number("epsilon", self.epsilon, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)

    def __call__(self, scores, ids, prompt_length):
        remove = scores.softmax(dim=1) < self.epsilon
        return scores.masked_fill(_keep_at_least_top(remove, scores), NEG_INF)


@dataclass(frozen=True)
class Eta:
    """Eta sampling (Hewitt et al., 2022): threshold min(η, √η·exp(−entropy)) adapts to the entropy."""

    eta: float

    def __post_init__(self) -> None:
        check_number("eta", self.eta, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)

    def __call__(self, scores, ids, prompt_length):
        logp = scores.log_softmax(dim=1)
        probs = logp.exp()
        entropy = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(dim=1, keepdim=True)
        eta = torch.tensor(self.eta, dtype=scores.dtype, device=scores.device)
        threshold = torch.minimum(eta, eta.sqrt() * torch.exp(-entropy))
        remove = probs < threshold
        return scores.masked_fill(_keep_at_least_top(remove, scores), NEG_INF)


@dataclass(frozen=True)
class Typical:
    """Locally typical sampling (Meister et al., 2022): keep tokens whose surprisal is closest to
    the entropy until their mass reaches ``mass``."""

    mass: float

    def __post_init__(self) -> None:
        check_number("typical_p", self.mass, low=0.0, high=1.0, low_inclusive=False)

    def __call__(self, scores, ids, prompt_length):
        logp = scores.log_softmax(dim=1)
        probs = logp.exp()
        entropy = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(dim=1, keepdim=True)
        distance = (-logp - entropy).abs()
        sorted_dist, order = distance.sort(dim=1)
        sorted_probs = probs.gather(1, order)
        mass_before = sorted_probs.cumsum(dim=1) - sorted_probs
        remove_sorted = mass_before >= self.mass
        remove = remove_sorted.scatter(1, order, remove_sorted)
        return scores.masked_fill(_keep_at_least_top(remove, scores), NEG_INF)


@dataclass(frozen=True)
class RepetitionPenalty:
    """CTRL's penalty on every token already present (prompt included): positive scores are
    divided by r, negative ones multiplied by r, so r > 1 always makes repeats less likely."""

    r: float

    def __post_init__(self) -> None:
        check_number("repetition_penalty", self.r, low=0.0, low_inclusive=False)

    def __call__(self, scores, ids, prompt_length):
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, ids, True)
        penalised = torch.where(scores > 0, scores / self.r, scores * self.r)
        return torch.where(seen, penalised, scores)


@dataclass(frozen=True)
class FrequencyPresencePenalty:
    """OpenAI-style penalties on generated tokens: subtract frequency·count + presence·[count > 0]."""

    frequency: float = 0.0
    presence: float = 0.0

    def __post_init__(self) -> None:
        check_number("frequency_penalty", self.frequency, low=-2.0, high=2.0)
        check_number("presence_penalty", self.presence, low=-2.0, high=2.0)

    def __call__(self, scores, ids, prompt_length):
        generated = ids[:, prompt_length:]
        counts = torch.zeros_like(scores).scatter_add(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


@dataclass(frozen=True)
class NoRepeatNgram:
    """Ban any token that would repeat an n-gram already in the sequence (prompt included)."""

    n: int

    def __post_init__(self) -> None:
        check_number("no_repeat_ngram_size", self.n, low=1, integer=True)

    def __call__(self, scores, ids, prompt_length):
        n, length = self.n, ids.shape[1]
        if length + 1 < n:
            return scores
        banned = torch.zeros_like(scores, dtype=torch.bool)
        rows = ids.tolist()
        for b, row in enumerate(rows):
            prefix = tuple(row[length - n + 1:]) if n > 1 else ()
            for i in range(length - n + 1):
                if tuple(row[i:i + n - 1]) == prefix:
                    banned[b, row[i + n - 1]] = True
        return scores.masked_fill(banned, NEG_INF)


@dataclass(frozen=True)
class LogitBias:
    """Add a fixed bias to chosen token ids (OpenAI ``logit_bias``; −100 effectively bans)."""

    bias: Mapping[int, float] = field(default_factory=dict)

    def __call__(self, scores, ids, prompt_length):
        if not self.bias:
            return scores
        idx = torch.tensor(list(self.bias), dtype=torch.long, device=scores.device)
        val = torch.tensor(list(self.bias.values()), dtype=scores.dtype, device=scores.device)
        return scores.index_add(1, idx, val.unsqueeze(0).expand(scores.shape[0], -1))


@dataclass(frozen=True)
class BanTokens:
    """Never produce these ids."""

    banned: tuple[int, ...]

    def __call__(self, scores, ids, prompt_length):
        out = scores.clone()
        out[:, list(self.banned)] = NEG_INF
        return out


def standard_chain(*, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   min_p: float | None = None, typical_p: float | None = None, epsilon: float | None = None,
                   eta: float | None = None, repetition_penalty: float | None = None,
                   frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                   no_repeat_ngram_size: int | None = None, logit_bias: Mapping[int, float] | None = None,
                   banned_ids: Sequence[int] | None = None) -> list[Processor]:
    """The usual order: penalties and biases on raw scores, then temperature, then truncation."""
    chain: list[Processor] = []
    if top_p is not None:  # checked here too: p = 1 adds no processor, but p > 1 must not pass silently
        check_number("top_p", top_p, low=0.0, high=1.0, low_inclusive=False)
    if repetition_penalty is not None and repetition_penalty != 1.0:
        chain.append(RepetitionPenalty(repetition_penalty))
    if frequency_penalty or presence_penalty:
        chain.append(FrequencyPresencePenalty(frequency_penalty, presence_penalty))
    if no_repeat_ngram_size:
        chain.append(NoRepeatNgram(no_repeat_ngram_size))
    if logit_bias:
        chain.append(LogitBias(dict(logit_bias)))
    if banned_ids:
        chain.append(BanTokens(tuple(banned_ids)))
    if temperature != 1.0:
        chain.append(Temperature(temperature))
    if top_k is not None:
        chain.append(TopK(top_k))
    if top_p is not None and top_p < 1.0:
        chain.append(TopP(top_p))
    if min_p:
        chain.append(MinP(min_p))
    if typical_p is not None and typical_p < 1.0:
        chain.append(Typical(typical_p))
    if epsilon:
        chain.append(Epsilon(epsilon))
    if eta:
        chain.append(Eta(eta))
    return chain
