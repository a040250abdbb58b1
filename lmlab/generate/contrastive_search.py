"""Contrastive search (Su et al., 2022, "A Contrastive Framework for Neural Text Generation").

At each step the k most probable tokens v (after the logits processors) are candidates; each is
fed, and the one chosen maximises

    (1 − α) · p(v | x<t) − α · max_j cos(h_v, h_j)

where h_v is the model's last-layer state after v and h_j those of every earlier token (prompt
included): α (``penalty_alpha``) trades the model's confidence against the *degeneration penalty*,
the similarity of the new state to the context's, which keeps the text from repeating itself.

Inside the decoding loop this is k rows per request: the search fans its row out to the k
candidates (``select_state`` copies the cache, as ``transformers`` expands its cache), reads the
rows' hidden states from the step (it lists ``"hidden"`` in ``reads``), keeps the best candidate and
fans out again from it. Transformer models only (the state must have hidden states); one output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_number
from ..lm import LanguageModel
from .output import Completion, Event, StopStrings, TextRow
from .processors import apply
from .search import stop_set
from .settings import DecodingSettings, SettingError


def degeneration_penalty(candidates: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """max_j cos(candidate, context_j) for each candidate state [k, d] against the context's states [L, d]."""
    return (F.normalize(candidates.float(), dim=-1) @ F.normalize(context.float(), dim=-1).T).max(dim=-1).values


@dataclass(frozen=True)
class ContrastiveSearch:
    """Contrastive search with degeneration penalty ``penalty_alpha`` (α) over ``top_k`` candidates."""

    penalty_alpha: float = 0.6
    top_k: int = 4
    name: ClassVar[str] = "contrastive_search"

    def __post_init__(self) -> None:
        check_number("penalty_alpha", self.penalty_alpha, low=0.0, high=1.0)
        check_number("top_k", self.top_k, low=1, integer=True)

    def check(self, settings: DecodingSettings) -> None:
        if settings.base_strategy not in ("greedy", "sample") or settings.n != 1:
            raise SettingError("penalty_alpha", "contrastive search is deterministic and returns one continuation",
                               "leave n, best_of and beam_size out")

    def rows(self, settings: DecodingSettings) -> int:
        return self.top_k

    def check_model(self, lm: LanguageModel) -> None:
        if not (hasattr(lm, "next_scores_hidden") and hasattr(lm, "hidden_states")):
            raise ModelError(f"contrastive search compares hidden states, and a {type(lm).__name__} has none",
                             "use a transformer model, or contrastive decoding (an amateur model) instead")

    def search(self, settings: DecodingSettings, prompt: Sequence[int], *, lm: LanguageModel, **context: Any
               ) -> ContrastiveSearchRows:
        return ContrastiveSearchRows(self, settings, prompt, lm=lm, **context)


class ContrastiveSearchRows:
    """One request's contrastive search inside the loop (see the module docstring)."""

    reads = ("hidden",)

    def __init__(self, method: ContrastiveSearch, settings: DecodingSettings, prompt: Sequence[int], *,
                 lm: LanguageModel, eos_id: int | None, tokenizer: Any, device: torch.device,
                 emit: Callable[[Event], None]) -> None:
        self.method, self.settings, self.emit = method, settings, emit
        self.chain = settings.chain()
        self.prompt_length = len(prompt)
        self.row = TextRow(len(prompt), stop_set(eos_id, settings.stop_ids), StopStrings(settings.stop),
                           settings.max_new_tokens,
                           tokenizer.stream_decoder(skip_special_tokens=True) if tokenizer is not None else None)
        self.ids = list(prompt)
        with torch.inference_mode():
            hidden, _ = lm.hidden_states(torch.tensor([self.ids], dtype=torch.long, device=lm.device))
        self.context = hidden[0].float()  # [L, d]: the prompt's states, then each chosen token's
        self.candidates: list[int] = []
        self.confidence: torch.Tensor | None = None  # p(candidate) after the processors
        self.logprobs: list[float] = []  # the model's own log p(candidate)

    def step(self, raw: torch.Tensor, best: torch.Tensor, lse: torch.Tensor, hidden: torch.Tensor | None
             ) -> tuple[list[int], list[int]]:
        source = 0
        if self.candidates:  # raw / hidden: after each candidate of the previous step
            score = (1 - self.method.penalty_alpha) * self.confidence \
                - self.method.penalty_alpha * degeneration_penalty(hidden, self.context)
            source = int(score.argmax())
            token = self.candidates[source]
            piece = self.row.add(token, self.logprobs[source])
            taken = token not in self.row.stops
            self.emit(Event(index=0, text=piece, token=token if taken else None,
                            logprob=self.logprobs[source] if taken else None))
            if self.row.done:
                return [], []
            self.ids.append(token)
            self.context = torch.cat([self.context, hidden[source:source + 1].float()])
        scores = raw[source:source + 1]
        if self.chain:
            scores = apply(self.chain, scores, torch.tensor([self.ids], dtype=torch.long, device=raw.device),
                           self.prompt_length)
        if not bool(torch.isfinite(scores).any()):
            raise ConfigError("the logits processors removed every token", "loosen the filters")
        probs = scores[0].softmax(dim=-1)
        top = probs.topk(self.method.top_k)
        self.candidates, self.confidence = top.indices.tolist(), top.values
        self.logprobs = F.log_softmax(raw[source], dim=-1)[top.indices].tolist()
        return [source] * len(self.candidates), list(self.candidates)

    def finish(self, reason: str) -> list[str]:
        return [self.row.finish(flush=True, reason=reason)] if not self.row.done else []

    def results(self) -> list[Completion]:
        return [self.row.out]
