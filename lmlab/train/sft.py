"""Supervised fine-tuning (instruction tuning): conversations → token rows with loss on assistant tokens only.

Each conversation is rendered with the model's chat template piece by piece: the text before an
assistant turn (system/user turns and the generation prompt) is context, the assistant turn as
the template closes it (its content and end-of-turn marker) is the target. The pieces are
tokenised separately, so the prompt ids are exactly what ``chat_prompt`` gives at inference.
Short examples are packed into rows of ``max_seq_len`` tokens with segment ids, which the
transformer turns into block-diagonal causal attention and per-example positions; a longer
example is truncated and counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError, DataError, InputError
from ..core.validate import check_number
from ..data.corpus import jsonl_records
from ..data.loaders import ShuffledRows
from ..tokenizers.chat_template import chat_text, check_messages
from .objectives import token_loss


def conversation(row: Any, where: str = "row") -> list[dict[str, str]]:
    """The messages of one data row: ``{"messages": [...]}`` (chat), Alpaca's ``{"instruction",
    "input", "output"}``, or ``{"prompt", "completion"|"response"}``; it must have an assistant turn."""
    if not isinstance(row, dict):
        raise DataError(f"{where} is not a JSON object", "write one object per line")
    if "messages" in row:
        if not isinstance(row["messages"], list):
            raise DataError(f"{where}: 'messages' is not a list", "write [{'role': ..., 'content': ...}, ...]")
        try:
            messages = check_messages(row["messages"])
        except InputError as exc:
            raise DataError(f"{where}: {exc.problem}", exc.fix) from None
    elif "instruction" in row and "output" in row:
        user = str(row["instruction"]) + (f"\n\n{row['input']}" if row.get("input") else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": str(row["output"])}]
    elif "prompt" in row and ("completion" in row or "response" in row):
        answer = row.get("completion", row.get("response"))
        messages = [{"role": "user", "content": str(row["prompt"])}, {"role": "assistant", "content": str(answer)}]
    else:
        raise DataError(f"{where} has no conversation (keys: {', '.join(sorted(row)) or 'none'})",
                        "give 'messages', or 'instruction' + 'output', or 'prompt' + 'completion'")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where} has no assistant turn, so there is nothing to learn from it",
                        "add an {'role': 'assistant', 'content': ...} message, or drop the row")
    return messages


def read_conversations(path: str | os.PathLike, limit: int | None = None) -> list[list[dict[str, str]]]:
    """Conversations of a JSON Lines file (one row per line; blank lines skipped)."""
    out = [conversation(row, where) for where, row in jsonl_records(path, limit)]
    if not out:
        raise DataError(f"{path} holds no conversations", "write one JSON object per line")
    return out


@dataclass
class Example:
    """Token ids of one rendered conversation and, per token, whether it is an assistant token."""

    ids: list[int]
    assistant: list[bool]


def render_example(tokenizer: Any, messages: Sequence[dict[str, str]], template: str | None = None) -> Example:
    """Render ``messages`` with the chat template, marking the tokens of every assistant turn."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = chat_text(tokenizer, messages[:i], add_generation_prompt=True, template=template)
        through = chat_text(tokenizer, messages[:i + 1], add_generation_prompt=False, template=template)
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise ConfigError("the chat template does not render a conversation as a growing text, so "
                              "assistant turns cannot be located", "use a template that appends each turn")
        pieces += [(prompt[len(done):], False), (through[len(prompt):], True)]
        done = through
    rest = chat_text(tokenizer, messages, add_generation_prompt=False, template=template)
    pieces.append((rest[len(done):] if rest.startswith(done) else "", False))
    ids: list[int] = []
    assistant: list[bool] = []
    for text, is_assistant in pieces:
        if text:
            piece = tokenizer.encode(text)
            ids += piece
            assistant += [is_assistant] * len(piece)
    return Example(ids, assistant)


@dataclass
class SFTData:
    """Rows of packed (or single) examples ready for batching, and what packing did."""

    rows: list[list[tuple[list[int], list[int], list[bool]]]]  # per row: (input, target, scored) per example
    examples: int
    truncated: int
    dropped: int  # examples left with no assistant token after truncation
    tokens: int
    scored_tokens: int
    pad_id: int = 0

    def summary(self) -> dict:
        return {"examples": self.examples, "rows": len(self.rows), "truncated": self.truncated,
                "dropped": self.dropped, "tokens": self.tokens, "assistant_tokens": self.scored_tokens}


