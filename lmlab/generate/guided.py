"""Decoding guided by a second model: each step's scores are reshaped before the plain search picks.

* **Contrastive decoding** (Li et al., 2023, "Contrastive Decoding: Open-ended Text Generation as
  Optimization"): score(x) = log p_expert(x) − log p_amateur(x) over the plausible tokens
  V_head = {x : p_expert(x) ≥ α · max_w p_expert(w)}, −∞ elsewhere. The amateur is any protocol
  model sharing the expert's tokenizer (a smaller transformer, an n-gram model), optionally at a
  temperature τ (its log-probabilities of logits / τ).
* **FUDGE** (Yang & Klein, 2021, "FUDGE: Controlled Text Generation With Future Discriminators"):
  over the top-k tokens x of each row, score(x) = log p(x | prefix) + λ · log p(a | prefix, x),
  −∞ elsewhere, where p(a | ·) is a classifier of the attribute a on prefixes and λ (``strength``)
  sets how hard generation is pushed (0: the model alone, among its top k).

Both wrap the plain search of the settings (greedy, sampling — with its processors, applied to the
reshaped scores — or beam search), so they run inside the one decoding loop beside every other
request. The amateur's state (and FUDGE's context ids) follow the rows the search keeps, reorders
and duplicates. Reported log-probabilities are those of the reshaped, renormalised scores the
search picked from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.validate import check_number
from ..lm import LanguageModel
from .output import Completion
from .search import base_search
from .settings import DecodingSettings
from .speculative import check_same_vocabulary

NEG_INF = float("-inf")

#: a prefix scorer for FUDGE: (contexts as id lists — prompt, generated ids and one candidate —, the
#: prompt's length) → log p(attribute | context) for each context, shape [N]
PrefixScorer = Callable[[list[list[int]], int], torch.Tensor]


def contrastive_scores(expert_logprobs: torch.Tensor, amateur_logprobs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Contrastive decoding's scores [B, V]: expert − amateur log-probabilities on the tokens whose expert
    probability is at least ``alpha`` times the row's highest, −∞ on the others."""
    threshold = expert_logprobs.max(dim=-1, keepdim=True).values + math.log(alpha)
    diff = expert_logprobs - amateur_logprobs.to(expert_logprobs.dtype)
    return torch.where(expert_logprobs >= threshold, diff, torch.full_like(diff, NEG_INF))


def fudge_scores(logprobs: torch.Tensor, candidates: torch.Tensor, attribute: torch.Tensor, strength: float
                 ) -> torch.Tensor:
    """FUDGE's scores [B, V]: log p(x) + λ · log p(a | prefix, x) on each row's candidate tokens
    ([B, k] ids, attribute log-probabilities [B, k]), −∞ on the others."""
    out = torch.full_like(logprobs, NEG_INF)
    return out.scatter(1, candidates, logprobs.gather(1, candidates) + strength * attribute.to(logprobs.dtype))


class Reshaped:
    """A plain search whose scores pass through a reshaper first; the reshaper follows its rows."""

    def __init__(self, inner: Any, reshaper: Any) -> None:
        self.inner, self.reshaper = inner, reshaper

    def step(self, raw: torch.Tensor, best: torch.Tensor, lse: torch.Tensor) -> tuple[list[int], list[int]]:
        scores = self.reshaper.scores(raw)
        parents, tokens = self.inner.step(scores, scores.argmax(dim=-1), scores.logsumexp(dim=-1))
        if parents:
            self.reshaper.advance(parents, tokens)
        return parents, tokens

    def finish(self, reason: str) -> list[str]:
        return self.inner.finish(reason)

    def results(self) -> list[Completion]:
        return self.inner.results()


class AmateurRows:
    """The amateur model's rows of one request: its log-probabilities at each step, its state following
    the expert's rows."""

    def __init__(self, method: Contrastive, prompt: Sequence[int], rows: int) -> None:
        self.method, self.lm = method, method.amateur
        scores, state = self.lm.prefill([list(prompt)])
        index = torch.zeros(rows, dtype=torch.long, device=self.lm.device)
        self.state = state if rows == 1 else self.lm.select_state(state, index)
        self.amateur = scores.float().expand(rows, -1)

    def scores(self, raw: torch.Tensor) -> torch.Tensor:
        amateur = F.log_softmax(self.amateur.to(raw.device) / self.method.amateur_temperature, dim=-1)
        return contrastive_scores(F.log_softmax(raw, dim=-1), amateur, self.method.alpha)

    def advance(self, parents: list[int], tokens: list[int]) -> None:
        lm = self.lm
        if parents != list(range(self.amateur.shape[0])):
            self.state = lm.select_state(self.state, torch.tensor(parents, dtype=torch.long, device=lm.device))
        fed = torch.tensor(tokens, dtype=torch.long, device=lm.device).unsqueeze(1)
        scores, self.state = lm.next_scores(fed, self.state)
        self.amateur = scores.float()


