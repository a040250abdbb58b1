"""Hugging Face model directories ⇄ lmlab: ``config.json`` + ``*.safetensors`` (sharded or not).

``HF_ARCHITECTURES`` maps a Hugging Face ``model_type`` to an ``Architecture``: how its
config becomes an lmlab config, and how its tensor names (and layouts) become lmlab's —
LLaMA-family (llama, mistral) and GPT-2 into ``TransformerLM``, and BERT (``BertModel``,
``BertForMaskedLM``) into the ``bert`` preset. ``export_hf_dir`` writes a directory ``transformers`` loads.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.device import resolve_dtype
from ..core.errors import InputError, ModelError
from ..core.io import atomic_path, write_json
from ..tokenizers.tokenizer_config import apply_tokenizer_config, save_tokenizer_config

INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class Architecture:
    """One Hugging Face family: config → lmlab config, and HF tensors → lmlab state dict."""

    config: Callable[[dict], dict]
    tensors: Callable[[dict[str, torch.Tensor], dict], dict[str, torch.Tensor]]
    build: Callable[[dict, dict], Any]  # (lmlab config, special ids) → empty model


def _require(cfg: dict, key: str) -> Any:
    if key not in cfg:
        raise ModelError(f"config.json has no {key!r}", "is this a complete Hugging Face model directory?")
    return cfg[key]


# --- LLaMA family ------------------------------------------------------------------------------
def llama_config(cfg: dict) -> dict:
    from .config import PRESETS

    d, heads = _require(cfg, "hidden_size"), _require(cfg, "num_attention_heads")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ModelError(f"hidden_act {cfg['hidden_act']!r} is not supported for LLaMA", "lmlab reads silu")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ModelError("LLaMA with attention or MLP biases is not supported")
    if cfg.get("head_dim") not in (None, d // heads):
        raise ModelError(f"head_dim {cfg['head_dim']} ≠ hidden_size / heads is not supported")
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}  # (transformers ≥ 5 writes the latter)
    kind = scaling.get("rope_type", scaling.get("type", "linear")) if scaling else None
    if kind not in (None, "linear", "default", "yarn"):
        raise ModelError(f"RoPE scaling {kind!r} is not supported", "lmlab supports linear and YaRN scaling")
    if kind == "yarn" and any(scaling.get(k) not in (None, v) for k, v in
                              (("beta_fast", 32), ("beta_slow", 1), ("attention_factor", None), ("mscale", None),
                               ("mscale_all_dim", None), ("truncate", True))):
        raise ModelError("YaRN with non-default beta_fast/beta_slow/attention factor is not supported",
                         "lmlab reads the paper's YaRN (beta_fast 32, beta_slow 1, 0.1·ln(factor) + 1)")
    yarn = {"rope_scaling_type": "yarn", "rope_original_context": int(_require(scaling, "original_max_position_embeddings"))
            } if kind == "yarn" else {}
    return {**PRESETS["llama"], "vocab_size": _require(cfg, "vocab_size"), "d_model": d,
            "n_layers": _require(cfg, "num_hidden_layers"), "n_heads": heads,
            "n_kv_heads": cfg.get("num_key_value_heads") or heads, "d_ff": _require(cfg, "intermediate_size"),
            "context_length": cfg.get("max_position_embeddings", 2048), "norm_eps": cfg.get("rms_norm_eps", 1e-6),
            "rope_theta": float(cfg.get("rope_theta", scaling.get("rope_theta", 10000.0))),
            "rope_scaling": float(scaling.get("factor", 1.0)) if kind in ("linear", "yarn") else 1.0,
            "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)), **yarn}


_LLAMA_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
                "self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj",
                "self_attn.v_proj": "attn.v_proj", "self_attn.o_proj": "attn.o_proj",
                "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up", "mlp.down_proj": "mlp.down"}
_LLAMA_GLOBAL = {"model.embed_tokens.weight": "embed.weight", "model.norm.weight": "final_norm.weight",
                 "lm_head.weight": "head.weight"}
_LAYER = re.compile(r"^(?:model\.layers|transformer\.h|h)\.(\d+)\.(.+)\.(weight|bias)$")


def llama_tensors(hf: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in hf.items():
        if name in _LLAMA_GLOBAL:
            out[_LLAMA_GLOBAL[name]] = t
            continue
        m = _LAYER.match(name)
        if m and m.group(2) in _LLAMA_LAYER:
            out[f"blocks.{m.group(1)}.{_LLAMA_LAYER[m.group(2)]}.{m.group(3)}"] = t
        elif not name.endswith("rotary_emb.inv_freq"):
            raise ModelError(f"tensor {name!r} has no place in the llama preset")
    return out


def llama_export(state: dict[str, torch.Tensor], cfg: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    inverse = {v: k for k, v in _LLAMA_GLOBAL.items()}
    layer = {v: k for k, v in _LLAMA_LAYER.items()}
    tensors = {}
    for name, t in state.items():
        if name in inverse:
            tensors[inverse[name]] = t
        else:
            _, i, rest = name.split(".", 2)
            part, _, kind = rest.rpartition(".")
            tensors[f"model.layers.{i}.{layer[part]}.{kind}"] = t
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg["vocab_size"],
              "hidden_size": cfg["d_model"], "num_hidden_layers": cfg["n_layers"],
              "num_attention_heads": cfg["n_heads"], "num_key_value_heads": cfg["n_kv_heads"],
              "intermediate_size": cfg["d_ff"], "max_position_embeddings": cfg["context_length"],
              "rms_norm_eps": cfg["norm_eps"], "rope_theta": cfg["rope_theta"], "hidden_act": "silu",
              "tie_word_embeddings": cfg["tie_embeddings"], "attention_bias": False, "mlp_bias": False,
              "rope_scaling": None if cfg["rope_scaling"] == 1.0 else {"rope_type": cfg["rope_scaling_type"],
                                                                       "factor": cfg["rope_scaling"]}}
    if cfg["rope_scaling_type"] == "yarn":
        config["rope_scaling"]["original_max_position_embeddings"] = cfg["rope_original_context"]
    return config, tensors


# --- GPT-2 -------------------------------------------------------------------------------------
_GPT2_ACT = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def gpt2_config(cfg: dict) -> dict:
    from .config import PRESETS

    act = cfg.get("activation_function", "gelu_new")
    if act not in _GPT2_ACT:
        raise ModelError(f"GPT-2 activation {act!r} is not supported", f"lmlab reads {', '.join(_GPT2_ACT)}")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn") \
            or cfg.get("scale_attn_weights") is False:
        raise ModelError("GPT-2 attention-scaling variants are not supported")
    d = _require(cfg, "n_embd")
    return {**PRESETS["gpt2"], "vocab_size": _require(cfg, "vocab_size"), "d_model": d,
            "n_layers": _require(cfg, "n_layer"), "n_heads": _require(cfg, "n_head"),
            "d_ff": cfg.get("n_inner") or 4 * d, "context_length": _require(cfg, "n_positions"),
            "norm_eps": cfg.get("layer_norm_epsilon", 1e-5), "activation": _GPT2_ACT[act],
            "tie_embeddings": bool(cfg.get("tie_word_embeddings", True))}


_GPT2_LAYER = {"ln_1": "attn_norm", "ln_2": "mlp_norm", "attn.c_proj": "attn.o_proj", "mlp.c_fc": "mlp.up",
               "mlp.c_proj": "mlp.down"}
_GPT2_GLOBAL = {"wte.weight": "embed.weight", "wpe.weight": "positions.weight", "ln_f.weight": "final_norm.weight",
                "ln_f.bias": "final_norm.bias"}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # stored [in, out]: transposed here


def gpt2_tensors(hf: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in hf.items():
        short = name.removeprefix("transformer.")
        if short in _GPT2_GLOBAL:
            out[_GPT2_GLOBAL[short]] = t
            continue
        if name == "lm_head.weight":
            out["head.weight"] = t
            continue
        m = _LAYER.match(name)
        if m is None:
            if short.endswith((".attn.bias", ".attn.masked_bias")):  # old causal-mask buffers
                continue
            raise ModelError(f"tensor {name!r} has no place in the gpt2 preset")
        i, part, kind = m.groups()
        if part in _CONV1D and kind == "weight":
            t = t.t()
        if part == "attn.c_attn":
            for proj, piece in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0), strict=True):
                out[f"blocks.{i}.attn.{proj}.{kind}"] = piece.contiguous()
        elif part in _GPT2_LAYER:
            out[f"blocks.{i}.{_GPT2_LAYER[part]}.{kind}"] = t.contiguous()
        else:
            raise ModelError(f"tensor {name!r} has no place in the gpt2 preset")
    return out


def gpt2_export(state: dict[str, torch.Tensor], cfg: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    inverse = {v: k for k, v in _GPT2_GLOBAL.items()}
    layer = {v: k for k, v in _GPT2_LAYER.items()}
    tensors: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name in inverse:
            tensors[f"transformer.{inverse[name]}"] = t
            continue
        if name == "head.weight":
            tensors["lm_head.weight"] = t
            continue
        _, i, rest = name.split(".", 2)
        part, _, kind = rest.rpartition(".")
        if part in ("attn.k_proj", "attn.v_proj"):
            continue
        if part == "attn.q_proj":
            parts = [state[f"blocks.{i}.attn.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")]
            hf_part, t = "attn.c_attn", torch.cat(parts, dim=0)
        else:
            hf_part = layer[part]
        tensors[f"transformer.h.{i}.{hf_part}.{kind}"] = t.t().contiguous() if kind == "weight" else t
    act = {v: k for k, v in _GPT2_ACT.items() if k != "gelu_pytorch_tanh"}[cfg["activation"]]
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg["vocab_size"],
              "n_embd": cfg["d_model"], "n_layer": cfg["n_layers"], "n_head": cfg["n_heads"],
              "n_inner": cfg["d_ff"], "n_positions": cfg["context_length"], "layer_norm_epsilon": cfg["norm_eps"],
              "activation_function": act, "tie_word_embeddings": cfg["tie_embeddings"]}
    return config, tensors


# --- BERT (the encoder preset; names in lmlab.models.encoder) ------------------------------------
def bert_config(cfg: dict) -> dict:
    from .encoder import bert_config as config_of

    return config_of(cfg).to_dict()


def bert_tensors(hf: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    from .encoder import bert_tensors as tensors_of

    return tensors_of(hf, cfg)


def _transformer(config: dict, special: dict) -> Any:
    from .transformer import TransformerLM

    return TransformerLM(config, special)


#: Hugging Face ``model_type`` → how to read it (BERT-style encoders register here too)
HF_ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(llama_config, llama_tensors, _transformer),
    "mistral": Architecture(llama_config, llama_tensors, _transformer),
    "gpt2": Architecture(gpt2_config, gpt2_tensors, _transformer),
    "bert": Architecture(bert_config, bert_tensors, _transformer),
}
#: lmlab preset signature → exporter, for ``export_hf_dir``
_EXPORTERS = {"rope": llama_export, "learned": gpt2_export}


def is_hf_dir(path: str | os.PathLike) -> bool:
    """True for a directory whose config.json names a Hugging Face family lmlab reads."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") in HF_ARCHITECTURES
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def read_safetensors(root: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a directory: ``model.safetensors``, or the shards its index lists."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = root / INDEX_FILE
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        shards = [p.name for p in sorted(root.glob("*.safetensors"))]
    if not shards:
        raise ModelError(f"{root} has no .safetensors weights", "only safetensors are read (never pickles)")
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        try:
            tensors.update(load_file(str(root / shard)))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{root / shard} is not a readable safetensors file ({exc})",
                             "the file may be truncated or missing") from None
    return tensors


