"""Search strategies: how a request's rows turn next-token scores into tokens, step by step.

The decoding loop (``lmlab.generate.loop``) gives each request's strategy the raw scores of its
rows ([k, V]: logits on neural models, log-probabilities on count models) once per step; the
strategy answers which rows continue with which token — ``parents`` (rows to copy, possibly
repeated or reordered) and ``tokens`` — or nothing when the request is finished, and then
``results()`` gives its completions. So sampling, best-of-n, beam search and its variants all
run inside the one loop, on any protocol model, with the same queue, timeouts and cancellation.

* ``SampleSearch``: n independent rows (greedy or sampled after the processors, each with its own
  seeded generator), streamed; best-of-n keeps the n with the highest mean log-probability.
* ``BeamSearch``: beam search, or diverse beam search (Vijayakumar et al., 2018) with groups.
* ``StochasticBeamSearch``: sampling without replacement by Gumbel-top-k (Kool et al., 2019).

A ``select`` rule in the settings (``lmlab.generate.select``: MBR, self-consistency, a reward) re-ranks
the finished hypotheses of best-of-n and the beam searches. A ``method`` in the settings
(speculative, contrastive, FUDGE) supplies its own strategy (``make_search``).

Processors: sampling and greedy rows apply them to the raw scores (as ``transformers`` applies
its processors to logits before sampling); beam searches apply them to log-probabilities and
renormalise (as ``transformers``' beam search does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..core.seed import make_generator
from .output import Completion, Event, StopStrings, TextRow
from .processors import apply
from .select import rerank
from .settings import DecodingSettings

NEG_INF = float("-inf")
Step = tuple[list[int], list[int]]  # (parent row of each continuing row, its token); empty: finished


class History:
    """Every row's ids so far (prompt + generated) [k, t], for processors that look back."""

    def __init__(self, prompt: Sequence[int], rows: int, capacity: int, device: torch.device) -> None:
        self.ids = torch.zeros(rows, len(prompt) + capacity, dtype=torch.long, device=device)
        self.ids[:, :len(prompt)] = torch.as_tensor(list(prompt), dtype=torch.long, device=device)
        self.length = self.prompt_length = len(prompt)

    def view(self) -> torch.Tensor:
        return self.ids[:, :self.length]

    def advance(self, parents: list[int], tokens: list[int]) -> None:
        if parents != list(range(self.ids.shape[0])):
            self.ids = self.ids[torch.tensor(parents, dtype=torch.long, device=self.ids.device)]
        if tokens and self.length < self.ids.shape[1]:
            self.ids[:, self.length] = torch.tensor(tokens, dtype=torch.long, device=self.ids.device)
            self.length += 1


def choose(scores: torch.Tensor, greedy: bool, generators: Sequence[torch.Generator | None]) -> list[int]:
    """The next token of each row from processed scores [k, V]: the best, or a draw from their softmax
    with that row's generator. A row whose processors removed every token is an error."""
    dead = ~torch.isfinite(scores).any(dim=-1) | torch.isnan(scores).any(dim=-1)
    if bool(dead.any()):
        raise ConfigError("the logits processors removed every token", "loosen the filters")
    if greedy:
        return scores.argmax(dim=-1).tolist()
    probs = scores.softmax(dim=-1)
    return [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]


def stop_set(eos_id: int | None, stop_ids: Sequence[int] | None) -> set[int]:
    """The ids that end a sequence: ``stop_ids`` if given, else the model's EOS."""
    if stop_ids is not None:
        return set(stop_ids)
    return {eos_id} if eos_id is not None else set()


def hypothesis(tokenizer: Any, stops: StopStrings, prompt_tokens: int, ids: list[int], logprobs: list[float],
               reason: str, score: float) -> Completion:
    """A finished beam hypothesis as a completion, its text cut at its first stop string (which then
    becomes its finish reason)."""
    text, cut = ("", False) if tokenizer is None else stops.cut(tokenizer.decode(list(ids), skip_special_tokens=True))
    return Completion(ids=list(ids), logprobs=list(logprobs), text=text, finish_reason="stop" if cut else reason,
                      prompt_tokens=prompt_tokens, score=score)


