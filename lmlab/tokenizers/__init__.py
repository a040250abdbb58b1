"""lmlab.tokenizers: the text ⇄ ids boundary (protocol, trainers, tokenizer.json I/O).

``load(name_or_path)`` reads a ``tokenizer.json`` file, a model directory holding one, a
GGUF file's tokenizer, or a registered name. New tokenizer model types register a reader
in ``READERS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..core.errors import InputError, ModelError
from ..core.registry import Registry
from .base import TOKENIZER_FILE, BatchEncoding, Tokenizer, TrainableTokenizer
from .from_gguf import minilm_tokenizer_json, smollm2_gguf, tokenizer_from_gguf
from .pipeline import SubwordTokenizer
from .wordlevel import WordLevelTokenizer, split_words

#: tokenizer.json ``model.type`` → reader of the whole JSON object
READERS: dict[str, Callable[[dict], Tokenizer]] = {
    "WordLevel": WordLevelTokenizer.from_hf_json, "BPE": SubwordTokenizer.from_hf_json,
    "WordPiece": SubwordTokenizer.from_hf_json, "Unigram": SubwordTokenizer.from_hf_json}

#: built-in names → zero-argument loaders (e.g. tokenizers shipped inside model packages)
NAMED: Registry[Callable[[], Tokenizer]] = Registry("tokenizer")
NAMED.register("smollm2-135m-instruct", lambda: tokenizer_from_gguf(smollm2_gguf()))
NAMED.register("all-minilm-l6-v2", lambda: load(minilm_tokenizer_json()))


def from_hf_json(data: dict) -> Tokenizer:
    """Build a tokenizer from a parsed ``tokenizer.json`` object."""
    model_type = (data.get("model") or {}).get("type")
    reader = READERS.get(model_type)
    if reader is None:
        raise ModelError(f"tokenizer.json model type {model_type!r} is not supported",
                         f"supported: {', '.join(sorted(READERS))}")
    return reader(data)


def load(name_or_path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json``, a directory holding one, a ``.gguf`` file,
    or a built-in name."""
    path = Path(name_or_path)
    if path.suffix == ".gguf" and path.is_file():
        return tokenizer_from_gguf(path)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / TOKENIZER_FILE).exists() and len(ggufs) == 1:
            return tokenizer_from_gguf(ggufs[0])
        path = path / TOKENIZER_FILE
        if not path.exists():
            raise InputError(f"no {TOKENIZER_FILE} in directory {path.parent}",
                             "pass the tokenizer.json file or a model directory that has one (or one .gguf)")
    if not path.exists():
        if str(name_or_path) in NAMED:
            return NAMED.get(str(name_or_path))()
        raise InputError(f"tokenizer not found: {name_or_path}",
                         f"pass a tokenizer.json path, a model directory, or one of: "
                         f"{', '.join(NAMED) or '(no built-in names yet)'}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not a valid tokenizer.json ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a valid tokenizer.json (top level is not an object)")
    return from_hf_json(data)


__all__ = ["NAMED", "READERS", "TOKENIZER_FILE", "BatchEncoding", "SubwordTokenizer", "Tokenizer",
           "TrainableTokenizer", "WordLevelTokenizer", "from_hf_json", "load", "split_words",
           "minilm_tokenizer_json", "smollm2_gguf", "tokenizer_from_gguf"]
