"""n-gram models on disk: an ARPA file (``*.arpa``) or a model directory (safetensors + JSON).

The model directory is the compact binary format: numpy arrays in ``model.safetensors``
(memory-mappable), the JSON header in ``config.json`` and the vocabulary in
``tokenizer.json``; it loads in a fraction of the time an ARPA file takes to parse.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InputError, ModelError
from .arpa import read_arpa, write_arpa
from .model import NgramLM


def is_arpa_path(path: str | os.PathLike) -> bool:
    """True for a path that names (or will name) an ARPA file rather than a model directory."""
    p = Path(path)
    return p.suffix == ".arpa" or (p.is_file() and p.suffix != ".json")


def load_ngram(path: str | os.PathLike):
    """(NgramLM, tokenizer) from an ARPA file or an n-gram model directory."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"model not found: {p}", "pass an .arpa file or a model directory made by `lmlab ngram train`")
    if is_arpa_path(p):
        return read_arpa(p)
    from ..models import load_model  # torch: only the model directory needs it

    lm, tokenizer = load_model(p)
    if not isinstance(lm, NgramLM):
        raise ModelError(f"{p} holds a {type(lm).__name__}, not an n-gram model", "pass an n-gram model directory")
    if tokenizer is None:
        raise ModelError(f"{p} has no tokenizer.json", "save the model again with its tokenizer")
    return lm, tokenizer


def save_ngram(lm: NgramLM, tokenizer, path: str | os.PathLike) -> str:
    """Save as ARPA when ``path`` ends in .arpa, else as a model directory; returns the format used."""
    if is_arpa_path(path):
        write_arpa(lm, tokenizer, path)
        return "arpa"
    from ..models import save_model_dir  # torch: only the model directory needs it

    save_model_dir(path, *lm.to_state(), tokenizer=tokenizer)
    return "directory"
