"""``tokenizer_config.json``, where Hugging Face keeps what ``tokenizer.json`` cannot say: the chat
template and which special token plays which role (BOS, EOS, UNK, PAD).

A model directory written without the roles loses them on reading (SmolLM2 saved from its GGUF would
score text without its BOS and stop at no EOS), so lmlab writes both and reads both back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import ModelError
from ..core.io import write_json

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ROLE_KEYS = {"bos": "bos_token", "eos": "eos_token", "unk": "unk_token", "pad": "pad_token"}


def save_tokenizer_config(tokenizer: Any, folder: str | os.PathLike) -> None:
    """Write the tokenizer's chat template (if any) and special-token roles to ``folder``."""
    config = {key: tokenizer.special_tokens[role] for role, key in ROLE_KEYS.items()
              if tokenizer.special_tokens.get(role) is not None}
    if getattr(tokenizer, "chat_template", None):
        config["chat_template"] = tokenizer.chat_template
    if config:
        write_json(Path(folder) / TOKENIZER_CONFIG_FILE, config)


def apply_tokenizer_config(tokenizer: Any, folder: str | os.PathLike) -> Any:
    """``tokenizer`` with the chat template and the roles of ``folder``'s tokenizer_config.json, when there is
    one (a role names a token of the vocabulary, as a string or Hugging Face's {"content": …})."""
    path = Path(folder) / TOKENIZER_CONFIG_FILE
    if not path.is_file():
        return tokenizer
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc})", "repair or delete it") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path} is not a JSON object", "repair or delete it")
    if config.get("chat_template"):
        tokenizer.chat_template = config["chat_template"]
    for role, key in ROLE_KEYS.items():
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            tokenizer.special_tokens[role] = token
    return tokenizer
