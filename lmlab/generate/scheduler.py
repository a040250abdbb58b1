"""Continuous batching: requests join and leave one running decode batch step by step (vLLM's idea).

A ``Scheduler`` owns a model and a background thread. ``submit`` queues a request (bounded:
``QueueFull`` when the queue is full) and returns a ``Handle`` that yields events (text
pieces, token ids, log-probs) as they are decoded. Each loop turn the thread prefills the
waiting requests one by one, packs them into the running batch, picks every row's next token
with that row's own processors, seed and stop rules, drops finished, cancelled and timed-out
rows at once (their cache rows freed) and runs one decode step for the rest.

On a ``TransformerLM`` the batch shares one KV cache: rows are right-aligned at the current
slot, with a padding mask and per-row positions, so each row computes what it would alone.
Any other protocol model keeps a state per row and steps rows one by one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, LmlabError
from ..core.seed import make_generator
from ..core.validate import check_number
from ..lm import LanguageModel
from .engine import Completion, Engine, Request, _Row
from .processors import Processor, apply
from .sampling import stop_set

HEADROOM = 64  # cache slots allocated beyond the current width, so most steps need no repacking


class QueueFull(LmlabError, RuntimeError):
    """The scheduler's waiting queue is full: the caller should retry later (HTTP 429)."""


class RequestTimeout(LmlabError, TimeoutError):
    """A request ran past its deadline and was stopped."""


@dataclass
class Sampling:
    """How one request picks tokens: its processor chain, greedy or sampled, top log-probs to report."""

    processors: Sequence[Processor] = ()
    greedy: bool = False
    top_logprobs: int = 0


@dataclass
class Event:
    """One step of a request: a text piece and the token behind it, or the end (``done``)."""

    text: str = ""
    token: int | None = None  # None for the stop token, which is not part of the output
    logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    done: bool = False
    completion: Completion | None = None
    error: LmlabError | None = None


class Handle:
    """A submitted request: iterate it for events, ``result()`` for the Completion, ``cancel()`` to stop."""

    def __init__(self, request: Request, sampling: Sampling, deadline: float | None,
                 notify: Callable[[Event], None] | None) -> None:
        self.request, self.sampling, self.deadline = request, sampling, deadline
        self.notify = notify
        self.cancelled = False
        self.completion: Completion | None = None
        self.error: LmlabError | None = None
        self.finished = threading.Event()
        self._events: queue.Queue[Event] = queue.Queue()

    def cancel(self) -> None:
        """Stop this request; its batch row is freed at the next step."""
        self.cancelled = True

    def _emit(self, event: Event) -> None:
        if event.done:
            self.completion, self.error = event.completion, event.error
        if self.notify is not None:
            try:
                self.notify(event)
            except Exception:  # the listener is gone (its event loop closed): nobody wants the rest
                self.cancelled = True
        else:
            self._events.put(event)
        if event.done:
            self.finished.set()

    def __iter__(self) -> Iterator[Event]:
        """Events until the last (``done``) one; only for handles submitted without ``notify``."""
        while True:
            event = self._events.get()
            yield event
            if event.done:
                return

    def result(self, timeout: float | None = None) -> Completion:
        """Wait for the whole continuation; raises the request's error if it failed."""
        if not self.finished.wait(timeout):
            raise RequestTimeout("the request is not finished yet", "wait longer or cancel it")
        if self.error is not None:
            raise self.error
        return self.completion


class _Slot:
    """A running request: its handle, stop/stream state, generator and token history."""

    def __init__(self, handle: Handle, row: _Row, prompt: list[int], device: torch.device) -> None:
        self.handle, self.row = handle, row
        self.gen = make_generator(handle.request.seed, device)
        self.prompt_length = len(prompt)
        self.history = prompt + [] if handle.sampling.processors else None
        self.state: Any = None  # per-row model state (protocol models only)


