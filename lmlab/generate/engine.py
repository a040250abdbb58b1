"""The inference engine: batched prefill then decode, with a preallocated KV cache on transformers.

Requests of different lengths share a batch through left padding and an attention mask; the
transformer's cache is allocated once for prompt + new tokens (no concatenation per step).
Each request has its own stop strings, stop ids, token budget and seed; text is streamed
through the tokenizer's incremental decoder, so every piece is valid UTF-8, and a piece that
might be the start of a stop string is held back until it is known not to be. Each call
reports prefill and decode throughput, time to first token and peak memory.
Any other protocol model runs the same loop through ``next_logprobs``, one request at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, InputError
from ..core.memory import peak_memory_mb, reset_peak_memory  # noqa: F401  (re-exported)
from ..core.seed import make_generator
from ..core.validate import check_choice, check_number
from ..lm import LanguageModel
from .processors import Processor, apply
from .sampling import stop_set

OVERFLOW = ("error", "truncate")


@dataclass
class Request:
    """One prompt (token ids) and how to end its continuation."""

    prompt: Sequence[int]
    max_new_tokens: int = 128
    stop: Sequence[str] = ()
    stop_ids: Sequence[int] | None = None  # None: the model's EOS
    seed: int | None = None


@dataclass
class Stats:
    """Timing and memory of one engine call (all its requests together)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0
    time_to_first_token_s: float = 0.0
    decode_s: float = 0.0
    decode_tokens: int = 0  # generated tokens after each request's first
    peak_memory_mb: float | None = None

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
                "decode_tokens_per_s": self.decode_tokens_per_s, "peak_memory_mb": self.peak_memory_mb}


@dataclass
class Completion:
    """A request's continuation: ids and model log-probs (stop token excluded), text, why it ended."""

    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "stop": a stop id or stop string ended it
    prompt_tokens: int = 0
    stats: Stats | None = None


class _Row:
    """Decoding state of one request: its tokens, text so far and what is already emitted."""

    def __init__(self, request: Request, prompt: list[int], stops: set[int], decoder: Any) -> None:
        self.request, self.prompt, self.stops, self.decoder = request, prompt, stops, decoder
        self.out = Completion(prompt_tokens=len(prompt))
        self.text, self.emitted, self.done = "", 0, False

    def add(self, token: int, logprob: float) -> str:
        """Take one token; the text that may now be shown (held back while it could start a stop)."""
        if token in self.stops:
            self.out.finish_reason = "stop"
            return self.finish(flush=True)
        self.out.ids.append(token)
        self.out.logprobs.append(logprob)
        self.text += self.decoder.push(token) if self.decoder is not None else ""
        for s in self.request.stop:
            cut = self.text.find(s)
            if cut >= 0:
                self.text = self.text[:cut]
                self.out.finish_reason = "stop"
                return self.finish(flush=False)
        if len(self.out.ids) >= self.request.max_new_tokens:
            return self.finish(flush=True)
        hold = max((k for s in self.request.stop for k in range(1, len(s)) if self.text.endswith(s[:k])),
                   default=0)
        piece = self.text[self.emitted:len(self.text) - hold]
        self.emitted += len(piece)
        return piece

    def finish(self, flush: bool) -> str:
        if flush and self.decoder is not None:
            self.text += self.decoder.flush()
        self.done = True
        self.out.text = self.text
        piece, self.emitted = self.text[self.emitted:], len(self.text)
        return piece


