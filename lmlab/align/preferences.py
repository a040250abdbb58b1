"""Preference data: rows of (prompt, chosen, rejected) → token ids through the model's chat template.

A row is one JSON object in any of the usual shapes:

* ``{"prompt", "chosen", "rejected"}`` — each a string (the prompt a user turn, the answers
  assistant turns) or a list of chat messages;
* ``{"chosen", "rejected"}`` — two whole conversations sharing their beginning: chat message lists,
  or Anthropic HH-RLHF transcripts ``"\\n\\nHuman: …\\n\\nAssistant: …"``; the shared messages are
  the prompt and what follows is each completion (usually the final assistant turn);
* for KTO, also unpaired ``{"prompt", "completion", "label"}`` (label true = desirable).

A completion is everything the chat template renders after the prompt (the assistant turn with its
end-of-turn marker), tokenised apart from the prompt exactly as SFT does, so the prompt ids are the
ones generation sees. A prompt too long is cut from the left (its latest turns stay), then the
completion from the right; both are counted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import ConfigError, DataError, InputError
from ..core.validate import check_number
from ..data.corpus import jsonl_records
from ..data.loaders import ShuffledRows, pad_batch
from ..tokenizers.chat_template import chat_text, check_messages

Messages = list[dict[str, str]]
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass
class Preference:
    """One comparison: the prompt's messages and the messages each answer adds."""

    prompt: Messages
    chosen: Messages
    rejected: Messages


@dataclass
class Judged:
    """One unpaired example (KTO): prompt, completion messages, and whether it is desirable."""

    prompt: Messages
    completion: Messages
    desirable: bool


def parse_transcript(text: str, where: str = "row") -> Messages:
    """An HH-RLHF transcript ("\\n\\nHuman: …\\n\\nAssistant: …") as chat messages."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise DataError(f"{where}: the text is not an HH transcript (\\n\\nHuman: … \\n\\nAssistant: …)",
                        "give 'prompt', 'chosen' and 'rejected' separately, or whole transcripts")
    return [{"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1].strip()}
            for i in range(1, len(parts), 2)]


def as_messages(value: Any, role: str, field: str, where: str) -> Messages:
    """A field as messages: a string becomes one ``role`` turn, a list is checked as chat messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        try:
            return check_messages(value)
        except InputError as exc:
            raise DataError(f"{where}: '{field}' {exc.problem}", exc.fix) from None
    raise DataError(f"{where}: '{field}' is a {type(value).__name__}", "write a string or a list of chat messages")


def _conversation(value: Any, field: str, where: str) -> Messages:
    if isinstance(value, str) and "\n\nAssistant:" in value:
        return parse_transcript(value, f"{where} '{field}'")
    if isinstance(value, list):
        return as_messages(value, "assistant", field, where)
    raise DataError(f"{where} has no 'prompt', and '{field}' is not a whole conversation",
                    "add a 'prompt' field, or give chat message lists or HH transcripts")


