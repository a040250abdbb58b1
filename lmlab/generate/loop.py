"""The decoding loop: the one place where generation happens, for every model and every surface.

Requests wait in a queue; each ``turn()``:

1. drops cancelled and timed-out requests;
2. **prefills** waiting prompts first come, first served, up to ``prefill_tokens`` prompt
   tokens per turn (a longer prompt is fed in chunks over several turns, interleaved with the
   decode steps of running rows) — several prompts go through one forward pass
   (``LanguageModel.prefill``) — and fans each finished prompt out to the rows its search needs
   (n samples, beams) with ``select_state``, so they share one prefill; new rows join the
   running batch with ``concat_states``;
3. gives every running request's search strategy (``lmlab.generate.search``) the raw scores of
   its rows; the strategy picks tokens, streams text events and says which rows continue;
   finished, failed and re-ordered rows leave or move with one ``select_state``;
4. runs **one decode step** (``next_scores``) for all continuing rows together.

A request's ``DecodingSettings.kv_cache`` (``lmlab.kvcache.settings``) is applied around the
forward passes: the prefill sets the cache up (quantization, what to record about attention),
and after every pass each request's cache policy evicts its own rows down to its budget — a
budget per row, whatever the search — so the loop never looks inside the cache.

Several tokens per row (speculative decoding): a strategy may answer each continuing row with a
*list* of tokens to feed, and with how many of the row's last tokens to forget first
(``(parents, feeds, drops)``). The loop then rewinds the rows (``rewind``), feeds every row's
tokens right-aligned in one forward pass (shorter rows left-padded under a mask,
``next_scores_all``) and, at the next step, hands a strategy that lists ``"positions"`` in its
``reads`` the scores after each fed position ([k, T, V], right-aligned); rows accept different
numbers of tokens per step, beside ordinary rows. A strategy that lists ``"hidden"`` also gets the
last layer's state after its rows' last token (``next_scores_hidden``; contrastive search). When
every row feeds one token and nobody reads more, the step is the plain one-token step.

It talks to models only through the protocol (``lmlab.lm``): n-gram, RNN and transformer models
run the same loop; a transformer's speed comes from its own ``prefill``/``next_scores`` (one
padded forward, a preallocated KV cache in ``lmlab.kvcache``). ``Engine`` drives the loop
synchronously, ``Scheduler`` from a background thread for the HTTP server; evaluation, RAG
and the CLI go through one of the two.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError, InputError, LmlabError
from ..core.validate import check_choice, check_number
from ..data.loaders import pad_batch
from ..kvcache.settings import enforce, held_bytes, observe_decoding, prefill_setup
from ..lm import LanguageModel, State
from .output import Completion, Event
from .search import make_search
from .settings import DecodingSettings

OVERFLOW = ("error", "truncate")


class RequestTimeout(LmlabError, TimeoutError):
    """A request ran past its deadline and was stopped."""


class ContextOverflow(InputError):
    """The prompt and the new tokens asked for do not fit the model's context."""


def fit_prompt(prompt: Sequence[int], max_new_tokens: int, context_length: int | None, on_overflow: str) -> list[int]:
    """The prompt as the model will read it: unchanged when prompt + new tokens fit the context;
    else an error (``on_overflow='error'``) or its last tokens (``'truncate'``)."""
    prompt = [int(i) for i in prompt]
    if not prompt:
        raise ConfigError("the prompt has no tokens", "pass some text (or the tokenizer's BOS id)")
    if context_length is not None and len(prompt) + max_new_tokens > context_length:
        room = context_length - max_new_tokens
        if room < 1:  # truncating cannot help: the new tokens alone fill the context
            raise ContextOverflow(f"{max_new_tokens} new tokens leave no room for a prompt in the model's context of "
                                  f"{context_length} tokens", f"lower --max-new-tokens below {context_length}")
        if on_overflow == "error":
            raise ContextOverflow(f"the prompt ({len(prompt)} tokens) plus {max_new_tokens} new tokens exceeds the "
                                  f"model's context of {context_length} tokens",
                                  "shorten the prompt, lower --max-new-tokens, or truncate (--on-overflow truncate)")
        prompt = prompt[-room:]
    return prompt


