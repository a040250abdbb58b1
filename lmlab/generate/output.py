"""What decoding produces: completions, the events that stream them, and the one stop-string rule.

``StopStrings`` cuts a growing text at the first stop string and says how much of its end to
hold back while it could still become one (so a stream never shows part of a stop).
``TextRow`` turns one continuation's tokens into text pieces through the tokenizer's
incremental decoder (every piece valid UTF-8) under those rules; the decoding loop, beam
results and evaluation's ``until`` strings all go through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import LmlabError


class StopStrings:
    """The stop rule for a set of strings (see the module docstring)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.longest = max((len(s) for s in self.stops), default=0)

    def find(self, text: str, start: int = 0) -> int:
        """Where the first stop string begins in ``text``, looking at matches that end after ``start``
        (the text before it was searched already); -1 when there is none."""
        if not self.stops:
            return -1
        begin = max(0, start - self.longest + 1)
        hits = [i for i in (text.find(s, begin) for s in self.stops) if i >= 0]
        return min(hits) if hits else -1

    def cut(self, text: str) -> tuple[str, bool]:
        """``text`` up to its first stop string, and whether one was found."""
        at = self.find(text)
        return (text, False) if at < 0 else (text[:at], True)

    def holdback(self, text: str) -> int:
        """How many characters at the end of ``text`` might begin a stop string."""
        return max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


@dataclass
class Stats:
    """Timing and memory of one decoding call (all its requests together)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0
    time_to_first_token_s: float = 0.0
    decode_s: float = 0.0
    decode_tokens: int = 0  # generated tokens after each request's first
    peak_memory_mb: float | None = None
    kv_cache_bytes: int = 0  # the most bytes of KV-cache tensors held at once (0: the model keeps none)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens per second after the first one (the first token's cost is the prefill)."""
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                "prefill_s": self.prefill_s, "time_to_first_token_s": self.time_to_first_token_s,
                "decode_s": self.decode_s, "prefill_tokens_per_s": self.prefill_tokens_per_s,
                "decode_tokens_per_s": self.decode_tokens_per_s, "peak_memory_mb": self.peak_memory_mb,
                "kv_cache_bytes": self.kv_cache_bytes}


@dataclass
class Completion:
    """One continuation: ids and model log-probs (stop token excluded), text, why it ended, a
    strategy's score where one applies (beam score, mean log-prob, Gumbel key, expected utility),
    and ``info``: what a method measured on the way (speculative decoding's acceptance, the votes
    of self-consistency)."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "stop": a stop id or stop string ended it; "cancelled"; "error"
    prompt_tokens: int = 0
    score: float | None = None
    stats: Stats | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


@dataclass
class Event:
    """One step of a request's continuation ``index``: a text piece and the token behind it; or the
    end of the whole request (``done``) with its completions or its error."""

    index: int = 0
    text: str = ""
    token: int | None = None  # None for the stop token, which is not part of the output
    logprob: float | None = None
    stop_id: int | None = None  # the stop token that ended the row (its log-prob in stop_logprob), for scoring
    stop_logprob: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)
    done: bool = False
    completions: list[Completion] = field(default_factory=list)
    error: LmlabError | None = None


class TextRow:
    """One continuation being decoded: its tokens, its text so far and what is already shown."""

    def __init__(self, prompt_tokens: int, stops: set[int], stop_strings: StopStrings, max_new_tokens: int,
                 decoder: Any) -> None:
        self.stops, self.stop_strings, self.max_new_tokens, self.decoder = stops, stop_strings, max_new_tokens, decoder
        self.out = Completion(prompt_tokens=prompt_tokens)
        self.text, self.emitted, self.done = "", 0, False

    def add(self, token: int, logprob: float) -> str:
        """Take one token; the text that may now be shown (held back while it could start a stop)."""
        if token in self.stops:
            self.out.finish_reason = "stop"
            return self.finish(flush=True)
        self.out.ids.append(token)
        self.out.logprobs.append(logprob)
        before = len(self.text)
        if self.decoder is not None:
            self.text += self.decoder.push(token)
        cut = self.stop_strings.find(self.text, before)
        if cut >= 0:
            self.text = self.text[:cut]
            self.out.finish_reason = "stop"
            return self.finish(flush=False)
        if len(self.out.ids) >= self.max_new_tokens:
            return self.finish(flush=True)
        piece = self.text[self.emitted:len(self.text) - self.stop_strings.holdback(self.text)]
        self.emitted += len(piece)
        return piece

    def finish(self, flush: bool, reason: str | None = None) -> str:
        """End the row (``reason`` overrides why); the text not shown yet."""
        if not self.done:
            if flush and self.decoder is not None:
                self.text += self.decoder.flush()
                cut = self.stop_strings.find(self.text)
                if cut >= 0:
                    self.text, self.out.finish_reason = self.text[:cut], "stop"
            self.done = True
            self.out.text = self.text
        if reason is not None:
            self.out.finish_reason = reason
        piece, self.emitted = self.text[self.emitted:], len(self.text)
        return piece