class SampleSearch:
    """n independent rows, greedy or sampled (``best_of``: sample that many, keep the n best)."""

    def __init__(self, settings: DecodingSettings, prompt: Sequence[int], *, eos_id: int | None, tokenizer: Any,
                 device: torch.device, emit: Callable[[Event], None]) -> None:
        k = settings.rows
        self.settings, self.emit = settings, emit
        self.chain = settings.chain()
        self.greedy = settings.is_greedy
        seed = settings.seed
        self.generators = [make_generator(None if seed is None else seed + i, device) for i in range(k)]
        stops, strings = stop_set(eos_id, settings.stop_ids), StopStrings(settings.stop)
        self.rows = [TextRow(len(prompt), stops, strings, settings.max_new_tokens,
                             tokenizer.stream_decoder(skip_special_tokens=True) if tokenizer is not None else None)
                     for _ in range(k)]
        self.alive = list(range(k))  # the output each live row belongs to
        self.history = History(prompt, k, settings.max_new_tokens, device) if self.chain else None
        self.streams = settings.best_of is None
        self.top = settings.top_logprobs

    @property
    def width(self) -> int:
        return len(self.rows)

    def step(self, raw: torch.Tensor, best: torch.Tensor, lse: torch.Tensor) -> Step:
        if self.chain:
            scores = apply(self.chain, raw, self.history.view(), self.history.prompt_length)
            tokens = choose(scores, self.greedy, [self.generators[o] for o in self.alive])
        elif self.greedy:
            tokens = best.tolist()
        else:
            tokens = choose(raw, False, [self.generators[o] for o in self.alive])
        picked = torch.tensor(tokens, dtype=torch.long, device=raw.device)
        chosen = (raw.gather(1, picked.unsqueeze(1)).squeeze(1) - lse).tolist()
        tops = self._top(raw) if self.top else None
        parents, kept = [], []
        for r, (token, logprob) in enumerate(zip(tokens, chosen, strict=True)):
            out = self.alive[r]
            row = self.rows[out]
            piece = row.add(token, logprob)
            if self.streams:
                taken = token not in row.stops
                self.emit(Event(index=out, text=piece, token=token if taken else None,
                                logprob=logprob if taken else None, top=tops[r] if tops else [],
                                stop_id=None if taken else token, stop_logprob=None if taken else logprob))
            if not row.done:
                parents.append(r)
                kept.append(token)
        if self.history is not None:
            self.history.advance(parents, kept)
        self.alive = [self.alive[r] for r in parents]
        return parents, kept

    def _top(self, raw: torch.Tensor) -> list[list[tuple[int, float]]]:
        values, ids = F.log_softmax(raw, dim=-1).topk(min(self.top, raw.shape[1]), dim=-1)
        return [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]

    def finish(self, reason: str) -> list[str]:
        """End every live row (cancelled, failed); the text each had not shown yet."""
        return [self.rows[o].finish(flush=True, reason=reason) for o in self.alive]

    def results(self) -> list[Completion]:
        outs = [row.out for row in self.rows]
        if self.settings.best_of is None:
            return outs
        for out in outs:
            out.score = out.mean_logprob
        return rerank(sorted(outs, key=lambda c: -c.score), self.settings.select)[:self.settings.n]


def _finished_score(total: float, length: int, length_penalty: float) -> float:
    return total / (max(length, 1) ** length_penalty)


