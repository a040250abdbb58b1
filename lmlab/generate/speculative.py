"""Speculative decoding: a cheap drafter proposes tokens, the target model checks them all in one pass.

Each step a row's drafter proposes up to K tokens; the decoding loop feeds the row's last chosen
token and the K drafts together (one forward pass for every row of the batch, rows right-aligned)
and hands back the target's scores after each of them. Walking the drafts left to right:

* **greedy** — a draft is accepted while it is the target's best token (after the logits
  processors); at the first mismatch the target's best token is taken instead. The output is
  the output of plain greedy decoding, token for token.
* **sampling** (Leviathan et al., 2023, "Fast Inference from Transformers via Speculative
  Decoding"; Chen et al., 2023, "Accelerating Large Language Model Decoding with Speculative
  Sampling") — draft x drawn from q is accepted with probability min(1, p(x)/q(x)), p the target's
  distribution after the processors; on rejection the token is drawn from norm(max(0, p − q)).
  Every token is then distributed exactly as p. A deterministic drafter (prompt lookup, a greedy
  n-gram) proposes with a point mass: q(x) = 1.

When every draft is accepted the target's distribution after the last one gives a bonus token, so
each step yields between 1 and K+1 tokens. The rejected drafts are taken back from the target's
state with ``rewind`` (the KV cache forgets them), so rows that accept different numbers of tokens
share one batch — beside ordinary rows — in ``Engine`` and in the server's ``Scheduler``.

Drafters: ``ModelDraft`` (any protocol model sharing the target's tokenizer: a small transformer,
an n-gram model loaded from ARPA or a model directory), ``PromptNgram`` (an n-gram model trained on
the fly on the prompt) and ``PromptLookup`` (copy what followed the last n-gram's earlier
occurrence in the context; Saxena, 2023, "Prompt Lookup Decoding"). The draft length is fixed or
adapts per row (``adaptive``: +2 after a fully accepted step, −1 otherwise, as ``transformers``'
heuristic schedule). Each completion's ``info`` reports drafted and accepted tokens and the
acceptance rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, ModelError
from ..core.seed import make_generator
from ..core.validate import check_number
from ..data.loaders import pad_batch
from ..lm import LanguageModel, can_rewind
from .output import Completion, Event, StopStrings, TextRow
from .processors import Processor, apply
from .search import stop_set
from .settings import DecodingSettings, SettingError


def check_same_vocabulary(role: str, model: LanguageModel, target: LanguageModel) -> None:
    """Refuse a helper model (draft, amateur) that does not share the target's tokenizer."""
    if model.vocab_size != target.vocab_size:
        raise ModelError(f"the {role} model has {model.vocab_size} outputs and the target {target.vocab_size}: "
                         "they do not share a tokenizer, so their token ids mean different things",
                         f"use a {role} model trained with the target's tokenizer")
    for special in ("eos_id", "bos_id"):
        mine, theirs = getattr(model, special), getattr(target, special)
        if mine is not None and theirs is not None and mine != theirs:
            raise ModelError(f"the {role} model and the target disagree on {special[:-3]} ({mine} vs {theirs}): "
                             "they do not share a tokenizer", f"use a {role} model trained with the target's tokenizer")


# --- drafters --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDraft:
    """Drafts from a protocol model (a smaller transformer, an n-gram model, ...) sharing the target's
    tokenizer: its best tokens (greedy targets) or samples from it after the same processors."""

    lm: LanguageModel
    name: ClassVar[str] = "model"

    def check(self, target: LanguageModel) -> None:
        check_same_vocabulary("draft", self.lm, target)

    def session(self, prompt: Sequence[int], rows: int, target: LanguageModel) -> ModelDraftSession:
        return ModelDraftSession(self.lm, prompt, rows)

    def __repr__(self) -> str:
        return f"ModelDraft({type(self.lm).__name__})"