def load_hf_dir(path: str | os.PathLike, dtype: str | torch.dtype = "float32") -> tuple[Any, Any]:
    """(lmlab model, tokenizer or None) from a Hugging Face model directory."""
    from .. import tokenizers

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"model directory not found: {root}", "pass a Hugging Face model directory")
    hf_cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
    kind = hf_cfg.get("model_type")
    if kind not in HF_ARCHITECTURES:
        raise ModelError(f"Hugging Face model_type {kind!r} is not supported",
                         f"lmlab reads {', '.join(sorted(HF_ARCHITECTURES))}")
    arch = HF_ARCHITECTURES[kind]
    config = arch.config(hf_cfg)
    tensors = arch.tensors(read_safetensors(root), config)
    if config.get("tie_embeddings") and "head.weight" in tensors and "embed.weight" in tensors \
            and not torch.equal(tensors["head.weight"], tensors["embed.weight"]):
        raise ModelError("config.json ties the embeddings but lm_head differs from them")
    tensors.pop("head.weight", None) if config.get("tie_embeddings") else None
    special = {f"{role}_id": hf_cfg.get(f"{role}_token_id") for role in ("bos", "eos", "pad")}
    special = {k: (v[0] if isinstance(v, list) else v) for k, v in special.items()}
    lm = arch.build(config, special)
    lm = type(lm).from_state({"model_type": lm.model_type, **config, **special}, tensors)
    lm = lm.to(resolve_dtype(dtype))
    tokenizer = tokenizers.load(root) if (root / tokenizers.TOKENIZER_FILE).exists() else None
    if tokenizer is not None:
        apply_tokenizer_config(tokenizer, root)
    return lm, tokenizer


