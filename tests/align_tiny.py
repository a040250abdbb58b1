"""A tiny chat model and small data sets for the alignment tests (seconds per run)."""

from __future__ import annotations

import json
from pathlib import Path

from sft_tiny import TEMPLATE, tiny_model

from lmlab.models import save_model_dir
from lmlab.tokenizers import WordLevelTokenizer

ALPHABET = "<>|usa abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:?+.,!'\n"


def tiny_chat_tokenizer() -> WordLevelTokenizer:
    tok = WordLevelTokenizer("char").train([ALPHABET])
    tok.chat_template = TEMPLATE
    return tok


def save_tiny_chat(path: Path, seed: int = 0) -> Path:
    """A 2-layer LLaMA-style model directory with a character tokenizer and a chat template."""
    tok = tiny_chat_tokenizer()
    return save_model_dir(path, *tiny_model(tok, seed).to_state(), tokenizer=tok)


def preference_rows(n: int = 40) -> list[dict]:
    """Pairs whose chosen answer states the sum and whose rejected one does not."""
    out = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        out.append({"prompt": f"what is {a}+{b}?", "chosen": f"{a + b}", "rejected": f"no idea {i % 3}"})
    return out


def hh_rows(n: int = 20) -> list[dict]:
    """HH-RLHF-style transcripts sharing all but the final assistant turn."""
    out = []
    for i in range(n):
        head = f"\n\nHuman: hi {i}\n\nAssistant: hello\n\nHuman: what is {i % 9}?"
        out.append({"chosen": head + f"\n\nAssistant: it is {i % 9}", "rejected": head + "\n\nAssistant: go away"})
    return out


def prompt_rows(n: int = 40) -> list[dict]:
    return [{"prompt": f"What is {i % 4} + {i % 3}?", "answer": str(i % 4 + i % 3)} for i in range(n)]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path