@dataclass(frozen=True)
class PromptNgram:
    """Drafts from an n-gram model of ``order`` trained on the fly on the request's prompt
    (``lmlab.ngram``, ``smoothing`` as there), over the target's own token ids."""

    order: int = 3
    smoothing: str = "wb"
    name: ClassVar[str] = "ngram"

    def __post_init__(self) -> None:
        check_number("order", self.order, low=1, integer=True)

    def check(self, target: LanguageModel) -> None:
        if target.bos_id is None and target.eos_id is None:
            raise ModelError("an n-gram drafter needs the target's BOS or EOS id to mark where the prompt begins",
                             "use prompt lookup instead")

    def session(self, prompt: Sequence[int], rows: int, target: LanguageModel) -> ModelDraftSession:
        from ..ngram.counts import count_ngrams
        from ..ngram.model import NgramLM

        start = target.bos_id if target.bos_id is not None else target.eos_id
        ids = [int(i) for i in prompt]
        if ids and ids[0] == start:
            ids = ids[1:]
        counts = count_ngrams(np.array([start, *ids], dtype=np.int64), self.order, target.vocab_size, bos_id=start,
                              eos_id=target.eos_id if target.eos_id != start else None)
        lm = NgramLM.fit_counts(counts, self.smoothing)
        return ModelDraftSession(lm, prompt, rows)


@dataclass(frozen=True)
class PromptLookup:
    """Prompt lookup: find the context's last ``max_ngram`` ids (then shorter, down to ``min_ngram``)
    earlier in the context (prompt and output so far) and propose the ids that followed its first
    occurrence — ``transformers``' ``prompt_lookup_num_tokens`` rule. Proposes nothing without a match."""

    max_ngram: int = 2
    min_ngram: int = 1
    name: ClassVar[str] = "prompt-lookup"

    def __post_init__(self) -> None:
        check_number("max_ngram", self.max_ngram, low=1, integer=True)
        check_number("min_ngram", self.min_ngram, low=1, high=self.max_ngram, integer=True)

    def check(self, target: LanguageModel) -> None:
        return None

    def session(self, prompt: Sequence[int], rows: int, target: LanguageModel) -> PromptLookup:
        return self

    def keep(self, parents: list[int]) -> None:
        return None

    def propose(self, histories: list[list[int]], counts: list[int], generators: Sequence[torch.Generator],
                chain: Sequence[Processor], greedy: bool, prompt_length: int
                ) -> list[tuple[list[int], torch.Tensor | None]]:
        return [(lookup_continuation(h, c, self.max_ngram, self.min_ngram) if c > 0 else [], None)
                for h, c in zip(histories, counts, strict=True)]


def lookup_continuation(history: Sequence[int], count: int, max_ngram: int, min_ngram: int = 1) -> list[int]:
    """Up to ``count`` ids that followed the first earlier occurrence of ``history``'s last n ids (n from
    ``max_ngram`` down to ``min_ngram``); [] when none occurs."""
    ids = np.asarray(history, dtype=np.int64)
    length = len(ids)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(ids[:length - 1], n)  # never the suffix itself
        hits = np.flatnonzero((windows == ids[length - n:]).all(axis=1))
        for start in hits + n:
            if start < length:
                return ids[start:start + count].tolist()
    return []