@dataclass
class Request:
    """A prompt (token ids) and how to continue it.

    ``settings`` says everything about decoding (``DecodingSettings``). Without it, the request
    takes its driver's settings (an ``Engine``'s or ``Scheduler``'s) with the limits given here
    on top: ``max_new_tokens``, ``stop`` strings, ``stop_ids`` (the model's EOS unless given) and
    ``seed``.
    """

    prompt: Sequence[int]
    max_new_tokens: int | None = None
    stop: Sequence[str] = ()
    stop_ids: Sequence[int] | None = None
    seed: int | None = None
    settings: DecodingSettings | None = None

    def __post_init__(self) -> None:
        if self.settings is not None and self._limits():
            raise ConfigError("a request takes its limits either from settings or from max_new_tokens/stop/"
                              "stop_ids/seed, not both", "put them all in the DecodingSettings")

    def _limits(self) -> dict[str, Any]:
        given = {"max_new_tokens": self.max_new_tokens, "stop": tuple(self.stop) or None,
                 "stop_ids": None if self.stop_ids is None else tuple(self.stop_ids), "seed": self.seed}
        return {k: v for k, v in given.items() if v is not None}

    def resolve(self, default: DecodingSettings) -> DecodingSettings:
        """The settings this request runs with."""
        if self.settings is not None:
            return self.settings
        limits = self._limits()
        return default.with_(**limits) if limits else default


@dataclass(eq=False)
class Group:
    """One request inside the loop: its prompt, search, rows and where it is (waiting, prefilling, running)."""

    request: Request
    settings: DecodingSettings
    prompt: list[int]
    emit: Callable[[Event], None]
    deadline: float | None = None
    cancelled: bool = False
    search: Any = None
    fed: int = 0  # prompt tokens consumed so far
    state: State = None  # its own state while its prompt is fed in chunks
    rows: int = 0  # live batch rows while running
    submitted: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None

    def cancel(self) -> None:
        self.cancelled = True

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def apart(a: Group, b: Group) -> bool:
    """Whether two requests cannot share a batch: a method that feeds or takes back several tokens per
    row (speculative decoding, contrastive search) never runs beside a KV-cache policy, whose eviction
    follows one token per row."""
    return ((a.settings.method is not None and b.settings.kv_cache is not None)
            or (a.settings.kv_cache is not None and b.settings.method is not None))