class BeamSearch:
    """Beam search with ``groups`` diverse groups (1: plain beam search). A group's scores are lowered
    by ``diversity_penalty`` × how often earlier groups chose each token at this step (Hamming
    diversity). Scores are sums of log-probabilities after the processors (renormalised); a finished
    hypothesis is ranked by score / length^α (``length_penalty`` α; length counts the stop token)."""

    def __init__(self, settings: DecodingSettings, prompt: Sequence[int], *, eos_id: int | None, tokenizer: Any,
                 device: torch.device, emit: Callable[[Event], None]) -> None:
        self.settings, self.tokenizer = settings, tokenizer
        self.beam_size = settings.beams
        self.groups = settings.diverse_groups or 1
        self.penalty = settings.diversity_penalty if settings.diverse_groups else 0.0
        self.k = self.beam_size // self.groups
        self.stops = stop_set(eos_id, settings.stop_ids)
        self.strings = StopStrings(settings.stop)
        self.chain = settings.chain()
        self.history = History(prompt, self.beam_size, settings.max_new_tokens, device)
        self.prompt_tokens = len(prompt)
        self.beam_scores = torch.full((self.beam_size,), NEG_INF, device=device)
        self.beam_scores[::self.k] = 0.0  # one live beam per group at the start: no duplicate hypotheses
        self.tokens: list[list[int]] = [[] for _ in range(self.beam_size)]
        self.token_lps: list[list[float]] = [[] for _ in range(self.beam_size)]
        self.finished: list[list[Completion]] = [[] for _ in range(self.groups)]
        self.done = [False] * self.groups
        self.steps = 0

    @property
    def width(self) -> int:
        return self.beam_size

    def step(self, raw: torch.Tensor, best: torch.Tensor, lse: torch.Tensor) -> Step:
        s, k, vocab = self.settings, self.k, raw.shape[1]
        logprobs = raw - lse.unsqueeze(1)
        scores = apply(self.chain, logprobs, self.history.view(), self.history.prompt_length).log_softmax(dim=-1)
        chosen_now = torch.zeros(vocab, device=scores.device)
        rows, next_tokens, next_scores = [], [], []
        for g in range(self.groups):
            lo = g * k
            if self.done[g]:  # keep a finished group's rows in place; they are never read again
                rows += list(range(lo, lo + k))
                next_tokens += [0] * k
                next_scores += [NEG_INF] * k
                continue
            cand = self.beam_scores[lo:lo + k, None] + scores[lo:lo + k] - self.penalty * chosen_now
            top = cand.reshape(-1).topk(min(2 * k, cand.numel()))
            picked = 0
            for rank, (val, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
                if val == NEG_INF:
                    break
                row, tok = lo + flat // vocab, flat % vocab
                if tok in self.stops:
                    if rank < k:
                        total = float(self.beam_scores[row] + scores[row, tok])
                        self.finished[g].append(self._hypothesis(
                            self.tokens[row], self.token_lps[row], "stop",
                            _finished_score(total, len(self.tokens[row]) + 1, s.length_penalty)))
                    continue
                rows.append(row)
                next_tokens.append(tok)
                next_scores.append(float(self.beam_scores[row] + scores[row, tok]))
                chosen_now[tok] += 1
                picked += 1
                if picked == k:
                    break
            while picked < k:  # fewer live children than beams: pad with dead rows
                rows.append(lo)
                next_tokens.append(0)
                next_scores.append(NEG_INF)
                picked += 1
            self.done[g] = self._group_done(g, next_scores[-k:])
        self.steps += 1
        if all(self.done) or self.steps >= s.max_new_tokens:
            # the budget ran out: beams still alive in unfinished groups end with reason "length"
            for j, (row, tok, total) in enumerate(zip(rows, next_tokens, next_scores, strict=True)):
                if self.done[j // k] or total == NEG_INF:
                    continue
                ids = self.tokens[row] + [tok]
                self.finished[j // k].append(self._hypothesis(
                    ids, self.token_lps[row] + [float(logprobs[row, tok])], "length",
                    _finished_score(total, len(ids), s.length_penalty)))
            return [], []
        self.tokens = [self.tokens[r] + [t] for r, t in zip(rows, next_tokens, strict=True)]
        self.token_lps = [self.token_lps[r] + [float(logprobs[r, t])] for r, t in zip(rows, next_tokens, strict=True)]
        self.beam_scores = torch.tensor(next_scores, device=raw.device)
        self.history.advance(rows, next_tokens)
        return rows, next_tokens

    def _group_done(self, g: int, live_scores: list[float]) -> bool:
        """A group stops once it has k finished hypotheses and (unless ``early_stopping``) no live beam
        could still beat the worst of the best k."""
        finished, k = self.finished[g], self.k
        if len(finished) < k:
            return False
        if self.settings.early_stopping:
            return True
        best_live = max(live_scores)
        if best_live == NEG_INF:
            return True
        worst_kept = sorted(h.score for h in finished)[-k]
        return _finished_score(best_live, self.steps + 2, self.settings.length_penalty) <= worst_kept

    def _hypothesis(self, ids: list[int], lps: list[float], reason: str, score: float) -> Completion:
        return hypothesis(self.tokenizer, self.strings, self.prompt_tokens, ids, lps, reason, score)

    def finish(self, reason: str) -> list[str]:
        return []

    def results(self) -> list[Completion]:
        out = [h for group in self.finished for h in sorted(group, key=lambda h: -h.score)[:self.k]]
        return rerank(sorted(out, key=lambda h: -h.score), self.settings.select)[:self.settings.n]


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, accurate at both ends."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class StochasticBeamSearch:
    """Stochastic beam search (Kool et al., 2019): ``beam_size`` sequences sampled *without
    replacement* from the model (after the processors) via Gumbel-top-k with truncated Gumbels.
    A completion's ``score`` is its log-probability; results are ordered by their Gumbel keys."""

    def __init__(self, settings: DecodingSettings, prompt: Sequence[int], *, eos_id: int | None, tokenizer: Any,
                 device: torch.device, emit: Callable[[Event], None]) -> None:
        self.settings, self.tokenizer = settings, tokenizer
        self.beam_size = settings.beams
        self.stops = stop_set(eos_id, settings.stop_ids)
        self.strings = StopStrings(settings.stop)
        self.chain = settings.chain()
        self.gen = make_generator(settings.seed, device)
        self.history = History(prompt, self.beam_size, settings.max_new_tokens, device)
        self.prompt_tokens = len(prompt)
        self.phi = torch.full((self.beam_size,), NEG_INF, device=device)
        self.phi[0] = 0.0
        self.keys = self.phi.clone()  # perturbed log-probabilities; the root's is 0
        self.tokens: list[list[int]] = [[] for _ in range(self.beam_size)]
        self.token_lps: list[list[float]] = [[] for _ in range(self.beam_size)]
        self.finished: list[tuple[float, Completion]] = []
        self.steps = 0

    @property
    def width(self) -> int:
        return self.beam_size

    def step(self, raw: torch.Tensor, best: torch.Tensor, lse: torch.Tensor) -> Step:
        logprobs = raw - lse.unsqueeze(1)
        vocab = raw.shape[1]
        scores = apply(self.chain, logprobs, self.history.view(), self.history.prompt_length).log_softmax(dim=-1)
        child_phi = self.phi[:, None] + scores
        uniform = torch.rand(child_phi.shape, generator=self.gen, device=child_phi.device).clamp_min(1e-20)
        gumbel = child_phi - torch.log(-torch.log(uniform))
        z = gumbel.max(dim=1, keepdim=True).values
        v = self.keys[:, None] - gumbel + _log1mexp((gumbel - z).clamp(max=0.0))
        child_keys = self.keys[:, None] - v.clamp(min=0.0) - torch.log1p(torch.exp(-v.abs()))
        child_keys = torch.where(torch.isfinite(child_phi), child_keys, torch.full_like(child_keys, NEG_INF))
        # the beam holds the best keys among live children and sequences already finished
        pool = torch.cat([child_keys.reshape(-1),
                          torch.tensor([key for key, _ in self.finished], device=child_keys.device)])
        order = pool.topk(min(self.beam_size, int(torch.isfinite(pool).sum()))).indices.tolist()
        n_children = child_keys.numel()
        kept_finished = [self.finished[i - n_children] for i in order if i >= n_children]
        rows, next_tokens, new_phi, new_keys = [], [], [], []
        for i in order:
            if i >= n_children:
                continue
            row, tok = i // vocab, i % vocab
            if tok in self.stops:
                kept_finished.append((float(child_keys[row, tok]), self._hypothesis(
                    self.tokens[row], self.token_lps[row], "stop", float(child_phi[row, tok]))))
                continue
            rows.append(row)
            next_tokens.append(tok)
            new_phi.append(float(child_phi[row, tok]))
            new_keys.append(float(child_keys[row, tok]))
        self.finished = kept_finished
        self.steps += 1
        if not rows:
            return [], []
        if self.steps >= self.settings.max_new_tokens:
            for row, tok, p, key in zip(rows, next_tokens, new_phi, new_keys, strict=True):
                self.finished.append((key, self._hypothesis(self.tokens[row] + [tok],
                                                            self.token_lps[row] + [float(logprobs[row, tok])],
                                                            "length", p)))
            return [], []
        pad = self.beam_size - len(rows)
        parents, fed = rows + [rows[0]] * pad, next_tokens + [next_tokens[0]] * pad
        self.tokens = [self.tokens[r] + [t] for r, t in zip(rows, next_tokens, strict=True)] + [[]] * pad
        self.token_lps = [self.token_lps[r] + [float(logprobs[r, t])]
                          for r, t in zip(rows, next_tokens, strict=True)] + [[]] * pad
        self.phi = torch.tensor(new_phi + [NEG_INF] * pad, device=raw.device)
        self.keys = torch.tensor(new_keys + [NEG_INF] * pad, device=raw.device)
        self.history.advance(parents, fed)
        return parents, fed

    def _hypothesis(self, ids: list[int], lps: list[float], reason: str, score: float) -> Completion:
        return hypothesis(self.tokenizer, self.strings, self.prompt_tokens, ids, lps, reason, score)

    def finish(self, reason: str) -> list[str]:
        return []

    def results(self) -> list[Completion]:
        ordered = [c for _, c in sorted(self.finished, key=lambda kc: -kc[0])]
        return rerank(ordered, self.settings.select)[:self.settings.n]


SEARCHES = {"greedy": SampleSearch, "sample": SampleSearch, "best_of": SampleSearch, "beam": BeamSearch,
            "diverse_beam": BeamSearch, "stochastic_beam": StochasticBeamSearch}


def make_search(settings: DecodingSettings, prompt: Sequence[int], *, lm: Any = None, **context: Any):
    """The strategy object that runs ``settings``' search for one request: the ``method``'s (speculative,
    contrastive, ...) when the settings name one — it may read ``lm``, the model being decoded —, else
    the named strategy's."""
    if settings.method is not None:
        return settings.method.search(settings, prompt, lm=lm, **context)
    return SEARCHES[settings.strategy](settings, prompt, **context)


def base_search(settings: DecodingSettings, prompt: Sequence[int], **context: Any):
    """The plain strategy (greedy, sampling, beam, ...) of ``settings`` without its method: what a
    method that reshapes the scores (contrastive decoding, FUDGE) runs underneath."""
    return SEARCHES[settings.base_strategy](settings, prompt, **context)
