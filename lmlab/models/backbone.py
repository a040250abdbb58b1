"""A backbone for a head: a pretrained transformer that gives hidden states, and its tokenizer.

Classifiers (``lmlab.classify``) and reward models (``lmlab.align``) put a small head on the
hidden states of an encoder (all-MiniLM-L6-v2, a Hugging Face BERT directory) or a decoder (an
lmlab model directory, a named model such as ``smollm2-135m-instruct``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import ModelError
from ..embeddings.sentence import MINILM_NAMES
from .directory import load_model
from .encoder import load_hf_bert, minilm_dir


def load_backbone(backbone: str | os.PathLike | tuple) -> tuple[nn.Module, Any]:
    """(model with ``hidden_states``, tokenizer) from a name, a directory, or an in-memory pair."""
    from ..tokenizers import load

    if isinstance(backbone, tuple):
        lm, tokenizer = backbone
    elif str(backbone) in MINILM_NAMES:
        lm, tokenizer = load_hf_bert(minilm_dir()), load(minilm_dir() / "tokenizer.json")
    elif (Path(backbone) / "config.json").exists() and json.loads(
            (Path(backbone) / "config.json").read_text(encoding="utf-8")).get("model_type") == "bert":
        lm, tokenizer = load_hf_bert(backbone), load(Path(backbone) / "tokenizer.json")
    else:
        lm, tokenizer = load_model(backbone)
    if not hasattr(lm, "hidden_states"):
        raise ModelError(f"the backbone {backbone!r} is a {type(lm).__name__}, which gives no hidden states",
                         "fine-tune a transformer: minilm, smollm2-135m-instruct or a transformer model directory")
    if tokenizer is None:
        raise ModelError(f"the backbone {backbone!r} has no tokenizer.json", "save the model with its tokenizer")
    return lm, tokenizer