class ModelDraftSession:
    """One request's draft rows on a protocol model: its state follows the rows' contexts, forgetting
    rejected drafts with ``rewind`` (or, for models that cannot forget, reading the contexts again)."""

    def __init__(self, lm: LanguageModel, prompt: Sequence[int], rows: int) -> None:
        self.lm = lm
        scores, state = lm.prefill([list(prompt)])
        index = torch.zeros(rows, dtype=torch.long, device=lm.device)
        self.state = state if rows == 1 else lm.select_state(state, index)
        self.scores = scores.float().expand(rows, -1)  # after each row's last seen id
        self.seen = [list(prompt) for _ in range(rows)]
        self.rewinds = can_rewind(lm)

    def keep(self, parents: list[int]) -> None:
        if parents != list(range(len(self.seen))):
            index = torch.tensor(parents, dtype=torch.long, device=self.lm.device)
            self.state = self.lm.select_state(self.state, index)
            self.scores = self.scores[index.to(self.scores.device)]
            self.seen = [list(self.seen[p]) for p in parents]

    def _sync(self, histories: list[list[int]]) -> None:
        """Bring every row's state to the end of its history (forget wrong drafts, read the new ids)."""
        lm = self.lm
        drops, tails = [], []
        for seen, history in zip(self.seen, histories, strict=True):
            same = common_prefix(seen, history)
            drops.append(len(seen) - same)
            tails.append(history[same:])
        if (any(drops) or not all(tails)) and not self.rewinds:  # a state that cannot forget: read again
            scores, self.state = lm.prefill(histories)
            self.scores, self.seen = scores.float(), [list(h) for h in histories]
            return
        forget = [d + (0 if t else 1) for d, t in zip(drops, tails, strict=True)]  # nothing new: read the last again
        tails = [t if t else h[-1:] for t, h in zip(tails, histories, strict=True)]
        if any(forget):
            self.state = lm.rewind(self.state, forget)
        ids, mask = pad_batch(tails, 0, left=True)
        scores, self.state = lm.next_scores_all(ids.to(lm.device), self.state,
                                                None if bool(mask.all()) else mask.to(lm.device))
        self.scores, self.seen = scores[:, -1].float(), [list(h) for h in histories]

    def propose(self, histories: list[list[int]], counts: list[int], generators: Sequence[torch.Generator],
                chain: Sequence[Processor], greedy: bool, prompt_length: int
                ) -> list[tuple[list[int], torch.Tensor | None]]:
        """Up to ``counts[i]`` drafts for row i after ``histories[i]``, with the distributions they were
        drawn from (None for greedy drafts: the target then only compares best tokens)."""
        if not any(counts):
            return [([], None) for _ in counts]
        self._sync(histories)
        lm = self.lm
        drafts: list[list[int]] = [[] for _ in counts]
        dists: list[list[torch.Tensor]] = [[] for _ in counts]
        for j in range(max(counts)):
            processed = self.scores
            if chain:
                processed = torch.cat([apply(chain, processed[i:i + 1], torch.tensor([h + d], dtype=torch.long),
                                             prompt_length) for i, (h, d) in enumerate(zip(histories, drafts,
                                                                                           strict=True))])
            if greedy:
                picked = processed.argmax(dim=-1).tolist()
            else:
                probs = processed.double().softmax(dim=-1)
                picked = [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]
            for i, token in enumerate(picked):
                if j < counts[i]:
                    drafts[i].append(token)
                    if not greedy:
                        dists[i].append(probs[i])
            if j + 1 < max(counts):  # the last draft is not read: the target reads it first
                fed = torch.tensor(picked, dtype=torch.long, device=lm.device).unsqueeze(1)
                scores, self.state = lm.next_scores(fed, self.state)
                self.scores = scores.float()
                for seen, token in zip(self.seen, picked, strict=True):
                    seen.append(token)
        return [(d, torch.stack(q) if q else None) for d, q in zip(drafts, dists, strict=True)]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    if n and a[n - 1] == b[n - 1] and list(a[:n]) == list(b[:n]):
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# --- the method ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Speculative:
    """Speculative decoding with ``drafter`` (``ModelDraft``, ``PromptNgram``, ``PromptLookup``) proposing
    ``draft_tokens`` per step (``adaptive``: per row between 1 and ``max_draft_tokens``, default
    max(16, draft_tokens)). Runs greedy or
    sampled rows (n of them), with any logits processors; the target must be able to ``rewind``."""

    drafter: Any
    draft_tokens: int = 4
    adaptive: bool = False
    max_draft_tokens: int | None = None  # None: max(16, draft_tokens)
    name: ClassVar[str] = "speculative"

    def __post_init__(self) -> None:
        check_number("draft_tokens", self.draft_tokens, low=1, integer=True)
        if self.max_draft_tokens is not None:
            check_number("max_draft_tokens", self.max_draft_tokens, low=self.draft_tokens, integer=True)

    @property
    def longest(self) -> int:
        """The most tokens an adaptive row drafts in one step."""
        return self.max_draft_tokens if self.max_draft_tokens is not None else max(16, self.draft_tokens)
        if not all(hasattr(self.drafter, a) for a in ("check", "session")):
            raise ConfigError(f"{self.drafter!r} is not a drafter", "use ModelDraft, PromptNgram or PromptLookup")

    def check(self, settings: DecodingSettings) -> None:
        if settings.base_strategy not in ("greedy", "sample"):
            raise SettingError("method", f"speculative decoding runs greedy or sampled rows, not "
                               f"{settings.base_strategy.replace('_', ' ')}", "leave best_of and beam_size out")

    def rows(self, settings: DecodingSettings) -> int:
        return settings.n

    def check_model(self, lm: LanguageModel) -> None:
        if not can_rewind(lm):
            raise ModelError(f"speculative decoding takes back rejected drafts, and a {type(lm).__name__}'s state "
                             "cannot forget tokens", "speculate with a transformer target")
        self.drafter.check(lm)

    def search(self, settings: DecodingSettings, prompt: Sequence[int], *, lm: LanguageModel, **context: Any
               ) -> SpeculativeSearch:
        return SpeculativeSearch(self, settings, prompt, lm=lm, **context)


