"""A tiny LLaMA-style TransformerLM with a character tokenizer and a chat template, for the SFT tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmlab.models import save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer

#: <u>text| for a user turn, <a>text| for an assistant turn; the generation prompt is "<a>"
TEMPLATE = ("{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}|{% endfor %}"
            "{% if add_generation_prompt %}<a>{% endif %}")
ALPHABET = "<>|usa abcdefghijklmnopqrstuvwxyz0123456789:?"


def tiny_tokenizer() -> WordLevelTokenizer:
    tok = WordLevelTokenizer("char").train([ALPHABET])
    tok.chat_template = TEMPLATE
    return tok


def tiny_model(tok, seed: int = 0, n_layers: int = 2, context_length: int = 128) -> TransformerLM:
    torch.manual_seed(seed)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=n_layers,
                                        n_heads=4, n_kv_heads=2, d_ff=64, context_length=context_length)
    return TransformerLM(cfg, {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                               "unk_id": tok.unk_id}).eval()


def save_tiny(path: Path, seed: int = 0, context_length: int = 128) -> Path:
    tok = tiny_tokenizer()
    return save_model_dir(path, *tiny_model(tok, seed, context_length=context_length).to_state(), tokenizer=tok)


def rows(n: int = 40) -> list[dict]:
    """Chat rows of a checkable task: 'what is x' → 'ans: x' (the letter repeated)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [{"messages": [{"role": "user", "content": f"what is {letters[i % 26]}?"},
                          {"role": "assistant", "content": f"ans: {letters[i % 26] * 3}"}]} for i in range(n)]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path