class DecodeLoop:
    """The step loop over one model (see the module docstring). Not thread-safe: one driver at a time.

    ``prefill_tokens`` bounds the prompt tokens fed per turn (None: every waiting prompt at once);
    ``max_rows`` the rows running together (None: no bound); ``step`` replaces ``lm.next_scores``
    for decode steps (a compiled step, for instance).
    """

    def __init__(self, lm: LanguageModel, tokenizer: Any = None, *, on_overflow: str = "error",
                 prefill_tokens: int | None = None, max_rows: int | None = None,
                 step: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]] | None = None) -> None:
        check_choice("on_overflow", on_overflow, OVERFLOW)
        if prefill_tokens is not None:
            check_number("prefill_tokens", prefill_tokens, low=1, integer=True)
        if max_rows is not None:
            check_number("max_rows", max_rows, low=1, integer=True)
        self.lm, self.tokenizer, self.on_overflow = lm, tokenizer, on_overflow
        self.prefill_tokens, self.max_rows = prefill_tokens, max_rows
        self.step = step or lm.next_scores
        self.waiting: deque[Group] = deque()
        self.prefilling: list[Group] = []
        self.running: list[Group] = []
        self.state: State = None  # every running row, in the order of ``running``
        self.scores: torch.Tensor | None = None  # [rows, V] raw next-token scores of the running rows
        self.positions: torch.Tensor | None = None  # [rows, T, V] after each fed position (several fed)
        self.hidden: torch.Tensor | None = None  # [rows, d] last-layer states (a strategy reads "hidden")
        self.counters = {"submitted": 0, "completed": 0, "cancelled": 0, "failed": 0, "steps": 0, "tokens": 0,
                         "peak_batch": 0, "prefill_tokens": 0, "kv_cache_bytes": 0}
        self.prefill_seconds = 0.0

    # --- requests -----------------------------------------------------------------------------
    def check(self, request: Request, default: DecodingSettings) -> tuple[DecodingSettings, list[int]]:
        """A request's settings and fitted prompt, or the LmlabError that says what is wrong with it."""
        settings = request.resolve(default)
        settings.check_for(self.lm.vocab_size)
        if settings.method is not None:
            settings.method.check_model(self.lm)
        context = getattr(self.lm, "context_length", None)
        kv = settings.kv_cache
        if kv is not None and settings.method is not None:
            raise ConfigError(f"the {settings.method.name} method and a KV-cache policy cannot run together (the "
                              "method feeds or takes back several tokens per row, which eviction does not follow)",
                              "drop the cache policy (--kv-policy/--kv-quant) or the method")
        if kv is not None:
            kv.check_model(self.lm)
            if kv.needs_attention and self.step != self.lm.next_scores:
                raise ConfigError(f"the {kv.policy.name} cache policy reads attention weights, which the compiled "
                                  "decode step does not record", "leave --compile out or use window, streaming or knorm")
            if kv.policy.repositions:  # positions stay within the cache: decoding goes past the context
                context = None
        prompt = fit_prompt(request.prompt, settings.max_new_tokens, context, self.on_overflow)
        if kv is not None:
            kv.budget(len(prompt))
        bad = [i for i in prompt if not 0 <= i < self.lm.vocab_size]
        if bad:
            raise InputError(f"prompt token id {bad[0]} is outside the model's vocabulary [0, {self.lm.vocab_size})",
                             "encode the prompt with the model's own tokenizer")
        if self.max_rows is not None and settings.rows > self.max_rows:
            raise ConfigError(f"the request needs {settings.rows} rows (n, best_of or beams) and at most "
                              f"{self.max_rows} run at once", f"ask for at most {self.max_rows}")
        return settings, prompt

    def add(self, request: Request, emit: Callable[[Event], None], *, default: DecodingSettings | None = None,
            deadline: float | None = None) -> Group:
        """Queue ``request`` (checked now: a bad one raises here, not later in the batch)."""
        settings, prompt = self.check(request, default or DecodingSettings())
        group = Group(request, settings, prompt, emit, deadline)
        self.waiting.append(group)
        self.counters["submitted"] += 1
        return group

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.running)

    @property
    def running_rows(self) -> int:
        return sum(g.rows for g in self.running)

    # --- one turn -----------------------------------------------------------------------------
    def turn(self) -> None:
        """Prefill what fits, choose every running row's token, run one decode step."""
        self._drop_stopped()
        with torch.inference_mode():
            joined = self._prefill()
            if joined is not None:
                self._join(*joined)
            if self.running:
                self._choose_and_decode()

    def fail_all(self, error: LmlabError) -> None:
        """End every request with ``error`` (the loop is being closed, or it broke)."""
        for group in [*self.running, *self.prefilling, *self.waiting]:
            self._end(group, "error", error)
        self.running, self.prefilling, self.waiting = [], [], deque()
        self.state, self.scores, self.positions, self.hidden = None, None, None, None

    def _drop_stopped(self) -> None:
        for queue_ in (self.waiting, self.prefilling):
            for group in [g for g in queue_ if g.cancelled or g.expired()]:
                queue_.remove(group)
                self._end_stopped(group)

    def _end_stopped(self, group: Group) -> None:
        if group.cancelled:
            self._end(group, "cancelled")
        else:
            self._end(group, "error", RequestTimeout("the request ran past its time limit",
                                                     "ask for fewer tokens or raise the server's timeout"))

    def _end(self, group: Group, reason: str, error: LmlabError | None = None) -> None:
        key = {"cancelled": "cancelled", "error": "failed"}.get(reason, "completed")
        self.counters[key] += 1
        completions: list[Completion] = []
        if group.search is not None:
            if reason in ("cancelled", "error"):
                group.search.finish(reason)
            completions = group.search.results()
        elif reason == "cancelled":
            completions = [Completion(finish_reason="cancelled", prompt_tokens=len(group.prompt))]
        group.emit(Event(done=True, completions=completions, error=error))

    # --- prefill ------------------------------------------------------------------------------
    def _prefill(self) -> tuple[list[Group], torch.Tensor, State] | None:
        """Feed prompt tokens up to the turn's budget; the requests whose prompts are now complete, with
        their rows' next-token scores and state (each prompt's row fanned out to its search's rows)."""
        budget = self.prefill_tokens if self.prefill_tokens is not None else float("inf")
        lm = self.lm
        start = time.perf_counter()
        fed = 0
        groups: list[Group] = []
        scores: list[torch.Tensor] = []
        states: list[State] = []

        def fan_out(group: Group, row_scores: torch.Tensor, state: State) -> None:
            k = group.settings.rows
            groups.append(group)
            scores.append(row_scores.float().expand(k, -1))
            states.append(state if k == 1 else lm.select_state(state, torch.zeros(k, dtype=torch.long,
                                                                                   device=lm.device)))

        for group in list(self.prefilling):  # prompts already started, oldest first
            if fed >= budget:
                break
            take = int(min(len(group.prompt) - group.fed, budget - fed))
            chunk = torch.tensor([group.prompt[group.fed:group.fed + take]], dtype=torch.long, device=lm.device)
            row_scores, group.state = lm.next_scores(chunk, group.state)
            group.fed += take
            fed += take
            self._enforce(group.state, [(group, [0])])
            if group.fed == len(group.prompt):
                self.prefilling.remove(group)
                fan_out(group, row_scores, group.state)
                group.state = None
        new: list[Group] = []
        rows = self.running_rows + sum(g.settings.rows for g in [*groups, *self.prefilling])
        while self.waiting and fed < budget:
            group = self.waiting[0]
            if self.max_rows is not None and rows + group.settings.rows > self.max_rows and (rows or new):
                break  # wait for running rows to finish
            if any(apart(group, other) for other in (*self.running, *self.prefilling, *groups, *new)):
                break  # wait until the batch holds no request it cannot run beside
            self.waiting.popleft()
            group.fed = int(min(len(group.prompt), budget - fed))
            fed += group.fed
            rows += group.settings.rows
            new.append(group)
        if new:
            kv = [g.settings.kv_cache for g in new]
            reserve = max(g.settings.max_new_tokens if c is None else c.reserve(g.settings.max_new_tokens)
                          for g, c in zip(new, kv, strict=True))
            setup = prefill_setup(kv)
            extra = {} if setup is None else {"setup": setup}
            batch_scores, state = lm.prefill([g.prompt[:g.fed] for g in new], reserve=reserve, **extra)
            self._enforce(state, [(g, [i]) for i, g in enumerate(new)])
            complete = [i for i, g in enumerate(new) if g.fed == len(g.prompt)]
            for i, group in enumerate(new):
                if i not in complete:  # the rest of its prompt comes in later turns
                    group.state = lm.select_state(state, torch.tensor([i], dtype=torch.long, device=lm.device))
                    self.prefilling.append(group)
            if complete:
                ks = [new[i].settings.rows for i in complete]
                index = torch.tensor([i for i, k in zip(complete, ks, strict=True) for _ in range(k)],
                                     dtype=torch.long, device=lm.device)
                groups += [new[i] for i in complete]
                scores.append(batch_scores.float().index_select(0, index.to(batch_scores.device)))
                identity = index.tolist() == list(range(len(new)))
                states.append(state if identity else lm.select_state(state, index))
        self.counters["prefill_tokens"] += fed
        self.prefill_seconds += time.perf_counter() - start
        if not groups:
            return None
        return groups, torch.cat(scores), states[0] if len(states) == 1 else lm.concat_states(states)

    def _join(self, groups: list[Group], scores: torch.Tensor, state: State) -> None:
        """New rows enter the running batch (their searches start now)."""
        lm = self.lm
        for group in groups:
            group.search = make_search(group.settings, group.prompt, eos_id=lm.eos_id, tokenizer=self.tokenizer,
                                       device=scores.device, emit=group.emit, lm=lm)
            group.rows = group.settings.rows
        if any(g.settings.max_new_tokens == 0 for g in groups):  # prompt only (scoring): done already
            keep, offset = [], 0
            for group in groups:
                if group.settings.max_new_tokens:
                    keep += range(offset, offset + group.rows)
                else:
                    self._end(group, "completed")
                offset += group.rows
            groups = [g for g in groups if g.settings.max_new_tokens]
            if not groups:
                return
            index = torch.tensor(keep, dtype=torch.long, device=lm.device)
            state, scores = lm.select_state(state, index), scores[index.to(scores.device)]
        self.state = state if self.state is None else lm.concat_states([self.state, state])
        self.scores = scores if self.scores is None else torch.cat([self.scores, scores])
        if self.positions is not None:  # new rows fed one token (their prompt's last): right-aligned
            self.positions = torch.cat([self.positions, scores.unsqueeze(1).expand(-1, self.positions.shape[1], -1)])
        if self.hidden is not None:  # prefill keeps no hidden states; nobody reads them at the first step
            self.hidden = torch.cat([self.hidden, self.hidden.new_zeros(scores.shape[0], self.hidden.shape[1])])
        self.running.extend(groups)
        self.counters["peak_batch"] = max(self.counters["peak_batch"], self.running_rows)

    # --- choose and decode --------------------------------------------------------------------
    def _choose_and_decode(self) -> None:
        scores = self.scores
        best, lse = scores.argmax(dim=-1), scores.logsumexp(dim=-1)
        index: list[int] = []
        tokens: list[int] = []  # one token per continuing row (the usual step) ...
        feeds: list[list[int]] | None = None  # ... or, once a strategy feeds lists, every row's tokens
        drops: list[int] | None = None  # tokens each continuing row forgets first (None: none)
        hidden = False
        still: list[Group] = []
        offset = 0
        now = time.perf_counter()
        for group in self.running:
            k = group.rows
            rows = slice(offset, offset + k)
            offset += k
            if group.cancelled or group.expired():
                self._end_stopped(group)
                continue
            reads = getattr(group.search, "reads", ())
            try:
                step = group.search.step(scores[rows], best[rows], lse[rows], **(self._extra(reads, rows) if reads else {}))
            except LmlabError as exc:
                self._end(group, "error", exc)
                continue
            except Exception as exc:  # this request's bug (a decoder, a listener) must not end the others
                self._end(group, "error", LmlabError(f"generation failed: {exc!r}"))
                continue
            parents, chosen = step[0], step[1]
            if group.first_token_s is None:
                group.first_token_s = now
            self.counters["tokens"] += k
            if not parents:
                self._end(group, "completed")
                continue
            if "positions" in reads:  # this strategy feeds lists of tokens and may forget some
                if feeds is None:
                    feeds = [[t] for t in tokens]
                feeds += chosen
                if len(step) > 2:
                    drops = (drops or [0] * len(index)) + list(step[2])
            elif feeds is not None:
                feeds += [[t] for t in chosen]
            else:
                tokens += chosen
            if drops is not None and len(drops) < len(index) + len(parents):
                drops += [0] * (len(index) + len(parents) - len(drops))
            hidden = hidden or "hidden" in reads
            index += [rows.start + p for p in parents]
            group.rows = len(parents)
            still.append(group)
        self.counters["steps"] += 1
        self.running = still
        if not still:
            self.state, self.scores, self.positions, self.hidden = None, None, None, None
            return
        lm = self.lm
        if index != list(range(scores.shape[0])):
            self.state = lm.select_state(self.state, torch.tensor(index, dtype=torch.long, device=lm.device))
        if feeds is not None and all(len(f) == 1 for f in feeds) and not (drops and any(drops)):
            tokens, feeds = [f[0] for f in feeds], None
        if feeds is None and not hidden:  # the usual step: one token per row
            fed = torch.tensor(tokens, dtype=torch.long, device=lm.device).unsqueeze(1)
            kv = [g.settings.kv_cache for g in still]
            if any(c is not None for c in kv):
                observe_decoding(self.state, kv)
            scores, self.state = self.step(fed, self.state)
            self.scores, self.positions, self.hidden = scores.float(), None, None
        else:  # no request here has a cache policy (admission keeps them apart)
            self._feed_many(feeds if feeds is not None else [[t] for t in tokens], drops, hidden)
        offset, rows = 0, []
        for group in still:
            rows.append((group, list(range(offset, offset + group.rows))))
            offset += group.rows
        self._enforce(self.state, rows)

    def _enforce(self, state: State, groups: list[tuple[Group, list[int]]]) -> None:
        """After a forward pass: every request with a cache policy evicts its rows (``rows`` in ``state``)
        down to its budget ('prompt' once its whole prompt is in, else 'step'); the peak bytes held."""
        requests = [(rows, g.settings.kv_cache, len(g.prompt), "step" if g.fed < len(g.prompt) or g.search else
                     "prompt") for g, rows in groups if g.settings.kv_cache is not None]
        if requests:
            enforce(state, requests)
        states = {id(s): s for s in (self.state, state, *(g.state for g in self.prefilling))}
        held = sum(held_bytes(s) for s in states.values())
        self.counters["kv_cache_bytes"] = max(self.counters["kv_cache_bytes"], held)

    def _extra(self, reads: Sequence[str], rows: slice) -> dict[str, torch.Tensor | None]:
        """What a strategy reads beyond its rows' scores: "positions" (scores after each fed position,
        right-aligned) and "hidden" (last-layer states after the last one; None right after prefill)."""
        extra: dict[str, torch.Tensor | None] = {}
        if "positions" in reads:
            extra["positions"] = (self.positions[rows] if self.positions is not None
                                  else self.scores[rows].unsqueeze(1))
        if "hidden" in reads:
            extra["hidden"] = self.hidden[rows] if self.hidden is not None else None
        return extra

    def _feed_many(self, feeds: list[list[int]], drops: list[int] | None, hidden: bool) -> None:
        """Forget what rows take back, then feed every row's tokens right-aligned in one forward pass."""
        lm = self.lm
        if drops is not None and any(drops) or any(len(f) > 1 for f in feeds):
            self.state = lm.rewind(self.state, drops or [0] * len(feeds))  # also lets a cache compact its holes
        ids, mask = pad_batch(feeds, 0, left=True)
        ids, mask = ids.to(lm.device), None if bool(mask.all()) else mask.to(lm.device)
        if hidden:
            if not hasattr(lm, "next_scores_hidden"):
                raise ConfigError(f"a {type(lm).__name__} gives no hidden states", "use a transformer model")
            positions, states, self.state = lm.next_scores_hidden(ids, self.state, mask)
            self.hidden = states[:, -1].float()
        else:
            positions, self.state = lm.next_scores_all(ids, self.state, mask)
            self.hidden = None
        self.positions = positions.float()
        self.scores = self.positions[:, -1]
