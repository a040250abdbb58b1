"""Continuous batching for many threads: the decoding loop driven from a background thread (vLLM's idea).

A ``Scheduler`` owns a model and a thread running ``lmlab.generate.loop.DecodeLoop``. ``submit``
checks a request and queues it (bounded: ``QueueFull`` when the queue is full) and returns a
``Handle`` that yields events (text pieces, token ids, log-probs) as they are decoded. Requests
join and leave the running batch step by step; prompts are prefilled first come, first served,
several per forward pass, ``prefill_tokens`` prompt tokens per turn (longer prompts in chunks
between decode steps), so a burst of clients gets first tokens in arrival order without
stalling the running rows. Beam search, n samples and best-of-n run in the same loop, under
the same queue limit, timeouts and cancellation.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..core.errors import ConfigError, LmlabError
from ..core.validate import check_number
from ..lm import LanguageModel
from .loop import DecodeLoop, Group, Request, RequestTimeout
from .output import Completion, Event
from .settings import DecodingSettings

__all__ = ["Handle", "QueueFull", "RequestTimeout", "Scheduler"]


class QueueFull(LmlabError, RuntimeError):
    """The scheduler's waiting queue is full: the caller should retry later (HTTP 429)."""


class Handle:
    """A submitted request: iterate it for events, ``result()`` for its completion, ``cancel()`` to stop."""

    def __init__(self, group: Group, notify: Callable[[Event], None] | None, wake: Callable[[], None]) -> None:
        self.group = group
        self.notify, self._wake = notify, wake
        self.completions: list[Completion] = []
        self.error: LmlabError | None = None
        self.finished = threading.Event()
        self._events: queue.Queue[Event] = queue.Queue()

    @property
    def cancelled(self) -> bool:
        return self.group.cancelled

    def cancel(self) -> None:
        """Stop this request; its batch rows are freed at the next step."""
        self.group.cancel()
        self._wake()

    def emit(self, event: Event) -> None:
        """Called by the loop (scheduler thread) for each event of this request."""
        if event.done:
            self.completions, self.error = event.completions, event.error
        if self.notify is not None:
            try:
                self.notify(event)
            except Exception:  # the listener is gone (its event loop closed): nobody wants the rest
                self.group.cancel()
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

    def results(self, timeout: float | None = None) -> list[Completion]:
        """Wait for every continuation of the request; raises the request's error if it failed."""
        if not self.finished.wait(timeout):
            raise RequestTimeout("the request is not finished yet", "wait longer or cancel it")
        if self.error is not None:
            raise self.error
        return self.completions

    def result(self, timeout: float | None = None) -> Completion:
        """The (first) continuation, waiting for it."""
        return self.results(timeout)[0]


class Scheduler:
    """Continuous-batching generation on one model from many threads (see the module docstring).

    ``max_batch`` bounds the rows running at once, ``max_queue`` the requests waiting beyond the free
    rows; ``timeout_s`` is the default per-request deadline (None: none); ``prefill_tokens`` the
    prompt tokens fed per turn; ``settings`` the decoding settings of requests that bring none.
    """

    def __init__(self, lm: LanguageModel, tokenizer: Any = None, *, max_batch: int = 16, max_queue: int = 64,
                 timeout_s: float | None = None, on_overflow: str = "error", prefill_tokens: int = 128,
                 settings: DecodingSettings | None = None) -> None:
        self.max_batch = int(check_number("max_batch", max_batch, low=1, integer=True))
        self.max_queue = int(check_number("max_queue", max_queue, low=0, integer=True))
        if timeout_s is not None:
            check_number("timeout_s", timeout_s, low=0.0, low_inclusive=False)
        self.timeout_s = timeout_s
        self.lm, self.tokenizer = lm, tokenizer
        self.settings = settings or DecodingSettings()
        # weights stay row-major, the faster layout for many rows at once
        self.loop = DecodeLoop(lm, tokenizer, on_overflow=on_overflow, prefill_tokens=prefill_tokens,
                               max_rows=self.max_batch)
        self._incoming: deque[Group] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="lmlab-scheduler", daemon=True)
        self._thread.start()

    # --- public -------------------------------------------------------------------------------
    def submit(self, request: Request, *, notify: Callable[[Event], None] | None = None,
               timeout_s: float | None = None) -> Handle:
        """Queue ``request``; its events go to ``notify`` (called from the scheduler thread) or the handle.
        A bad request raises its LmlabError here; a full queue raises ``QueueFull``."""
        settings, prompt = self.loop.check(request, self.settings)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        group = Group(request, settings, prompt, emit=lambda event: None, deadline=deadline)
        handle = Handle(group, notify, self.wake)
        group.emit = handle.emit
        with self._cond:
            if self._closed:
                raise ConfigError("the scheduler is closed", "create a new one")
            if not self._fits(settings.rows):
                raise QueueFull(f"the request queue is full ({self.max_queue} waiting)", "retry in a moment")
            self._incoming.append(group)
            self.loop.counters["submitted"] += 1
            self._cond.notify()
        return handle

    def _fits(self, rows: int) -> bool:
        """Whether a request of ``rows`` rows can start now or wait in the queue (first come, first served:
        once a waiting request does not fit the free rows, every later one queues behind it)."""
        prefilling, waiting = list(self.loop.prefilling), list(self.loop.waiting)  # snapshots (C-level copies)
        free = self.max_batch - self.loop.running_rows - sum(g.settings.rows for g in prefilling)
        queued = 0
        for group in [*waiting, *self._incoming]:
            if queued == 0 and group.settings.rows <= free:
                free -= group.settings.rows
            else:
                queued += 1
        return (queued == 0 and rows <= free) or queued < self.max_queue

    def generate(self, request: Request) -> Completion:
        """Submit and wait: the continuation of one request."""
        return self.submit(request).result()

    def load(self) -> dict[str, int]:
        """Running rows, waiting requests and the lifetime counters."""
        with self._cond:
            return {"running": self.loop.running_rows,
                    "waiting": len(self._incoming) + len(self.loop.waiting) + len(self.loop.prefilling),
                    **{k: v for k, v in self.loop.counters.items() if k != "prefill_tokens"}}

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

    # --- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        loop = self.loop
        while True:
            with self._cond:
                while not self._closed and not self._incoming and not loop.busy:
                    self._cond.wait()
                if self._closed:
                    break
                loop.waiting.extend(self._incoming)
                self._incoming.clear()
            try:
                loop.turn()
            except Exception as exc:  # a bug must not kill the server: fail the batch, start afresh
                loop.fail_all(exc if isinstance(exc, LmlabError) else LmlabError(f"generation failed: {exc!r}"))
        closed = LmlabError("the scheduler was closed", "send the request again to a running server")
        with self._cond:
            loop.waiting.extend(self._incoming)
            self._incoming.clear()
        loop.fail_all(closed)