def export_hf_dir(lm: Any, path: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write ``lm`` (a llama- or gpt2-preset ``TransformerLM``) as a directory ``transformers`` loads."""
    from safetensors.torch import save_file

    cfg = lm.config.to_dict()
    exporter = _EXPORTERS.get(cfg["positions"])
    if exporter is None or cfg["score"] != "scaled_dot" or cfg["norm_position"] != "pre":
        raise ModelError("only llama- and gpt2-preset transformers export to Hugging Face",
                         "save it as an lmlab model directory instead")
    if cfg["attention"] != "full" or cfg["memory_length"] or cfg["rope_scaling_type"] == "ntk":
        raise ModelError(f"this model's attention={cfg['attention']!r}, memory_length={cfg['memory_length']}, "
                         f"rope_scaling_type={cfg['rope_scaling_type']!r} have no transformers LLaMA/GPT-2 equivalent",
                         "save it as an lmlab model directory instead")
    state = {k: v.detach().cpu().contiguous() for k, v in lm.state_dict().items()}
    if cfg["tie_embeddings"]:
        state.pop("head.weight", None)
    hf_cfg, tensors = exporter(state, cfg)
    hf_cfg.update({"bos_token_id": lm.bos_id, "eos_token_id": lm.eos_id, "pad_token_id": lm.pad_id,
                   "torch_dtype": str(lm.embed.weight.dtype).removeprefix("torch.")})
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(out)
        save_tokenizer_config(tokenizer, out)
    write_json(out / "config.json", hf_cfg)
    return out
