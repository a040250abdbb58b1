"""Hugging Face safetensors directories: random models saved by transformers load with the same
outputs (GPT-2, LLaMA with GQA, sharded); lmlab models export to directories transformers loads."""

from __future__ import annotations

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.models import load_model
from lmlab.models.config import TransformerConfig
from lmlab.models.hf_import import export_hf_dir
from lmlab.models.transformer import TransformerLM

transformers = pytest.importorskip("transformers")


IDS = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(0))


def _same_logits(ours, hf) -> float:
    with torch.no_grad():
        return (ours(IDS)[0] - hf(IDS).logits).abs().max().item()


def test_gpt2_saved_by_transformers_loads_with_same_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    lm, tok = load_model(tmp_path)
    assert tok is None and lm.config.activation == "gelu_tanh"
    assert _same_logits(lm, hf) < 1e-4


@pytest.mark.parametrize("tied", [False, True])
def test_llama_saved_by_transformers_sharded_loads_with_same_outputs(tmp_path, tied):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rope_theta=5000.0, tie_word_embeddings=tied)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    lm, _ = load_model(tmp_path)
    assert lm.config.n_kv_heads == 2 and lm.config.tie_embeddings == tied
    assert _same_logits(lm, hf) < 1e-4


@pytest.mark.parametrize("preset", ["llama", "gpt2"])
def test_export_loads_in_transformers(tmp_path, preset):
    torch.manual_seed(0)
    kw = dict(n_kv_heads=2) if preset == "llama" else dict(activation="gelu_tanh")
    lm = TransformerLM(TransformerConfig.from_preset(preset, vocab_size=97, d_model=32, n_layers=2, n_heads=4,
                                                     context_length=32, **kw)).eval()
    export_hf_dir(lm, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert _same_logits(lm, hf) < 1e-4
    back, _ = load_model(tmp_path)
    assert _same_logits(back, hf) < 1e-4


def test_unsupported_family_and_missing_weights(tmp_path):
    from lmlab.models.hf_import import load_hf_dir

    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(LmlabError, match="t5"):
        load_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2, '
                                          '"n_positions": 8, "vocab_size": 5}')
    with pytest.raises(LmlabError, match="no .safetensors"):
        load_model(tmp_path)


def test_export_keeps_tokenizer_and_chat_template(tmp_path):
    from lmlab.tokenizers import WordLevelTokenizer

    tok = WordLevelTokenizer("char").train(["hello world"])
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=16, n_layers=1,
                                                     n_heads=2, context_length=16)).eval()
    export_hf_dir(lm, tmp_path, tokenizer=tok)
    back, tok2 = load_model(tmp_path)
    assert tok2.encode("hello") == tok.encode("hello") and tok2.chat_template == tok.chat_template
    ids = torch.tensor([tok.encode("hello")])
    assert torch.allclose(back(ids)[0], lm(ids)[0], atol=1e-6)



def test_special_token_roles_travel_in_tokenizer_config(tmp_path):
    """tokenizer.json alone cannot say which token is BOS or EOS (here: no post-processor names one);
    tokenizer_config.json — Hugging Face's place for it, a role as a string or as {"content": ...} — does."""
    import json

    from lmlab import tokenizers
    from lmlab.models import save_model_dir
    from lmlab.tokenizers.trainers import train_tokenizer

    tok = train_tokenizer("byte-bpe", ["hello world, hello there"] * 5, 300, add_bos_eos=False)
    tok.special_tokens = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": "<|endoftext|>"}
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=16, n_layers=1,
                                                     n_heads=2, context_length=16))
    folder = save_model_dir(tmp_path / "m", *lm.to_state(), tokenizer=tok)
    assert tokenizers.load(folder).special_tokens == {}  # what tokenizer.json alone gives
    _, back = load_model(folder)
    assert back.special_tokens == tok.special_tokens and (back.bos_id, back.eos_id, back.pad_id) == (0, 0, 0)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config = {k: {"content": v, "special": True} for k, v in config.items()}  # the form transformers writes
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    _, back = load_model(folder)
    assert back.special_tokens == tok.special_tokens