class Scheduler:
    """Continuous-batching generation on one model from many threads (see the module docstring).

    ``max_batch`` bounds the running batch, ``max_queue`` the requests waiting beyond its free rows;
    ``timeout_s`` is the default per-request deadline (None: none).
    """

    def __init__(self, lm: LanguageModel, tokenizer: Any = None, *, max_batch: int = 16, max_queue: int = 64,
                 timeout_s: float | None = None, on_overflow: str = "error") -> None:
        self.max_batch = int(check_number("max_batch", max_batch, low=1, integer=True))
        self.max_queue = int(check_number("max_queue", max_queue, low=0, integer=True))
        self.timeout_s = timeout_s
        self.lm, self.tokenizer = lm, tokenizer
        # prompt checks and context rules; weights stay row-major, the faster layout for many rows at once
        self._engine = Engine(lm, tokenizer, on_overflow=on_overflow, decode_layout=False)
        self.fast = self._engine.fast
        self.device = lm.device
        self._waiting: deque[Handle] = deque()
        self._slots: list[_Slot] = []
        self._cache: dict[str, Any] | None = None  # keys, values, mask, next_position, length (transformers)
        self._logprobs: torch.Tensor | None = None  # [B, V] next-token log-probs of every running row
        self._cond = threading.Condition()
        self._closed = False
        self.counters = {"submitted": 0, "completed": 0, "cancelled": 0, "failed": 0, "steps": 0, "tokens": 0,
                         "peak_batch": 0}
        self._thread = threading.Thread(target=self._loop, name="lmlab-scheduler", daemon=True)
        self._thread.start()

    # --- public -------------------------------------------------------------------------------
    def submit(self, request: Request, sampling: Sampling | None = None, *,
               notify: Callable[[Event], None] | None = None, timeout_s: float | None = None) -> Handle:
        """Queue ``request``; its events go to ``notify`` (called from the scheduler thread) or the handle."""
        sampling = sampling or Sampling()
        check_number("top_logprobs", sampling.top_logprobs, low=0, integer=True)
        self._engine._prompt(request)  # a bad request is the caller's error now, not the batch's later
        if isinstance(request.stop, str) or any(not isinstance(s, str) or not s for s in request.stop):
            raise ConfigError("stop must be a list of non-empty strings", "pass stop=['...']")
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        handle = Handle(request, sampling, deadline, notify)
        with self._cond:
            if self._closed:
                raise ConfigError("the scheduler is closed", "create a new one")
            if len(self._waiting) >= self.max_queue + max(self.max_batch - len(self._slots), 0):
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting)", "retry in a moment")
            self._waiting.append(handle)
            self.counters["submitted"] += 1
            self._cond.notify()
        return handle

    def generate(self, request: Request, sampling: Sampling | None = None) -> Completion:
        """Submit and wait: the continuation of one request."""
        return self.submit(request, sampling).result()

    def load(self) -> dict[str, int]:
        """Running rows, waiting requests and the lifetime counters."""
        with self._cond:
            return {"running": len(self._slots), "waiting": len(self._waiting), **self.counters}

    def wake(self) -> None:
        """Make the loop look at its requests now (after a ``cancel``, for instance)."""
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread; unfinished requests end with an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._slots:
                        self._cond.wait()
                    if self._closed:
                        break
                    room = self.max_batch - len(self._slots)
                    joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                try:
                    self._admit(joining)
                    if self._slots:
                        self._step()
                except Exception as exc:  # a bug must not kill the server: fail the batch, start afresh
                    error = exc if isinstance(exc, LmlabError) else LmlabError(f"generation failed: {exc!r}")
                    for slot in self._slots:
                        self._finish(slot, "error", error)
                    self._slots, self._cache, self._logprobs = [], None, None
        closed = LmlabError("the scheduler was closed", "send the request again to a running server")
        for slot in self._slots:
            self._finish(slot, "error", closed)
        for handle in self._waiting:
            handle._emit(Event(done=True, error=closed))
        self._slots, self._cache, self._logprobs = [], None, None

    def _admit(self, handles: list[Handle]) -> None:
        """Prefill each new request alone, then pack them all into the running batch."""
        joined: list[tuple[_Slot, torch.Tensor, Any]] = []
        for handle in handles:
            if handle.cancelled or self._expired(handle):
                self._fail_waiting(handle)
                continue
            try:
                prompt = self._engine._prompt(handle.request)
                row = _Row(handle.request, prompt, stop_set(self.lm, handle.request.stop_ids),
                           self.tokenizer.stream_decoder(skip_special_tokens=True)
                           if self.tokenizer is not None else None)
                slot = _Slot(handle, row, prompt, self.device)
                logprobs, state = self._prefill(prompt)
            except LmlabError as exc:
                self.counters["failed"] += 1
                handle._emit(Event(done=True, error=exc))
                continue
            joined.append((slot, logprobs, state))
        if not joined:
            return
        if self.fast:
            self._pack(list(range(len(self._slots))), [state for _, _, state in joined])
        else:
            for slot, _, state in joined:
                slot.state = state
        new = torch.cat([lp for _, lp, _ in joined])
        self._logprobs = new if self._logprobs is None else torch.cat([self._logprobs, new])
        self._slots.extend(slot for slot, _, _ in joined)
        self.counters["peak_batch"] = max(self.counters["peak_batch"], len(self._slots))

    def _prefill(self, prompt: list[int]) -> tuple[torch.Tensor, Any]:
        ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        if self.fast:
            logits, state = self.lm(ids, self.lm.initial_state(1, capacity=len(prompt)), last_only=True)
            return F.log_softmax(logits[:, -1].float(), dim=-1), state
        logprobs, state = self.lm.next_logprobs(ids, self.lm.initial_state(1))
        return logprobs.float(), state

    def _step(self) -> None:
        """Choose every row's next token, let finished rows leave, advance the rest by one token."""
        tokens = self._choose()
        keep, fed = [], []
        for i, (slot, token) in enumerate(zip(self._slots, tokens, strict=True)):
            handle = slot.handle
            if handle.cancelled:
                self._finish(slot, "cancelled")
                continue
            if self._expired(handle):
                self._finish(slot, "error", RequestTimeout(
                    "the request ran past its time limit", "ask for fewer tokens or raise the server's timeout"))
                continue
            if isinstance(token, LmlabError):
                self._finish(slot, "error", token)
                continue
            try:
                self._emit_token(i, slot, token)
            except Exception as exc:  # this row's bug (a decoder, a listener) must not end the others
                self._finish(slot, "error", LmlabError(f"generation failed: {exc!r}"))
                continue
            if slot.row.done:
                self._finish(slot, slot.row.out.finish_reason)
                continue
            if slot.history is not None:
                slot.history.append(token)
            keep.append(i)
            fed.append(token)
        self.counters["steps"] += 1
        if len(keep) < len(self._slots):
            self._slots = [self._slots[i] for i in keep]
            if self.fast:
                self._pack(keep, [])
            self._logprobs = self._logprobs[keep] if keep else None
        if not self._slots:
            self._cache, self._logprobs = None, None
            return
        ids = torch.tensor(fed, dtype=torch.long, device=self.device).unsqueeze(1)
        if self.fast:
            self._logprobs = self._decode(ids)
        else:
            rows = []
            for slot, token in zip(self._slots, ids, strict=True):
                logprobs, slot.state = self.lm.next_logprobs(token.unsqueeze(0), slot.state)
                rows.append(logprobs.float())
            self._logprobs = torch.cat(rows)

    def _emit_token(self, i: int, slot: _Slot, token: int) -> None:
        """Give row ``i`` its token and send the event (text piece, log-prob, top alternatives)."""
        before = len(slot.row.out.ids)
        logprob = float(self._logprobs[i, token])
        piece = slot.row.add(token, logprob)
        taken = len(slot.row.out.ids) > before
        top = []
        if slot.handle.sampling.top_logprobs and taken:
            values, ids = self._logprobs[i].topk(min(slot.handle.sampling.top_logprobs, self._logprobs.shape[1]))
            top = list(zip(ids.tolist(), values.tolist(), strict=True))
        self.counters["tokens"] += 1
        slot.handle._emit(Event(text=piece, token=token if taken else None, logprob=logprob if taken else None,
                                top=top))

    def _choose(self) -> list[int | LmlabError]:
        """Each row's next token under its own processors (greedy rows without processors in one argmax)."""
        best = self._logprobs.argmax(dim=-1).tolist()
        out: list[int | LmlabError] = []
        for i, slot in enumerate(self._slots):
            sampling = slot.handle.sampling
            if not sampling.processors and sampling.greedy:
                out.append(best[i])
                continue
            scores = self._logprobs[i:i + 1]
            if sampling.processors:
                history = torch.tensor([slot.history], dtype=torch.long, device=self.device)
                scores = apply(sampling.processors, scores, history, slot.prompt_length)
            if sampling.greedy:
                out.append(int(scores.argmax()))
                continue
            probs = scores.softmax(dim=-1)
            if torch.isnan(probs).any() or not torch.isfinite(scores).any():
                out.append(ConfigError("the logits processors removed every token", "loosen the filters"))
                continue
            out.append(int(torch.multinomial(probs[0], 1, generator=slot.gen)))
        return out

    def _finish(self, slot: _Slot, reason: str, error: LmlabError | None = None) -> None:
        row = slot.row
        if not row.done:
            row.finish(flush=True)
        row.out.finish_reason = reason
        key = {"cancelled": "cancelled", "error": "failed"}.get(reason, "completed")
        self.counters[key] += 1
        slot.handle._emit(Event(done=True, completion=row.out, error=error))

    def _fail_waiting(self, handle: Handle) -> None:
        if handle.cancelled:
            self.counters["cancelled"] += 1
            handle._emit(Event(done=True, completion=Completion(finish_reason="cancelled")))
        else:
            self.counters["failed"] += 1
            handle._emit(Event(done=True, error=RequestTimeout(
                "the request waited past its time limit", "retry when the server is less busy")))

    @staticmethod
    def _expired(handle: Handle) -> bool:
        return handle.deadline is not None and time.monotonic() > handle.deadline

    # --- the shared KV cache (transformers) ----------------------------------------------------
    def _pack(self, keep: list[int], joining: list[Any]) -> None:
        """Rebuild the cache from running rows ``keep`` plus new single-row caches, right-aligned.

        Leading slots no row uses are dropped, so the width never exceeds the longest row.
        """
        old = self._cache
        spans = []
        if old is not None and keep:
            starts = old["mask"][keep, :old["length"]].float().argmax(dim=1)  # first real slot of each row
            spans = (old["length"] - starts).tolist()
        spans += [state.length for state in joining]
        if not spans:
            self._cache = None
            return
        width = max(spans)
        limit = getattr(self.lm, "context_length", None) or width + HEADROOM
        capacity = max(min(width + HEADROOM, limit), width + 1)
        b = len(spans)
        like = joining[0].keys[0] if joining else old["keys"][0]
        shape = (b, like.shape[1], capacity, like.shape[3])
        keys = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in self.lm.blocks]
        values = [torch.zeros(shape, dtype=like.dtype, device=like.device) for _ in self.lm.blocks]
        mask = torch.zeros(b, capacity, dtype=torch.bool, device=like.device)
        positions = torch.zeros(b, dtype=torch.long, device=like.device)
        n_old = b - len(joining)
        if n_old:
            m, length = max(spans[:n_old]), old["length"]
            index = torch.tensor(keep, device=like.device)
            for layer in range(len(keys)):
                keys[layer][:n_old, :, width - m:width] = old["keys"][layer][index, :, length - m:length]
                values[layer][:n_old, :, width - m:width] = old["values"][layer][index, :, length - m:length]
            mask[:n_old, width - m:width] = old["mask"][index, length - m:length]
            positions[:n_old] = old["next_position"][index]
        for j, state in enumerate(joining, start=n_old):
            n = state.length
            for layer in range(len(keys)):
                keys[layer][j, :, width - n:width] = state.keys[layer][0, :, :n]
                values[layer][j, :, width - n:width] = state.values[layer][0, :, :n]
            mask[j, width - n:width] = True
            positions[j] = n
        self._cache = {"keys": keys, "values": values, "mask": mask, "next_position": positions, "length": width}

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        """One decode step of the whole batch on the shared cache; the next-token log-probs [B, V]."""
        from ..models.transformer import KVCache

        cache = self._cache
        if cache["length"] + 1 > cache["mask"].shape[1]:
            self._pack(list(range(len(self._slots))), [])
            cache = self._cache
        state = KVCache(cache["keys"], cache["values"], cache["mask"], cache["next_position"], cache["length"],
                        ids.shape[0], cache["mask"].shape[1])
        logits, state = self.lm(ids, state, last_only=True)
        cache["next_position"], cache["length"] = state.next_position, state.length
        return F.log_softmax(logits[:, -1].float(), dim=-1)
