"""GGUF round trip with llama.cpp (``llama-cpp-python``, a bench peer that CI does not install: these
tests skip without it). A file lmlab writes loads in llama.cpp and gives lmlab's logits on the
same (dequantized) weights; llama.cpp's own quantizer (``llama_model_quantize``) applied to lmlab's
F16 export gives Q8_0/Q4_0/Q4_K_M files that lmlab loads (as floats and kept quantized) with
llama.cpp's logits.

Tolerances, relative to the largest |logit|: F16 1e-3 (llama.cpp rounds the activations to float16
for an F16 matmul); quantized 2e-2 (its quantized dot products round the activations to 8 bits per
block of 32, and lmlab's kept-quantized kernels take bf16/fp16 inputs). Measured on these models:
F16 2e-4, quantized 4e-3 to 6e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.formats.gguf import read_gguf
from lmlab.models.config import TransformerConfig
from lmlab.models.gguf_export import export_gguf
from lmlab.models.gguf_import import load_gguf
from lmlab.models.quantized import QuantLinear
from lmlab.models.transformer import TransformerLM

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (bench extra) is not installed")

TEXT = "The quick brown fox jumps over the lazy dog, and the capital of France is"


@pytest.fixture(scope="module")
def tokenizer():
    from lmlab.tokenizers import smollm2_gguf, tokenizer_from_gguf

    path = smollm2_gguf()
    tok = tokenizer_from_gguf(path)
    tok.chat_template = read_gguf(path).get("tokenizer.chat_template")
    return tok


def tiny_llama(tok, d_model: int, d_ff: int) -> TransformerLM:
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=d_model, n_layers=2, n_heads=4,
                                        n_kv_heads=2, d_ff=d_ff, context_length=128, tie_embeddings=True)
    return TransformerLM(cfg, {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                               "unk_id": tok.unk_id}).eval()


def llama_cpp_logits(path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=1, n_threads_batch=1,
                          logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def lmlab_logits(path, ids: list[int], quantized: bool) -> np.ndarray:
    lm, _ = load_gguf(path, quantized=quantized)
    with torch.no_grad():
        return lm(torch.tensor([ids]))[0][0].float().numpy()


def assert_close_logits(ours: np.ndarray, theirs: np.ndarray, rel: float) -> None:
    scale = float(np.abs(theirs).max())
    assert float(np.abs(ours - theirs).max()) < rel * scale
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("kind,rel", [("F16", 1e-3), ("Q8_0", 2e-2), ("Q4_0", 2e-2), ("Q4_1", 2e-2)])
def test_llama_cpp_runs_what_lmlab_writes(tokenizer, tmp_path, kind, rel):
    lm = tiny_llama(tokenizer, 64, 128)
    path = export_gguf(lm, tokenizer, tmp_path / f"m.{kind}.gguf", kind)
    ids = tokenizer.encode(TEXT)
    theirs = llama_cpp_logits(path, ids)
    assert_close_logits(lmlab_logits(path, ids, quantized=False), theirs, rel)
    if kind != "F16":
        assert_close_logits(lmlab_logits(path, ids, quantized=True), theirs, rel)
    # and the tokenizer in the metadata is the one llama.cpp tokenizes with
    vocab = llama_cpp.Llama(model_path=str(path), n_ctx=32, vocab_only=True, verbose=False)
    assert vocab.tokenize(TEXT.encode(), add_bos=False, special=False) == ids
    vocab.close()


@pytest.mark.parametrize("kind,ftype,types", [("Q8_0", 7, {"Q8_0"}), ("Q4_0", 2, {"Q4_0"}),
                                              ("Q4_K_M", 15, {"Q4_K", "Q6_K"})])
def test_lmlab_runs_what_llama_cpp_quantizes(tokenizer, tmp_path, kind, ftype, types):
    lm = tiny_llama(tokenizer, 256, 512)  # rows of 256: Q4_K/Q6_K need whole super-blocks
    f16 = export_gguf(lm, tokenizer, tmp_path / "m.F16.gguf", "F16")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, 1
    out = tmp_path / f"llama.{kind}.gguf"
    assert llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), params) == 0
    written = {info.type_name for info in read_gguf(out).tensors.values()}
    assert types <= written  # the block types under test are really in the file
    ids = tokenizer.encode(TEXT)
    theirs = llama_cpp_logits(out, ids)
    assert_close_logits(lmlab_logits(out, ids, quantized=False), theirs, 2e-2)
    kept, _ = load_gguf(out, quantized=True)
    assert isinstance(kept.blocks[0].mlp.up, QuantLinear)
    assert_close_logits(lmlab_logits(out, ids, quantized=True), theirs, 2e-2)