def split_shared_prefix(chosen: Messages, rejected: Messages, where: str = "row") -> Preference:
    """The messages both conversations share become the prompt; each keeps what follows."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) or shared == len(rejected):
        raise DataError(f"{where}: one conversation is a prefix of the other, so there is no completion to compare",
                        "give two conversations that differ in their final answer")
    if shared == 0:
        raise DataError(f"{where}: the two conversations share no prompt", "give the 'prompt' field separately")
    return Preference(chosen[:shared], chosen[shared:], rejected[shared:])


def preference(row: Any, where: str = "row") -> Preference:
    """The comparison in one data row (any of the shapes in the module notes)."""
    if not isinstance(row, dict):
        raise DataError(f"{where} is not a JSON object", "write one object per line")
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise DataError(f"{where} has no {' or '.join(repr(k) for k in missing)} (keys: {', '.join(sorted(row)) or 'none'})",
                        "each preference row needs 'chosen' and 'rejected' (and usually 'prompt')")
    if "prompt" in row:
        return Preference(as_messages(row["prompt"], "user", "prompt", where),
                          as_messages(row["chosen"], "assistant", "chosen", where),
                          as_messages(row["rejected"], "assistant", "rejected", where))
    return split_shared_prefix(_conversation(row["chosen"], "chosen", where),
                               _conversation(row["rejected"], "rejected", where), where)


def judged(row: Any, where: str = "row") -> list[Judged]:
    """KTO examples of a row: ``{"prompt", "completion", "label"}``, or a preference pair as one
    desirable and one undesirable example."""
    if isinstance(row, dict) and "label" in row and "completion" in row and "prompt" in row:
        if not isinstance(row["label"], bool):
            raise DataError(f"{where}: 'label' is {row['label']!r}", "write true (desirable) or false")
        return [Judged(as_messages(row["prompt"], "user", "prompt", where),
                       as_messages(row["completion"], "assistant", "completion", where), row["label"])]
    pair = preference(row, where)
    return [Judged(pair.prompt, pair.chosen, True), Judged(pair.prompt, pair.rejected, False)]


def read_rows(path: str | os.PathLike, limit: int | None = None) -> list[tuple[str, Any]]:
    """(where, row) for each JSON object of a JSON Lines file (blank lines skipped)."""
    rows = jsonl_records(path, limit)
    if not rows:
        raise DataError(f"{path} holds no rows", "write one JSON object per line")
    return rows


def read_preferences(path: str | os.PathLike, limit: int | None = None) -> list[Preference]:
    """The comparisons of a JSON Lines file."""
    return [preference(row, where) for where, row in read_rows(path, limit)]


def held_out_split(items: Sequence, every: int = 10) -> tuple[list, list]:
    """(train, held-out): every ``every``-th item (the 10th, 20th, …) is held out — a fixed rule."""
    check_number("every", every, low=2, integer=True)
    return ([x for i, x in enumerate(items) if i % every != every - 1],
            [x for i, x in enumerate(items) if i % every == every - 1])


@dataclass
class Encoded:
    """Token ids of a prompt and one completion."""

    prompt: list[int]
    completion: list[int]


@dataclass
class Truncation:
    """Limits on the tokens of one example, and how often each cut happened."""

    max_length: int = 512
    max_prompt_length: int = 256
    prompts_cut: int = 0
    completions_cut: int = 0

    def __post_init__(self) -> None:
        check_number("max_length", self.max_length, low=2, integer=True)
        check_number("max_prompt_length", self.max_prompt_length, low=1, integer=True)
        if self.max_prompt_length >= self.max_length:
            raise ConfigError(f"max_prompt_length {self.max_prompt_length} leaves no room for a completion within "
                              f"max_length {self.max_length}", "use a max_prompt_length below max_length")


def encode(tokenizer: Any, prompt: Messages, completion: Messages, limits: Truncation,
           template: str | None = None) -> Encoded:
    """Prompt and completion ids: the template's rendering of ``prompt`` (with the generation prompt when
    an assistant turn follows), and of what ``completion`` adds to it."""
    opens_answer = completion[0]["role"] == "assistant"
    head = chat_text(tokenizer, prompt, add_generation_prompt=opens_answer, template=template)
    whole = chat_text(tokenizer, prompt + completion, add_generation_prompt=False, template=template)
    if not whole.startswith(head):
        raise ConfigError("the chat template does not render a conversation as a growing text, so the "
                          "completion cannot be told from the prompt", "use a template that appends each turn")
    prompt_ids, completion_ids = tokenizer.encode(head), tokenizer.encode(whole[len(head):])
    if len(prompt_ids) > limits.max_prompt_length:
        prompt_ids = prompt_ids[-limits.max_prompt_length:]
        limits.prompts_cut += 1
    room = limits.max_length - len(prompt_ids)
    if len(completion_ids) > room:
        completion_ids = completion_ids[:room]
        limits.completions_cut += 1
    if not completion_ids:
        raise DataError("a completion renders to no tokens", "check the data: every answer needs text")
    return Encoded(prompt_ids, completion_ids)


def completion_batch(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """The batch of ``examples`` (prompt + completion ids): each distinct prompt once, left-padded."""
    index: dict[tuple[int, ...], int] = {}
    prompt_of = [index.setdefault(tuple(e.prompt), len(index)) for e in examples]
    if any(not e.prompt for e in examples):
        raise DataError("an example has no prompt tokens, so nothing predicts its first completion token",
                        "render prompts with the chat template (it always yields tokens)")
    width = max(len(p) for p in index)
    prompt_ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros(len(index), width, dtype=torch.bool)
    for row, prompt in enumerate(index):
        prompt_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        prompt_mask[row, width - len(prompt):] = True
    completion_ids, completion_mask = pad_batch([e.completion for e in examples], pad_id)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "prompt_of": torch.tensor(prompt_of, dtype=torch.long)}



@dataclass
class EncodedPair:
    """A comparison as ids: one prompt, two completions; optional reference log-probabilities."""

    chosen: Encoded
    rejected: Encoded
    ref_chosen: float | None = None
    ref_rejected: float | None = None


def encode_preferences(tokenizer: Any, pairs: Sequence[Preference], limits: Truncation,
                       template: str | None = None) -> list[EncodedPair]:
    """Every comparison as ids (``limits`` counts the cuts)."""
    return [EncodedPair(encode(tokenizer, p.prompt, p.chosen, limits, template),
                        encode(tokenizer, p.prompt, p.rejected, limits, template)) for p in pairs]


def pair_batch(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of the chosen completions, then of the rejected ones (one forward for both), with the
    precomputed reference log-probabilities (``ref_logps`` [2B]) when every pair has them."""
    batch = completion_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    if all(p.ref_chosen is not None for p in pairs):
        batch["ref_logps"] = torch.tensor([p.ref_chosen for p in pairs] + [p.ref_rejected for p in pairs],
                                          dtype=torch.float32)
    return batch


