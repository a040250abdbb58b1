"""The inference engine: the decoding loop driven synchronously, with timings.

``Engine.generate`` runs a list of requests to completion (all prompts prefilled together in one
padded forward pass on a transformer, then decoded as one batch, each row with its own settings,
seed and stops) and reports prefill and decode throughput, time to first token and peak memory;
``Engine.stream`` yields one request's text pieces as they are decoded. Both drive
``lmlab.generate.loop.DecodeLoop`` — the same loop the server's ``Scheduler`` drives — so any
protocol model and every search strategy (sampling, best-of-n, beam variants) runs here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..core.errors import ConfigError, LmlabError
from ..core.memory import peak_memory_mb, reset_peak_memory
from ..core.validate import check_choice
from ..lm import LanguageModel
from .loop import OVERFLOW, DecodeLoop, Request, fit_prompt
from .output import Completion, Event, Stats
from .processors import Processor, Temperature
from .settings import DecodingSettings

__all__ = ["OVERFLOW", "Completion", "Engine", "Request", "Stats", "fit_prompt"]


class Engine:
    """Generation for many requests with one model: ``generate`` (batched) and ``stream`` (text pieces).

    A request without its own ``settings`` decodes with ``settings`` here (by default built from
    ``processors`` — ``lmlab.generate.processors`` — and ``greedy``). ``on_overflow`` says what a
    prompt too long for the context does: 'error' or 'truncate' (keep its last tokens).
    ``compile=True`` runs a transformer's one-token decode step through ``torch.compile``
    (compiled on first use; the prefill stays eager). ``decode_layout=True`` stores a neural
    model's float32 CPU linear weights column-major, in place (``lmlab.models.layout``): the layout
    the one-row matrix-vector product reads fastest (batch 1 decodes ~25 % faster); batches of four
    or more rows run faster row-major, so the batching server passes False.
    """

    def __init__(self, lm: LanguageModel, tokenizer: Any = None, *, processors: Sequence[Processor] = (),
                 greedy: bool = False, settings: DecodingSettings | None = None, on_overflow: str = "error",
                 compile: bool = False, decode_layout: bool = True) -> None:
        if settings is not None and (processors or greedy):
            raise ConfigError("pass either settings or processors/greedy", "put them in the DecodingSettings")
        self.lm, self.tokenizer = lm, tokenizer
        self.settings = settings or DecodingSettings(greedy=greedy, processors=tuple(processors))
        self.on_overflow = check_choice("on_overflow", on_overflow, OVERFLOW)
        step = None
        if compile:
            if not hasattr(lm, "compiled_step"):
                raise ConfigError("compile applies to transformer models only", "leave compile (--compile) out")
            step = lm.compiled_step()
        self._step = step
        if decode_layout and isinstance(lm, torch.nn.Module):
            from ..models.layout import decode_layout as use_decode_layout

            use_decode_layout(lm)

    def loop(self) -> DecodeLoop:
        """A fresh decoding loop over this engine's model (every prompt prefilled at once)."""
        return DecodeLoop(self.lm, self.tokenizer, on_overflow=self.on_overflow, step=self._step)

    # --- public -------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], on_text: Callable[[int, str], None] | None = None
                 ) -> list[Completion]:
        """The completions of all ``requests``, in order (a request with n continuations gives n);
        ``on_text(i, piece)`` streams the text of completion i."""
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

    # --- driving the loop ---------------------------------------------------------------------
    def _run(self, requests: list[Request]) -> Iterator[tuple[int, str]]:
        loop = self.loop()
        pieces: list[tuple[int, str]] = []
        results: dict[int, list[Completion]] = {}
        failures: list[LmlabError] = []
        offsets, total = [], 0

        def listener(i: int) -> Callable[[Event], None]:
            def emit(event: Event) -> None:
                if event.done:
                    if event.error is not None:
                        failures.append(event.error)
                    results[i] = event.completions
                elif event.text:
                    pieces.append((offsets[i] + event.index, event.text))
            return emit

        groups = []
        for i, request in enumerate(requests):
            offsets.append(total)
            groups.append(loop.add(request, listener(i), default=self.settings))
            total += groups[-1].settings.n
        device = self.lm.device
        reset_peak_memory(device)
        start = time.perf_counter()
        while loop.busy:
            loop.turn()
            if failures:
                raise failures[0]
            yield from pieces
            pieces.clear()
        end = time.perf_counter()
        outs = [c for i in range(len(requests)) for c in results.get(i, [])]
        firsts = [g.first_token_s for g in groups if g.first_token_s is not None]
        first = min(firsts) if firsts else end
        stats = Stats(prompt_tokens=sum(len(g.prompt) for g in groups),
                      generated_tokens=sum(len(c.ids) for c in outs), prefill_s=loop.prefill_seconds,
                      time_to_first_token_s=first - start, decode_s=end - first,
                      decode_tokens=max(sum(len(c.ids) - 1 for c in outs if c.ids), 0),
                      peak_memory_mb=peak_memory_mb(device), kv_cache_bytes=loop.counters["kv_cache_bytes"])
        for c in outs:
            c.stats = stats
        return outs


def rollout_generate(lm: Any, tokenizer: Any, temperature: float = 1.0):
    """A ``lmlab.align.rollout.Generate`` on the inference engine: batched, a seed per row, sampling at
    ``temperature`` (or greedy); completions end with the EOS id when the model stopped."""
    processors = [] if temperature == 1.0 else [Temperature(temperature)]
    sampler = Engine(lm, tokenizer, processors=processors, greedy=False, decode_layout=False)
    greedy = Engine(lm, tokenizer, greedy=True, decode_layout=False)
    stop = getattr(lm, "eos_id", None)

    def generate(prompts: list[list[int]], max_new_tokens: int, seeds: list[int], is_greedy: bool) -> list[list[int]]:
        engine = greedy if is_greedy else sampler
        outs = engine.generate([Request(p, max_new_tokens=max_new_tokens, seed=s,
                                        stop_ids=[stop] if stop is not None else [])
                                for p, s in zip(prompts, seeds, strict=True)])
        return [o.ids + ([stop] if o.finish_reason == "stop" and stop is not None else []) for o in outs]

    return generate
