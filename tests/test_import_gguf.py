"""GGUF import: SmolLM2 from its GGUF matches transformers reading the same file; bad files fail clearly."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from lmlab.core.errors import LmlabError
from lmlab.models.gguf_import import unpermute_rope

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


def permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf ``permute`` (copied in spirit) to check that we invert it."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permute():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_rope(permute(w, 3), 3), w)
    assert not torch.equal(permute(w, 3), w)


@pytest.fixture(scope="module")
def smollm2():
    from lmlab.models import load_model

    return load_model("smollm2-135m-instruct")


def test_smollm2_named_model_loads(smollm2):
    lm, tok = smollm2
    assert lm.config.n_layers == 30 and lm.config.n_kv_heads == 3 and lm.config.tie_embeddings
    assert lm.head.weight is lm.embed.weight
    assert lm.config.rope_theta == 100000.0
    assert "<|im_start|>" in tok.chat_template
    assert tok.eos_id == 2


def test_smollm2_saved_as_a_directory_scores_as_the_built_in_name(smollm2, tmp_path, no_progress):
    """The directory keeps the tokenizer's roles (tokenizer_config.json), so BOS and EOS are scored alike."""
    from lmlab.data import from_texts
    from lmlab.eval import evaluate_lm
    from lmlab.models import load_model, save_model_dir

    lm, tok = smollm2
    save_model_dir(tmp_path / "smollm2", *lm.to_state(), tokenizer=tok)
    again, tok_again = load_model(tmp_path / "smollm2")
    assert tok_again.special_tokens == tok.special_tokens and tok_again.chat_template == tok.chat_template
    assert (tok_again.start_id, tok_again.eos_id) == (tok.start_id, tok.eos_id) == (1, 2)
    texts = from_texts(PROMPTS)
    ours, theirs = evaluate_lm(again, tok_again, texts), evaluate_lm(lm, tok, texts)
    assert ours.tokens == theirs.tokens and ours.total_logprob == theirs.total_logprob


@pytest.mark.slow
def test_smollm2_matches_transformers(smollm2):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from lmlab.generate import sample
    from lmlab.tokenizers import smollm2_gguf

    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           torch_dtype=torch.float32).eval()
    lm, tok = smollm2
    for text in PROMPTS:
        ids = tok.encode(text)
        with torch.no_grad():
            ours, _ = lm(torch.tensor([ids]))
            theirs = hf(torch.tensor([ids])).logits
        assert (ours - theirs).abs().max().item() <= 1e-4
        mine = sample(lm, ids, greedy=True, max_new_tokens=16, stop_ids=[])[0].ids
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                              pad_token_id=0)
        assert mine == out[0, len(ids):].tolist()


def _tiny_gguf(path, arch: str = "llama", ggml_type: int = 0, truncate: int = 0) -> None:
    """A minimal GGUF v3 file with one 32-value tensor."""
    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x)) + x.encode()
    meta = s("general.architecture") + struct.pack("<I", 8) + s(arch)
    info = s("token_embd.weight") + struct.pack("<I", 1) + struct.pack("<Q", 32) + struct.pack("<I", ggml_type) \
        + struct.pack("<Q", 0)
    head = b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 1) + struct.pack("<Q", 1) + meta + info
    head += b"\0" * (-len(head) % 32)
    data = np.arange(32, dtype=np.float32).tobytes()
    path.write_bytes((head + data)[: len(head + data) - truncate])


def test_unsupported_architecture_is_named(tmp_path):
    from lmlab.models.gguf_import import load_gguf

    _tiny_gguf(tmp_path / "m.gguf", arch="mamba")
    with pytest.raises(LmlabError, match="mamba"):
        load_gguf(tmp_path / "m.gguf")


def test_unsupported_quant_type_is_named(tmp_path):
    from lmlab.formats.gguf import read_gguf
    from lmlab.models.gguf_import import read_tensor

    _tiny_gguf(tmp_path / "m.gguf", ggml_type=16)  # IQ2_XXS
    with pytest.raises(LmlabError, match="IQ2_XXS"):
        read_tensor(read_gguf(tmp_path / "m.gguf"), "token_embd.weight")


def test_truncated_file_is_reported(tmp_path):
    from lmlab.formats.gguf import read_gguf
    from lmlab.models.gguf_import import read_tensor

    _tiny_gguf(tmp_path / "m.gguf", truncate=8)
    with pytest.raises(LmlabError, match="truncated"):
        read_tensor(read_gguf(tmp_path / "m.gguf"), "token_embd.weight")
    (tmp_path / "h.gguf").write_bytes((tmp_path / "m.gguf").read_bytes()[:40])
    with pytest.raises(LmlabError, match="not a valid GGUF"):
        read_gguf(tmp_path / "h.gguf")