def build_sft_data(tokenizer: Any, conversations: Iterable[Sequence[dict[str, str]]], max_seq_len: int, *,
                   pack: bool = True, template: str | None = None) -> SFTData:
    """Render, shift (input = ids[:-1], target = ids[1:]), truncate to ``max_seq_len`` and pack greedily in order."""
    check_number("max_seq_len", max_seq_len, low=2, integer=True)
    rows: list[list] = []
    current: list = []
    used = examples = truncated = dropped = tokens = scored = 0
    for messages in conversations:
        example = render_example(tokenizer, messages, template)
        examples += 1
        ids, assistant = example.ids, example.assistant
        if len(ids) - 1 > max_seq_len:
            ids, assistant = ids[:max_seq_len + 1], assistant[:max_seq_len + 1]
            truncated += 1
        scored_here = sum(assistant[1:])
        if len(ids) < 2 or not scored_here:
            dropped += 1
            continue
        item = (ids[:-1], ids[1:], assistant[1:])
        tokens += len(item[0])
        scored += scored_here
        if not pack or used + len(item[0]) > max_seq_len:
            if current:
                rows.append(current)
            current, used = [], 0
        current.append(item)
        used += len(item[0])
    if current:
        rows.append(current)
    if not rows:
        raise DataError(f"none of the {examples} conversations keeps an assistant token within "
                        f"max_seq_len={max_seq_len}", "raise --max-seq-len")
    pad = tokenizer.eos_id if getattr(tokenizer, "eos_id", None) is not None else 0
    return SFTData(rows, examples, truncated, dropped, tokens, scored, pad)


def collate(rows: Sequence[list], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """A batch of rows, right-padded: input, target, mask (assistant targets), attention_mask, segments.

    ``segments`` numbers the examples of each row from 1 (padding is 0, attention-masked too).
    """
    width = max(sum(len(x) for x, _, _ in row) for row in rows)
    shape = (len(rows), width)
    batch = {"input": torch.full(shape, pad_id, dtype=torch.long), "target": torch.full(shape, pad_id, dtype=torch.long),
             "mask": torch.zeros(shape, dtype=torch.bool), "attention_mask": torch.zeros(shape, dtype=torch.long),
             "segments": torch.zeros(shape, dtype=torch.long)}
    for r, row in enumerate(rows):
        at = 0
        for s, (x, y, scored) in enumerate(row, 1):
            end = at + len(x)
            batch["input"][r, at:end] = torch.tensor(x)
            batch["target"][r, at:end] = torch.tensor(y)
            batch["mask"][r, at:end] = torch.tensor(scored)
            batch["attention_mask"][r, at:end] = 1
            batch["segments"][r, at:end] = s
            at = end
    return batch


class SFTBatches:
    """Batches of rows for the trainer: a fresh seeded shuffle every epoch, ``batch(index)`` a pure function."""

    def __init__(self, data: SFTData, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.data = data
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self.rows = ShuffledRows(len(data.rows), self.batch_size, seed, shuffle)

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        return collate([self.data.rows[i] for i in self.rows.indices(index, rank, world)], self.data.pad_id)

    def batches(self) -> list[dict[str, torch.Tensor]]:
        """Every row once, in order (for evaluation)."""
        rows = self.data.rows
        return [collate(rows[i:i + self.batch_size], self.data.pad_id) for i in range(0, len(rows), self.batch_size)]


def forward_sft(model: nn.Module, batch: dict) -> torch.Tensor:
    """Logits [N, V] of the N scored (assistant) positions of a batch: packed rows attend within
    their segments, padding is masked, and the vocabulary projection skips unscored positions."""
    packed = bool((batch["segments"] > 1).any())  # unpacked batches need only the padding mask
    logits, _ = model(batch["input"], None, batch["attention_mask"],
                      segment_ids=batch["segments"] if packed else None, logits_at=batch["mask"])
    return logits


class SFTObjective:
    """Cross-entropy on the assistant tokens only (prompt masking); returns the real tokens processed."""

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        logits = forward_sft(model, batch)
        loss = token_loss(logits, batch["target"][batch["mask"].bool()])
        return loss, int(batch["attention_mask"].sum())


@torch.no_grad()
def sft_loss(model: nn.Module, batches: Iterable[dict]) -> float:
    """Mean cross-entropy (nats) over every assistant token of ``batches``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = forward_sft(model, batch)
        n = int(batch["mask"].sum())
        total += float(token_loss(logits, batch["target"][batch["mask"].bool()])) * n
        count += n
    model.train(was_training)
    return total / count if count else math.nan