class Engine:
    """Generation for many requests with one model: ``generate`` (batched) and ``stream`` (text pieces).

    ``processors`` and ``greedy`` are the decoding layer's (``lmlab.generate.processors``);
    ``on_overflow`` says what a prompt too long for the context does: 'error' or 'truncate'
    (keep its last tokens). ``compile=True`` runs a transformer's one-token decode step
    through ``torch.compile`` (compiled on first use; the prefill stays eager).
    ``decode_layout=True`` stores a transformer's float32 CPU linear weights column-major, in
    place (``lmlab.models.layout``): the layout the one-row matrix-vector product reads fastest
    (batch 1 decodes ~25 % faster); batches of four or more rows run faster row-major, so the
    batching server passes False.
    """

    def __init__(self, lm: LanguageModel, tokenizer: Any = None, *, processors: Sequence[Processor] = (),
                 greedy: bool = False, on_overflow: str = "error", compile: bool = False,
                 decode_layout: bool = True) -> None:
        check_choice("on_overflow", on_overflow, OVERFLOW)
        self.lm, self.tokenizer = lm, tokenizer
        self.processors, self.greedy, self.on_overflow = list(processors), greedy, on_overflow
        from ..models.transformer import TransformerLM

        self.fast = isinstance(lm, TransformerLM)  # static cache, padded batches, last-position logits
        if compile and not self.fast:
            raise ConfigError("compile applies to transformer models only", "leave compile (--compile) out")
        if self.fast and decode_layout:
            from ..models.layout import decode_layout as use_decode_layout

            use_decode_layout(lm)
        self._decode = _compiled_step(lm) if compile else lm

    # --- public -------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], on_text: Callable[[int, str], None] | None = None) -> list[Completion]:
        """Continuations of all ``requests`` (one batch on transformers); ``on_text(i, piece)`` streams."""
        run = self._run(list(requests))
        while True:
            try:
                i, piece = next(run)
            except StopIteration as stop:
                return stop.value
            if on_text is not None and piece:
                on_text(i, piece)

    def stream(self, request: Request) -> Iterator[str]:
        """Text pieces of one request as they are decoded; the generator returns the Completion."""
        run = self._run([request])
        while True:
            try:
                _, piece = next(run)
            except StopIteration as stop:
                return stop.value[0]
            if piece:
                yield piece

    # --- the loop -----------------------------------------------------------------------------
    def _prompt(self, request: Request) -> list[int]:
        check_number("max_new_tokens", request.max_new_tokens, low=1, integer=True)
        prompt = [int(i) for i in request.prompt]
        if not prompt:
            raise InputError("the prompt has no tokens", "pass some text (or the tokenizer's BOS id)")
        limit = getattr(self.lm, "context_length", None)
        if limit is not None and len(prompt) + request.max_new_tokens > limit:
            room = limit - request.max_new_tokens
            if self.on_overflow == "error" or room < 1:
                raise InputError(f"the prompt ({len(prompt)} tokens) plus {request.max_new_tokens} new tokens "
                                 f"exceeds the model's context of {limit} tokens",
                                 "shorten the prompt, lower --max-new-tokens, or truncate (--on-overflow truncate)")
            prompt = prompt[-room:]
        return prompt

    def _run(self, requests: list[Request]) -> Iterator[tuple[int, str]]:
        if not requests:
            return []
        if not self.fast and len(requests) > 1:
            results = []
            for i, r in enumerate(requests):
                run = self._run_batch([r])
                while True:
                    try:
                        _, piece = next(run)
                    except StopIteration as stop:
                        results.extend(stop.value)
                        break
                    yield i, piece
            return results
        return (yield from self._run_batch(requests))

    def _run_batch(self, requests: list[Request]) -> Iterator[tuple[int, str]]:
        lm, device = self.lm, self.lm.device
        prompts = [self._prompt(r) for r in requests]
        rows = [_Row(r, p, stop_set(lm, r.stop_ids),
                     self.tokenizer.stream_decoder(skip_special_tokens=True) if self.tokenizer is not None else None)
                for r, p in zip(requests, prompts, strict=True)]
        gens = [make_generator(r.seed, device) for r in requests]
        b, width = len(rows), max(len(p) for p in prompts)
        steps = max(r.max_new_tokens for r in requests)
        history = torch.zeros(b, width + steps, dtype=torch.long, device=device)
        pads = [width - len(p) for p in prompts]
        for i, p in enumerate(prompts):
            history[i, pads[i]:width] = torch.tensor(p, dtype=torch.long)
        stats = Stats(prompt_tokens=sum(len(p) for p in prompts))
        reset_peak_memory(device)
        start = time.perf_counter()
        with torch.no_grad():
            logits, state = self._prefill(history[:, :width], pads, width + steps)
            stats.prefill_s = time.perf_counter() - start
            for step in range(steps):
                next_ids, chosen = self._next(logits, history[:, :width + step], pads, width, gens, rows)
                history[:, width + step] = next_ids
                if step == 0:
                    stats.time_to_first_token_s = time.perf_counter() - start
                for i, (row, tok) in enumerate(zip(rows, next_ids.tolist(), strict=True)):
                    if not row.done:
                        yield i, row.add(tok, chosen[i])
                if all(row.done for row in rows):
                    break
                logits, state = self._step(next_ids, state)
        stats.decode_s = time.perf_counter() - start - stats.time_to_first_token_s
        stats.generated_tokens = sum(len(r.out.ids) for r in rows)
        stats.decode_tokens = max(sum(len(r.out.ids) - 1 for r in rows if r.out.ids), 0)
        stats.peak_memory_mb = peak_memory_mb(device)
        for row in rows:
            row.out.stats = stats
        return [row.out for row in rows]

    def _prefill(self, ids: torch.Tensor, pads: list[int], capacity: int) -> tuple[torch.Tensor, Any]:
        """Next-token scores [B, V] after the prompts (logits on transformers, else log-probs) and the state."""
        lm = self.lm
        if self.fast:
            state = lm.initial_state(ids.shape[0], capacity=capacity)
            mask = None
            if any(pads):
                mask = torch.ones_like(ids)
                for i, pad in enumerate(pads):
                    mask[i, :pad] = 0
            logits, state = self._forward(ids, state, mask)
            return logits[:, -1], state
        return lm.next_logprobs(ids, lm.initial_state(ids.shape[0]))

    def _step(self, next_ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if self.fast:
            logits, state = self._decode(next_ids.unsqueeze(1), state, last_only=True)
            return logits[:, -1], state
        return self.lm.next_logprobs(next_ids.unsqueeze(1), state)

    def _forward(self, ids: torch.Tensor, state: Any, mask: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        return self.lm(ids, state, attention_mask=mask, last_only=True)

    def _next(self, scores: torch.Tensor, history: torch.Tensor, pads: list[int], width: int,
              gens: list[torch.Generator | None], rows: list[_Row]) -> tuple[torch.Tensor, list[float]]:
        """The next id of every row and its model log-probability.

        Greedy without processors takes the argmax of the raw scores and normalises only the
        chosen token's score (one logsumexp, no [B, V] log-softmax).
        """
        scores = scores.float()
        if self.greedy and not self.processors:
            next_ids = scores.argmax(dim=-1)
            chosen = scores.gather(1, next_ids.unsqueeze(1)).squeeze(1) - scores.logsumexp(dim=-1)
            return next_ids, chosen.tolist()
        logprobs = F.log_softmax(scores, dim=-1)
        next_ids = self._choose(self._process(logprobs, history, pads, width), gens, rows)
        return next_ids, logprobs.gather(1, next_ids.unsqueeze(1)).squeeze(1).tolist()

    def _process(self, logprobs: torch.Tensor, history: torch.Tensor, pads: list[int], width: int) -> torch.Tensor:
        """The processor chain on every row; a padded row sees only its own tokens."""
        if not self.processors:
            return logprobs
        if not any(pads):
            return apply(self.processors, logprobs, history, width)
        return torch.cat([apply(self.processors, logprobs[i:i + 1], history[i:i + 1, pad:], width - pad)
                          for i, pad in enumerate(pads)])

    def _choose(self, scores: torch.Tensor, gens: list[torch.Generator | None], rows: list[_Row]) -> torch.Tensor:
        if self.greedy:
            return scores.argmax(dim=-1)
        probs = scores.softmax(dim=-1)
        if torch.isnan(probs).any():
            raise ConfigError("the logits processors removed every token", "loosen the filters")
        picks = [torch.multinomial(probs[i], 1, generator=gens[i]) if not row.done
                 else probs[i].argmax().view(1) for i, row in enumerate(rows)]
        return torch.cat(picks)


def _compiled_step(lm: Any) -> Callable:
    """``lm``'s forward under ``torch.compile`` (inductor), with the cache length as a dynamic size so
    the growing cache does not recompile every step."""
    try:
        import torch._inductor  # noqa: F401
    except ImportError as err:
        from ..core.errors import MissingDependencyError

        raise MissingDependencyError("torch.compile's inductor backend is not available here",
                                     "leave compile (--compile) out") from err
    return torch.compile(lm, dynamic=True)
