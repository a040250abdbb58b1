"""Agent memory: a short-term conversation kept within a token budget by summarising its oldest
turns, and a long-term vector store over past turns.

``ShortTermMemory`` never drops a turn silently: when the messages sent to the model would pass
``budget`` tokens, the oldest turns after the system prompt and the task are folded into a running
summary that the model itself writes (the summary request goes through the agent's model like any
other call, so it is traced and batched), and the model reads the summary instead of those turns.
``LongTermMemory`` embeds texts (past tasks and answers) with any sentence encoder — lmlab's
all-MiniLM-L6-v2, or the instant hashing encoder — and returns the nearest ones to a query by
cosine similarity (``lmlab.retrieval.dense``); it saves to a folder (safetensors + JSONL) and loads
back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.validate import check_number
from ..eval.records import read_jsonl, write_jsonl
from ..retrieval.dense import ExactIndex, encode, load_vectors, save_vectors
from .models import Generation

SUMMARY_PROMPT = ("Summarise the conversation below in at most {words} words. Keep every number, name, "
                  "tool result and decision; drop greetings.\n\n{previous}{turns}")
PER_MESSAGE = 4  # tokens a chat template adds around each message (role markers)


def message_text(message: dict) -> str:
    """A message as plain text for counting and summarising (tool calls written out)."""
    text = message.get("content") or ""
    for call in message.get("tool_calls") or []:
        text += f" [calls {call['function']['name']}({call['function']['arguments']})]"
    return f"{message['role']}: {text}"


class ShortTermMemory:
    """A conversation view within ``budget`` tokens (see the module docstring); ``keep`` is how many
    of the newest messages are never folded, ``head`` how many first ones (system, examples, task)."""

    def __init__(self, count_tokens: Callable[[str], int], budget: int = 1024, keep: int = 2,
                 summary_words: int = 80, head: int = 2) -> None:
        self.count_tokens = count_tokens
        self.budget = int(check_number("budget", budget, low=64, integer=True))
        self.keep = int(check_number("keep", keep, low=1, integer=True))
        self.summary_words = int(check_number("summary_words", summary_words, low=10, integer=True))
        self.head = int(check_number("head", head, low=1, integer=True))  # system, examples, task: never folded
        self.summary = ""
        self.folded = 0  # messages after the head already in the summary

    def _tokens(self, messages: Sequence[dict]) -> int:
        return sum(self.count_tokens(message_text(m)) + PER_MESSAGE for m in messages)

    def view(self, messages: Sequence[dict]) -> list[dict]:
        """What the model reads: system, task, the summary (if any) and the turns not folded."""
        head, rest = list(messages[:self.head]), list(messages[self.head + self.folded:])
        if self.summary:
            head.append({"role": "user", "content": f"Summary of the earlier steps: {self.summary}"})
        return head + rest

    def overflow(self, messages: Sequence[dict]) -> list[dict]:
        """The oldest unfolded turns that must be folded so the view fits the budget ([] when it fits).
        Turns are folded whole: an assistant message with the tool results that answer it."""
        head, rest = list(messages[:self.head]), list(messages[self.head + self.folded:])
        foldable = max(0, len(rest) - self.keep)

        def fits(take: int) -> bool:
            summary = self.count_tokens(self.summary) + 2 * self.summary_words if self.summary or take else 0
            return self._tokens(head) + summary + self._tokens(rest[take:]) <= self.budget

        take = 0
        while not fits(take) and take < foldable:
            take += 1
            while take < foldable and rest[take]["role"] == "tool":
                take += 1
        return rest[:take]

    def summary_request(self, turns: Sequence[dict]) -> Generation:
        previous = f"Earlier summary: {self.summary}\n\n" if self.summary else ""
        prompt = SUMMARY_PROMPT.format(words=self.summary_words, previous=previous,
                                       turns="\n".join(message_text(m) for m in turns))
        return Generation(messages=[{"role": "user", "content": prompt}], max_tokens=2 * self.summary_words)

    def absorb(self, turns: Sequence[dict], summary: str) -> None:
        """Record that ``turns`` are now represented by ``summary``."""
        self.summary = summary.strip() or self.summary
        self.folded += len(turns)


class LongTermMemory:
    """Texts and their unit vectors; ``search`` returns the nearest (see the module docstring)."""

    TEXTS, VECTORS = "memory.jsonl", "memory.safetensors"

    def __init__(self, encoder: Any = None) -> None:
        if encoder is None:
            from ..retrieval.encoders import HashingEncoder

            encoder = HashingEncoder()
        self.encoder = encoder
        self.records: list[dict] = []
        self.vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def add(self, text: str, **meta: Any) -> str:
        """Store ``text`` (with JSON-ready ``meta``); returns its id."""
        record_id = str(len(self.records))
        vector = encode(self.encoder, [text], desc="memory")
        self.vectors = vector if self.vectors is None else np.vstack([self.vectors, vector])
        self.records.append({"id": record_id, "text": text, **meta})
        return record_id

    def search(self, query: str, k: int = 3, min_score: float = 0.0) -> list[dict]:
        """The ``k`` stored records most similar to ``query`` (with their cosine ``score``), best first."""
        check_number("k", k, low=1, integer=True)
        if not self.records:
            return []
        index = ExactIndex(self.vectors, [r["id"] for r in self.records])
        rows, scores = index.search_vectors(encode(self.encoder, [query], desc="memory"), k)[0]
        return [{**self.records[r], "score": float(s)} for r, s in zip(rows.tolist(), scores.tolist(), strict=True)
                if s > min_score]

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        if self.vectors is not None:
            save_vectors(path / self.VECTORS, self.vectors, [r["id"] for r in self.records])
        write_jsonl(path / self.TEXTS, self.records)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, encoder: Any = None) -> LongTermMemory:
        """A memory saved by ``save`` (use the encoder it was built with)."""
        path = Path(folder)
        if not (path / cls.TEXTS).is_file():
            raise InputError(f"{folder} holds no saved memory ({cls.TEXTS})", "save one with LongTermMemory.save")
        memory = cls(encoder)
        memory.records = read_jsonl(path / cls.TEXTS)
        if memory.records:
            memory.vectors, ids = load_vectors(path / cls.VECTORS)
            if ids != [r["id"] for r in memory.records]:
                raise InputError(f"{folder}: the vectors and texts of the memory disagree", "save the memory again")
        return memory
