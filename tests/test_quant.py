"""Weight-only int8: exact per-row quantisation, the packed kernel against plain dequantised
maths, a quantised transformer that stays close to the float one, the engine and the CLI flag."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.generate.engine import Engine, Request
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.quant import Int8Linear, dequantize_int8, quantize_int8, quantize_model
from lmlab.tokenizers import WordLevelTokenizer

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!"


def make(vocab: int = 40, d_model: int = 32, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=vocab, d_model=d_model, n_layers=2,
                                                     n_heads=4, n_kv_heads=2, context_length=64)).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init, so greedy paths are not ties
        lm.head.weight.mul_(40)
    return lm


def test_quantize_int8_by_hand():
    q, scale = quantize_int8(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.3, 0.1, -0.2]]))
    # row 0: s = 2/127; 1/s = 63.5 rounds to even 64, 0.5/s = 31.75 -> 32; a zero row stays zero
    assert q.tolist() == [[64, -127, 32], [0, 0, 0], [127, 42, -85]]
    assert scale[0].item() == pytest.approx(2 / 127) and scale[2].item() == pytest.approx(0.3 / 127)


def test_dequantised_error_is_at_most_half_a_step():
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert ((dequantize_int8(q, scale) - w).abs() <= scale[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("k", [32, 24])  # 32: the packed CPU kernel; 24 (not a multiple of 16): dequantised matmul
@pytest.mark.parametrize("compute", [torch.bfloat16, None])
def test_int8_linear_matches_dequantised_linear(k, compute):
    gen = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(k, 20, bias=True)
    torch.nn.init.normal_(linear.bias, generator=gen)
    layer = Int8Linear.from_linear(linear, compute)
    assert layer.packed == (k % 16 == 0)
    x = torch.randn(2, 3, k, generator=gen)
    ref = F.linear(x, dequantize_int8(layer.weight_int8, layer.scale), linear.bias)
    out = layer(x)
    assert out.shape == (2, 3, 20) and out.dtype == torch.float32
    tol = 0.05 if compute == torch.bfloat16 else 1e-4  # bf16 inputs carry 8 bits of mantissa
    assert (out - ref).abs().max() < tol * ref.abs().max()


def test_quantized_model_stays_close_to_float():
    lm, q = make(), quantize_model(make())
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    assert sum(isinstance(m, Int8Linear) for m in q.modules()) == 2 * 7 + 1  # q k v o gate up down per layer, head
    assert q.embed.weight.dtype == torch.float32 and q.head.weight_int8.dtype == torch.int8
    ids = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = lm(ids)[0].log_softmax(-1), q(ids)[0].log_softmax(-1)
    assert (a.exp() - b.exp()).abs().sum(-1).max() < 0.1  # total variation of the next-token distributions
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


def test_quantized_engine_batched_equals_one_by_one_and_cli(capsys, tmp_path):
    tok = WordLevelTokenizer("char").train([TEXT])
    q = quantize_model(make(tok.vocab_size, d_model=64), dtype="bfloat16")
    engine = Engine(q, tok, greedy=True)
    requests = [Request(tok.encode(p), max_new_tokens=8, stop_ids=[]) for p in ("the quick", "a")]
    batched = engine.generate(requests)
    assert [o.ids for o in batched] == [engine.generate([r])[0].ids for r in requests]

    from lmlab.cli import main
    from lmlab.models import save_model_dir

    save_model_dir(tmp_path / "m", *make(tok.vocab_size).to_state(), tokenizer=tok)
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "the", "--greedy", "--quant", "int8",
                 "--max-new-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) <= 5 and "decode_tokens_per_s" in out


def test_bad_quantisation_is_one_clear_error():
    with pytest.raises(LmlabError, match="scheme"):
        quantize_model(make(), "int3")
    q = quantize_model(make())
    with pytest.raises(LmlabError, match="already quantised"):
        quantize_model(q)


def test_chat_cli_quantises(capsys, monkeypatch, tmp_path):
    import io

    from lmlab.cli import main

    tok = WordLevelTokenizer("char").train([TEXT + "<>|_/"])
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}|{{ m['content'] }}>{% endfor %}" \
        "{% if add_generation_prompt %}<assistant|{% endif %}"
    lm = make(tok.vocab_size)
    monkeypatch.setattr("lmlab.models.load_model", lambda *a, **k: (lm, tok))
    monkeypatch.setattr("sys.stdin", io.StringIO("the fox\n/settings\n"))
    assert main(["chat", "--model", str(tmp_path), "--greedy", "--quant", "int8", "--max-new-tokens", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert any(isinstance(m, Int8Linear) for m in lm.modules())
    assert len(out["turns"]) == 1 and out["turns"][0]["tokens"] <= 4