@dataclass(frozen=True)
class Contrastive:
    """Contrastive decoding against ``amateur`` with plausibility threshold ``alpha`` (Li et al. use 0.1)
    and amateur temperature ``amateur_temperature``, over the plain search of the settings."""

    amateur: LanguageModel
    alpha: float = 0.1
    amateur_temperature: float = 1.0
    name: ClassVar[str] = "contrastive"

    def __post_init__(self) -> None:
        check_number("alpha", self.alpha, low=0.0, high=1.0, low_inclusive=False)
        check_number("amateur_temperature", self.amateur_temperature, low=0.0, low_inclusive=False)

    def check(self, settings: DecodingSettings) -> None:
        return None

    def rows(self, settings: DecodingSettings) -> int:
        return settings.base_rows

    def check_model(self, lm: LanguageModel) -> None:
        check_same_vocabulary("amateur", self.amateur, lm)

    def search(self, settings: DecodingSettings, prompt: Sequence[int], *, lm: LanguageModel, **context: Any
               ) -> Reshaped:
        return Reshaped(base_search(settings, prompt, **context), AmateurRows(self, prompt, settings.base_rows))

    def __repr__(self) -> str:
        return f"Contrastive({type(self.amateur).__name__}, alpha={self.alpha}, " \
               f"amateur_temperature={self.amateur_temperature})"


class FudgeRows:
    """FUDGE's view of one request's rows: their context ids, to score each candidate's prefix."""

    def __init__(self, method: Fudge, prompt: Sequence[int], rows: int) -> None:
        self.method = method
        self.prompt_length = len(prompt)
        self.contexts = [list(prompt) for _ in range(rows)]

    def scores(self, raw: torch.Tensor) -> torch.Tensor:
        logprobs = F.log_softmax(raw, dim=-1)
        k = min(self.method.top_k, raw.shape[-1])
        candidates = logprobs.topk(k, dim=-1).indices
        prefixes = [ctx + [c] for ctx, row in zip(self.contexts, candidates.tolist(), strict=True) for c in row]
        attribute = torch.as_tensor(self.method.scorer(prefixes, self.prompt_length), dtype=torch.float32)
        if attribute.shape != (len(prefixes),):
            raise ConfigError(f"the FUDGE scorer returned shape {tuple(attribute.shape)} for {len(prefixes)} prefixes",
                              "return one log-probability per prefix")
        return fudge_scores(logprobs, candidates, attribute.view(candidates.shape).to(raw.device),
                            self.method.strength)

    def advance(self, parents: list[int], tokens: list[int]) -> None:
        self.contexts = [self.contexts[p] + [t] for p, t in zip(parents, tokens, strict=True)]


@dataclass(frozen=True)
class Fudge:
    """FUDGE: ``scorer`` gives log p(attribute | prefix) (``lmlab.classify.guidance`` builds one from any
    lmlab classifier), reweighting each step's ``top_k`` tokens with exponent ``strength`` (λ)."""

    scorer: PrefixScorer
    strength: float = 1.0
    top_k: int = 20
    name: ClassVar[str] = "fudge"

    def __post_init__(self) -> None:
        check_number("strength", self.strength, low=0.0)
        check_number("top_k", self.top_k, low=1, integer=True)
        if not callable(self.scorer):
            raise ConfigError("the FUDGE scorer must be callable", "pass a function of (prefixes, prompt_length)")

    def check(self, settings: DecodingSettings) -> None:
        return None

    def rows(self, settings: DecodingSettings) -> int:
        return settings.base_rows

    def check_model(self, lm: LanguageModel) -> None:
        return None

    def search(self, settings: DecodingSettings, prompt: Sequence[int], *, lm: LanguageModel, **context: Any
               ) -> Reshaped:
        return Reshaped(base_search(settings, prompt, **context), FudgeRows(self, prompt, settings.base_rows))

    def __repr__(self) -> str:
        return f"Fudge({getattr(self.scorer, '__name__', type(self.scorer).__name__)}, strength={self.strength}, " \
               f"top_k={self.top_k})"
