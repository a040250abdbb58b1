"""Rollouts: prompts with checkable answers, sampled completions, and the ``generate`` callable.

The learning layer does not import the inference engine (it is a higher layer); whoever runs RL —
the CLI, a benchmark, a notebook — passes a ``Generate`` callable, normally built on
``lmlab.generate.engine.Engine`` (batched, a seed per row; ``lmlab.generate.engine.rollout_generate``).
Its contract: ``generate(prompt_ids, max_new_tokens, seeds, greedy) -> completion ids``, each
ending with the stop id when the model stopped (so the policy learns to stop), one per prompt row.

Prompt rows are JSON objects with ``prompt`` (a string or chat messages; GSM8K's ``question``
also works) and an ``answer`` that rewards can check. ``arithmetic_problems`` makes the built-in
task: single-digit addition "What is 3 + 5? Answer with the number only." — short, verifiable,
and partly within SmolLM2-135M-Instruct's reach (≈ 35 % of greedy answers state the right number).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import DataError, ModelError
from ..core.validate import check_number
from ..tokenizers.chat_template import chat_text
from .preferences import Messages, as_messages, read_rows

Generate = Callable[[list[list[int]], int, list[int], bool], list[list[int]]]


@dataclass
class PromptItem:
    """A prompt's messages, its answer (or None) and its token ids under the chat template."""

    messages: Messages
    answer: str | None
    ids: list[int]


def prompt_row(row: Any, where: str = "row") -> tuple[Messages, str | None]:
    """(messages, answer) of one prompt row."""
    if not isinstance(row, dict):
        raise DataError(f"{where} is not a JSON object", "write one object per line")
    key = next((k for k in ("prompt", "messages", "question") if k in row), None)
    if key is None:
        raise DataError(f"{where} has no prompt (keys: {', '.join(sorted(row)) or 'none'})",
                        "give each row a 'prompt' (text or chat messages) and an 'answer'")
    answer = next((row[k] for k in ("answer", "gold", "solution") if k in row), None)
    return as_messages(row[key], "user", key, where), None if answer is None else str(answer)


def encode_prompts(tokenizer: Any, rows: Sequence[tuple[Messages, str | None]], max_prompt_length: int = 256,
                   template: str | None = None) -> list[PromptItem]:
    """Chat-rendered prompt ids (with the generation prompt), the last ``max_prompt_length`` kept."""
    check_number("max_prompt_length", max_prompt_length, low=1, integer=True)
    return [PromptItem(m, a, tokenizer.encode(chat_text(tokenizer, m, template=template))[-max_prompt_length:])
            for m, a in rows]


def read_prompts(path: str | os.PathLike, limit: int | None = None) -> list[tuple[Messages, str | None]]:
    """The (messages, answer) rows of a JSON Lines file."""
    return [prompt_row(row, where) for where, row in read_rows(path, limit)]


def arithmetic_problems(n: int, seed: int = 0, low: int = 1, high: int = 9) -> list[tuple[Messages, str]]:
    """``n`` addition problems a + b with a, b drawn uniformly from [low, high] (a seeded generator)."""
    check_number("n", n, low=1, integer=True)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        out.append(([{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}], str(a + b)))
    return out


def row_seeds(seed: int, rollout: int, n: int) -> list[int]:
    """A distinct, reproducible sampling seed for each of ``n`` rows of rollout number ``rollout``."""
    return [(seed * 1_000_003 + rollout * 7_919 + i) % 2**62 for i in range(n)]


@dataclass
class Rollouts:
    """Sampled completions: for each row its prompt's index, the completion ids and text, and whether the
    model stopped by itself."""

    prompt_index: list[int]
    completions: list[list[int]]
    texts: list[str]
    stopped: list[bool]


def sample_rollouts(generate: Generate, tokenizer: Any, prompts: Sequence[PromptItem], indices: Sequence[int],
                    group_size: int, max_new_tokens: int, seeds: Sequence[int], stop_id: int | None,
                    greedy: bool = False) -> Rollouts:
    """``group_size`` completions of each prompt in ``indices`` (consecutive rows per prompt)."""
    rows = [i for i in indices for _ in range(group_size)]
    outputs = generate([list(prompts[i].ids) for i in rows], max_new_tokens, list(seeds), greedy)
    if len(outputs) != len(rows):
        raise ModelError(f"generate returned {len(outputs)} completions for {len(rows)} prompts",
                         "return one completion per prompt row")
    completions, texts, stopped = [], [], []
    for ids in outputs:
        ids = [int(t) for t in ids]
        ended = bool(ids) and stop_id is not None and ids[-1] == stop_id
        if not ids:  # nothing generated: score the empty answer, train on the stop token
            ids, ended = ([stop_id], True) if stop_id is not None else ([], False)
        if not ids:
            raise ModelError("generate returned an empty completion and the model has no stop id to stand in",
                             "make generate return at least one token per row")
        completions.append(ids)
        texts.append(tokenizer.decode(ids[:-1] if ended else ids))
        stopped.append(ended)
    return Rollouts(rows, completions, texts, stopped)
