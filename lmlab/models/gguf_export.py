"""``TransformerLM`` (LLaMA family) → a GGUF file llama.cpp runs: F16, Q8_0, Q4_0 or Q4_1 weights,
the tokenizer (byte-level BPE: tokens, token types, merges) and the chat template in the metadata.

The inverse of ``gguf_import``: tensor names map back to llama.cpp's, and the q/k rows get
llama.cpp's RoPE permutation (halves → interleaved pairs). A quantized lmlab model is written
from its dequantized weights (input scales folded in), re-quantized to the chosen type by
``ggml_quants.quantize`` (bit-identical to ggml's reference quantizers). Norm weights stay F32;
a matrix whose rows are not whole blocks is written as F16.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_choice
from ..formats.ggml_quants import BLOCK, quantize
from ..formats.gguf import write_gguf
from .gguf_import import LAYER_NAMES

EXPORT_TYPES = ("F16", "Q8_0", "Q4_0", "Q4_1")
#: ggml's ``general.file_type`` (llama_ftype) of each export type: all-F16, mostly Q8_0 / Q4_0 / Q4_1
FILE_TYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_1": 3}
_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER = 1, 3, 4


def permute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's ``permute`` of q/k rows (per head: two halves → interleaved pairs); undoes ``unpermute_rope``."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def float_weight(module: torch.nn.Module, name: str = "layer") -> torch.Tensor:
    """The float32 weight a linear layer (plain or quantized) multiplies its input by."""
    from .quantized import QuantLinear

    if not isinstance(module, torch.nn.Linear | QuantLinear):  # e.g. a LoRA wrapper: its update is not a weight
        raise ConfigError(f"{name} is a {type(module).__name__}, which a GGUF file cannot hold",
                          "merge the adapters into the weights first (lmlab.peft.merging.merge_and_unload)")
    if isinstance(module, QuantLinear):
        if module.act_bits is not None:
            raise ConfigError("a model with quantized activations (SmoothQuant W8A8) cannot be written to GGUF",
                              "export the float model or a weight-only quantized one")
        return module.dequantized_weight()
    return module.weight.detach().float()


def tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    """GGUF ``tokenizer.ggml.*`` keys of a byte-level BPE tokenizer (and its chat template)."""
    hf = tokenizer.to_hf_json()
    model = hf.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in str(hf.get("pre_tokenizer")):
        raise ModelError("only byte-level BPE tokenizers can be written to GGUF (llama.cpp's 'gpt2' model)",
                         "export a model with a GPT-2 style tokenizer")
    added = {int(t["id"]): t for t in hf.get("added_tokens", [])}
    size = tokenizer.vocab_size
    tokens = [tokenizer.id_to_token(i) for i in range(size)]
    types = np.array([(_TOKEN_CONTROL if added[i].get("special") else _TOKEN_USER) if i in added else _TOKEN_NORMAL
                      for i in range(size)], dtype=np.int32)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    meta: dict[str, Any] = {"tokenizer.ggml.model": "gpt2",
                            "tokenizer.ggml.pre": getattr(tokenizer, "gguf_pre", None) or "smollm",
                            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                            "tokenizer.ggml.merges": merges, "tokenizer.ggml.add_bos_token": False,
                            "tokenizer.ggml.add_space_prefix": False}
    for role, key in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"), ("unk_id", "unknown_token_id"),
                      ("pad_id", "padding_token_id")):
        if getattr(tokenizer, role, None) is not None:
            meta[f"tokenizer.ggml.{key}"] = int(getattr(tokenizer, role))
    if getattr(tokenizer, "chat_template", None):
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    return meta


def export_gguf(lm: Any, tokenizer: Any, path: str | os.PathLike, ggml_type: str = "Q8_0",
                name: str = "lmlab model") -> Path:
    """Write ``lm`` (a LLaMA-preset ``TransformerLM``, float or quantized) and its tokenizer as GGUF."""
    check_choice("type", ggml_type, EXPORT_TYPES)
    cfg = lm.config
    wanted = {"norm": "rmsnorm", "norm_position": "pre", "activation": "swiglu", "positions": "rope",
              "bias": False, "causal": True, "moe_experts": 0, "mlm_head": False, "scale_embeddings": False,
              "attention": "full", "memory_length": 0, "rope_scaling_type": "linear", "embedding_size": 0,
              "share_layers": "none"}
    wrong = [f"{k}={getattr(cfg, k)!r}" for k, v in wanted.items() if getattr(cfg, k) != v]
    if wrong:
        raise ConfigError(f"GGUF export writes LLaMA-family models; this one has {', '.join(wrong)}",
                          "export a model built from the llama preset")
    meta: dict[str, Any] = {
        "general.architecture": "llama", "general.name": name, "general.file_type": FILE_TYPES[ggml_type],
        "general.quantization_version": 2, "llama.vocab_size": cfg.vocab_size,
        "llama.context_length": cfg.context_length, "llama.embedding_length": cfg.d_model,
        "llama.block_count": cfg.n_layers, "llama.feed_forward_length": cfg.d_ff,
        "llama.attention.head_count": cfg.n_heads, "llama.attention.head_count_kv": cfg.n_kv_heads,
        "llama.rope.freq_base": float(cfg.rope_theta), "llama.rope.dimension_count": cfg.head_dim,
        "llama.attention.layer_norm_rms_epsilon": float(cfg.norm_eps)}
    if cfg.rope_scaling != 1.0:
        meta.update({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": float(cfg.rope_scaling)})
    meta.update(tokenizer_metadata(tokenizer))
    tensors = []

    def add(gguf_name: str, w: torch.Tensor) -> None:
        w = w.detach().float().contiguous()
        kind = "F32" if w.dim() == 1 else ggml_type
        if kind != "F32" and kind != "F16" and w.shape[-1] % BLOCK[kind][0]:
            kind = "F16"
        tensors.append((gguf_name, tuple(w.shape), kind, quantize(w.numpy(), kind)))

    modules = dict(lm.named_modules())
    params = dict(lm.named_parameters(remove_duplicate=False))
    add("token_embd.weight", lm.embed.weight)
    for i in range(cfg.n_layers):
        for gguf_part, lmlab_part in LAYER_NAMES.items():
            full = f"blocks.{i}.{lmlab_part}"
            if full.endswith("_norm.weight"):
                w = params[full]
            else:
                w = float_weight(modules[full.removesuffix(".weight")], full.removesuffix(".weight"))
            if gguf_part == "attn_q.weight":
                w = permute_rope(w, cfg.n_heads)
            elif gguf_part == "attn_k.weight":
                w = permute_rope(w, cfg.n_kv_heads)
            add(f"blk.{i}.{gguf_part}", w)
    add("output_norm.weight", lm.final_norm.weight)
    if getattr(lm.head, "weight", None) is not lm.embed.weight:  # a quantized head is its own tensor, tied or not
        add("output.weight", float_weight(lm.head, "head"))
    return write_gguf(path, meta, tensors)