def judged_batch(examples: Sequence[tuple[Encoded, bool]], pad_id: int) -> dict[str, torch.Tensor]:
    """KTO rows (``label`` True = desirable) and their mismatched twins for the KL reference point:
    prompt i with completion i + 1 (``kl_*`` keys), as TRL builds them."""
    rows = [e for e, _ in examples]
    batch = completion_batch(rows, pad_id)
    batch["label"] = torch.tensor([d for _, d in examples])
    shifted = [Encoded(rows[i].prompt, rows[(i + 1) % len(rows)].completion) for i in range(len(rows))]
    batch.update({f"kl_{k}": v for k, v in completion_batch(shifted, pad_id).items()})
    return batch


def encode_judged(tokenizer: Any, examples: Sequence[Judged], limits: Truncation,
                  template: str | None = None) -> list[tuple[Encoded, bool]]:
    """Every unpaired example as (ids, desirable)."""
    return [(encode(tokenizer, e.prompt, e.completion, limits, template), e.desirable) for e in examples]


class ItemBatches:
    """Batches of items for the trainer: ``make_batch(items)`` of the items ``ShuffledRows`` picks, so
    ``batch(index)`` is a pure function of the index."""

    def __init__(self, items: Sequence, batch_size: int, make_batch: Callable[[list], dict], seed: int = 0,
                 shuffle: bool = True) -> None:
        self.items, self.make_batch = list(items), make_batch
        self.rows = ShuffledRows(len(self.items), batch_size, seed, shuffle)

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        return self.make_batch([self.items[i] for i in self.rows.indices(index, rank, world)])

    def batches(self) -> list[dict[str, torch.Tensor]]:
        """Every item once, in order (evaluation)."""
        size = self.rows.batch_size
        return [self.make_batch(self.items[i:i + size]) for i in range(0, len(self.items), size)]