@dataclass
class _Row:
    """One output's bookkeeping: its context ids, its pending drafts and its counts."""

    text: TextRow
    ids: list[int]
    generator: torch.Generator
    length: int
    drafts: list[int] = field(default_factory=list)
    q: torch.Tensor | None = None
    drafted: int = 0
    accepted: int = 0
    steps: int = 0


class SpeculativeSearch:
    """The strategy of one speculative request inside the decoding loop (see the module docstring)."""

    reads = ("positions",)

    def __init__(self, method: Speculative, settings: DecodingSettings, prompt: Sequence[int], *,
                 lm: LanguageModel, eos_id: int | None, tokenizer: Any, device: torch.device,
                 emit: Callable[[Event], None]) -> None:
        self.method, self.settings, self.emit = method, settings, emit
        self.chain = settings.chain()
        self.greedy = settings.is_greedy
        self.prompt_length = len(prompt)
        stops, strings = stop_set(eos_id, settings.stop_ids), StopStrings(settings.stop)
        seed = settings.seed
        self.outputs = [_Row(TextRow(len(prompt), stops, strings, settings.max_new_tokens,
                                     tokenizer.stream_decoder(skip_special_tokens=True) if tokenizer else None),
                             list(prompt), make_generator(None if seed is None else seed + i, device),
                             method.draft_tokens) for i in range(settings.n)]
        self.alive = list(range(settings.n))
        self.drafter = method.drafter.session(prompt, settings.n, lm)
        self.top = settings.top_logprobs

    def step(self, raw: torch.Tensor, best: torch.Tensor, lse: torch.Tensor, positions: torch.Tensor
             ) -> tuple[list[int], list[list[int]], list[int]]:
        parents, drops = [], []
        for r, out in enumerate(self.alive):
            row = self.outputs[out]
            m = len(row.drafts)
            scores = positions[r, positions.shape[1] - m - 1:]  # after the last chosen id, then each draft
            accepted = self._verify(out, row, scores)
            if row.drafts:
                row.steps += 1
                row.drafted += m
                row.accepted += accepted
                if self.method.adaptive:
                    row.length = (min(row.length + 2, self.method.longest) if accepted == m
                                  else max(1, row.length - 1))
            if not row.text.done:
                parents.append(r)
                drops.append(m - accepted)
        self.alive = [self.alive[r] for r in parents]
        self.drafter.keep(parents)
        if not parents:
            return [], [], []
        rows = [self.outputs[o] for o in self.alive]
        counts = [max(0, min(row.length, self.settings.max_new_tokens - len(row.text.out.ids) - 1)) for row in rows]
        proposals = self.drafter.propose([row.ids for row in rows], counts, [row.generator for row in rows],
                                         self.chain, self.greedy, self.prompt_length)
        feeds = []
        for row, (drafts, q) in zip(rows, proposals, strict=True):
            row.drafts, row.q = list(drafts), q
            feeds.append([row.ids[-1], *row.drafts])
        return parents, feeds, drops

    def _verify(self, out: int, row: _Row, scores: torch.Tensor) -> int:
        """Walk the row's drafts against the target's scores [m+1, V]; take the accepted ones and one token
        of the target's own. Returns how many drafts were accepted."""
        m = len(row.drafts)
        for j in range(m + 1):
            processed = scores[j:j + 1]
            if self.chain:
                ids = torch.tensor([row.ids], dtype=torch.long, device=scores.device)
                processed = apply(self.chain, processed, ids, self.prompt_length)
            processed = processed[0]
            if not bool(torch.isfinite(processed).any()):
                raise ConfigError("the logits processors removed every token", "loosen the filters")
            if j == m:  # every draft accepted: the target's own next token
                self._take(out, row, self._choose(processed, row.generator), scores[j])
                return m
            token = self._accept(processed, row.drafts[j], None if row.q is None else row.q[j], row.generator)
            self._take(out, row, token, scores[j])
            if token != row.drafts[j]:
                return j
            if row.text.done:
                return j + 1
        return m

    def _accept(self, processed: torch.Tensor, draft: int, q: torch.Tensor | None, gen: torch.Generator) -> int:
        """The draft if the target accepts it, else the target's replacement (see the module docstring)."""
        if self.greedy:
            return int(processed.argmax())
        p = processed.double().softmax(dim=-1)
        q_draft = 1.0 if q is None else float(q[draft])
        if float(torch.rand((), generator=gen, dtype=torch.float64)) * q_draft < float(p[draft]):
            return draft
        residual = p.clone()
        if q is None:
            residual[draft] = 0.0
        else:
            residual = (p - q.to(p.device)).clamp(min=0.0)
        if float(residual.sum()) <= 0.0:  # p ≤ q nowhere exceeded: only rounding could get here
            residual = p
        return int(torch.multinomial(residual, 1, generator=gen))

    def _choose(self, processed: torch.Tensor, gen: torch.Generator) -> int:
        if self.greedy:
            return int(processed.argmax())
        return int(torch.multinomial(processed.double().softmax(dim=-1), 1, generator=gen))

    def _take(self, out: int, row: _Row, token: int, scores: torch.Tensor) -> None:
        logprobs = F.log_softmax(scores, dim=-1)
        logprob = float(logprobs[token])
        piece = row.text.add(token, logprob)
        taken = token not in row.text.stops
        top = []
        if self.top and taken:
            values, ids = logprobs.topk(min(self.top, logprobs.shape[0]))
            top = list(zip(ids.tolist(), values.tolist(), strict=True))
        self.emit(Event(index=out, text=piece, token=token if taken else None, logprob=logprob if taken else None,
                        top=top))
        if taken:
            row.ids.append(token)

    def finish(self, reason: str) -> list[str]:
        return [self.outputs[o].text.finish(flush=True, reason=reason) for o in self.alive]

    def results(self) -> list[Completion]:
        outs = []
        for row in self.outputs:
            completion = row.text.out
            completion.info = {"drafter": self.method.drafter.name, "draft_tokens": row.drafted,
                               "accepted_tokens": row.accepted, "verify_steps": row.steps,
                               "acceptance_rate": row.accepted / row.drafted if row.drafted else 0.0}
            outs.append(completion)
        return outs
