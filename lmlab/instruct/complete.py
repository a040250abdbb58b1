"""Many prompts through one model, a batch at a time: the only way the synthesis recipes call a model.

``model`` is ``lmlab.agents.models``' ``LocalModel`` (the batch decoded together by one
``Engine.generate`` call) or ``EndpointModel`` (any OpenAI-compatible server, the batch posted
concurrently). A prompt is continued as raw text (``/v1/completions``; the paper's setting for a
base model) or sent as one user message (``chat=True``; what an instruction-tuned model expects).
Request ``i`` of a call samples with seed ``seed + i``, so a run is reproducible. Prompts are batched
in order of length (replies come back in the caller's order), so a batch pads little.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..agents.models import Generation, Reply
from ..core.progress import progress
from ..core.validate import check_number


def check_settings(*, batch_size: int, seed: int, temperature: float, **token_limits: int) -> None:
    """Refuse, before any model call, settings no generation could run with."""
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("seed", seed, low=0, integer=True)
    check_number("temperature", temperature, low=0.0)
    for name, value in token_limits.items():
        check_number(name, value, low=1, integer=True)


def complete(model: Any, prompts: Sequence[str], *, chat: bool = False, max_tokens: int = 128,
             temperature: float = 0.0, seed: int = 0, stop: Sequence[str] = (), batch_size: int = 16,
             desc: str = "", on_batch: Callable[[int, int], None] | None = None) -> list[Reply]:
    """One reply per prompt, ``batch_size`` prompts per model call (progress bar ``desc``)."""
    check_settings(batch_size=batch_size, seed=seed, temperature=temperature, max_tokens=max_tokens)
    settings = {"max_tokens": max_tokens, "temperature": temperature, "stop": tuple(stop)}
    requests = [Generation(messages=[{"role": "user", "content": p}], seed=seed + i, **settings) if chat
                else Generation(prompt=p, seed=seed + i, **settings) for i, p in enumerate(prompts)]
    # batches of similar length waste less on padding (every prompt of a batch is padded to its longest)
    order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
    replies: dict[int, Reply] = {}
    starts = range(0, len(order), batch_size)
    for start in progress(starts, desc=desc, total=len(starts), unit="batch") if desc else starts:
        chunk = order[start:start + batch_size]
        for i, group in zip(chunk, model.generate([requests[i] for i in chunk]), strict=True):
            replies[i] = group[0]
        if on_batch is not None:
            on_batch(len(replies), len(requests))
    return [replies[i] for i in range(len(requests))]
