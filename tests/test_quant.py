"""Quantizers and quantized layers: round trips within each format's step, kernels against the
dequantized weight, GGUF codes against ggml's dequantisation, GPTQ against the paper's update
written out directly, whole models close to float and saved/loaded without re-quantizing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.generate.engine import Engine, Request
from lmlab.models.config import TransformerConfig
from lmlab.models.layout import decode_layout
from lmlab.models.quantized import QuantLinear, kernel_for, pack_nibbles, unpack_nibbles
from lmlab.models.transformer import TransformerLM
from lmlab.quant import METHODS, quantize_model
from lmlab.quant.gptq import gptq_codes, hessian
from lmlab.quant.weights import affine_codes, hqq_codes, quantize_affine, quantize_nf4_layer
from lmlab.tokenizers import WordLevelTokenizer

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!"


def make(vocab: int = 40, d_model: int = 64, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=vocab, d_model=d_model, n_layers=2,
                                                     n_heads=4, n_kv_heads=2, d_ff=128, context_length=64)).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init, so greedy paths are not ties
        lm.head.weight.mul_(40)
    return lm


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nibbles_round_trip():
    codes = torch.randint(0, 16, (3, 8), generator=gen())
    assert torch.equal(unpack_nibbles(pack_nibbles(codes)), codes.to(torch.uint8))
    assert pack_nibbles(torch.tensor([[1, 2]])).item() == 0x21  # the even column in the low nibble


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [16, 32, 64])
def test_affine_round_trip_within_half_a_step(bits, symmetric, group):
    w = torch.randn(24, 64, generator=gen(bits + group))
    layer = quantize_affine(w, bits=bits, group_size=group, symmetric=symmetric)
    step = layer.scale.float().abs().repeat_interleave(group, dim=1)
    bound = step / 2
    if bits == 4 and symmetric:  # ggml's Q4_0 rule: −8 on the largest value's side, +7 on the other, so values
        bound = torch.where(w / layer.scale.float().repeat_interleave(group, dim=1) > 7.5, step, bound)  # past 7.5 steps clip
    assert ((layer.dequantize() - w).abs() <= bound * (1 + 1e-3) + 1e-6).all()
    assert layer.storage_bits() / w.numel() == bits + (16 if symmetric else 32) / group


def test_symmetric_int4_uses_all_sixteen_levels_as_ggml_q4_0():
    extreme = torch.tensor([1.0, -2.0, 0.5, -0.25] * 4).reshape(8, 2, 1)  # each block's: a power of two,
    w = (torch.rand(8, 2, 32, generator=gen(5)) * 1.98 - 0.99) * extreme.abs()
    w[:, :, :1] = extreme
    w = w.reshape(8, 64)
    codes, scale, zero = affine_codes(w, 4, 32, True)                      # so float16 rounding of d changes nothing
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize as gguf_quantize  # gguf-py, llama.cpp's own Python reference

    raw = gguf_quantize(w.numpy(), GGMLQuantizationType.Q4_0).reshape(-1, 18)
    d = raw[:, :2].copy().view(np.float16).reshape(8, 2)
    ggml_codes = np.concatenate([raw[:, 2:] & 0x0F, raw[:, 2:] >> 4], axis=1).reshape(8, 2, 32)
    assert zero is None and np.array_equal(scale.numpy(), d)
    assert np.array_equal(codes.numpy(), ggml_codes)
    assert codes.min() == 0 and codes.max() == 15  # the largest value maps to −8, the other side reaches +7


def test_absmax_int8_by_hand_and_per_tensor():
    codes, scale, zero = affine_codes(torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]]), 8, 3, True)
    # s = 2/127; 1/s = 63.5 rounds to even 64; 0.5/s = 31.75 -> 32; codes are offset by 128
    assert (codes.reshape(2, 3).int() - 128).tolist() == [[64, -127, 32], [0, 0, 0]] and zero is None
    assert scale[0, 0].item() == pytest.approx(2 / 127, rel=1e-3)
    layer = quantize_affine(torch.tensor([[1.0, -4.0], [0.5, 2.0]]), per_tensor=True)
    assert torch.equal(layer.scale, torch.full((2, 1), 4 / 127, dtype=torch.float16))


def test_zero_point_uses_the_whole_code_range():
    codes, scale, zero = affine_codes(torch.tensor([[0.0, 1.0, 3.0, 5.0]]), 4, 4, False)
    assert codes.min() == 0 and codes.max() == 15 and scale.item() == pytest.approx(5 / 15, rel=1e-3)
    assert scale.dtype == zero.dtype == torch.float16  # as GGUF stores them: equal groups, equal bits per weight
    assert (scale.float() * codes.float() + zero.float()[:, :, None]).flatten().tolist() == pytest.approx(
        [0, 1, 3, 5], abs=1 / 6)


@pytest.mark.parametrize("bits,group,zero,kernel", [(4, 32, True, "int4pack"), (4, 64, False, "int4pack"),
                                                    (8, 32, False, "int4pack-split"), (8, 32, True, "int4pack-split"),
                                                    (8, 64, False, "int8pack"), (8, 64, True, "int8pack"),
                                                    (8, 16, False, "dequant")])
def test_kernels_match_the_dequantized_weight(bits, group, zero, kernel):
    w = torch.randn(48, 64, generator=gen(1))
    layer = quantize_affine(w, torch.randn(48, generator=gen(2)), bits=bits, group_size=group, symmetric=not zero)
    assert layer.kernel == kernel == kernel_for(bits, group, 64, False)
    x = torch.randn(2, 5, 64, generator=gen(3))
    ref = F.linear(x, layer.dequantize(), layer.bias)
    out = layer(x)
    assert out.shape == (2, 5, 48) and out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.02 * ref.abs().max()  # bf16/fp16 inputs and scales: 8-11 bits of mantissa


def test_nf4_reuses_qlora_code_book():
    from lmlab.peft.nf4 import dequantize_nf4, quantize_nf4

    w = torch.randn(16, 128, generator=gen(4))
    layer = quantize_nf4_layer(w, group_size=64)
    expected = dequantize_nf4(quantize_nf4(w, block_size=64), w.shape, block_size=64)
    assert torch.allclose(layer.dequantize(), expected, atol=1e-6) and layer.kernel == "dequant"


def test_hqq_error_no_worse_than_round_to_nearest():
    w = torch.randn(32, 128, generator=gen(5))
    w[0, 3] = 12.0  # an outlier
    codes, scale, zero = hqq_codes(w, 4, 64)
    hqq = (scale[:, :, None] * codes.float() + zero[:, :, None]).reshape(w.shape)
    rtn = quantize_affine(w, bits=4, group_size=64, symmetric=False).dequantize()
    assert (hqq - w).abs().mean() <= (rtn - w).abs().mean()
    assert scale.dtype == zero.dtype == torch.float16  # stored as the other zero-point forms: 4 + 32/64 bits
    assert METHODS["hqq"].bits == 4 and quantize_model(make(), "hqq").get_submodule("blocks.0.attn.q_proj").storage_bits() \
        / (64 * 64) == 4 + 32 / 64


def direct_gptq(w: torch.Tensor, h: torch.Tensor, bits: int, group: int, damp: float) -> torch.Tensor:
    """The paper's update column by column with the full inverse Hessian (eq. 2-3), no Cholesky, no blocks."""
    w, h = w.double().clone(), h.double().clone()
    h.diagonal().add_(damp * h.diagonal().mean())
    hinv = torch.linalg.inv(h)
    codes = torch.zeros(w.shape)
    k = w.shape[1]
    for q in range(k):
        if q % group == 0:
            _, s, z = affine_codes(w[:, q:q + group].float(), bits, group, False)
            s, z = s[:, 0].double(), z[:, 0].double()
        c = torch.round((w[:, q] - z) / s).clamp(0, 2 ** bits - 1)
        codes[:, q] = c
        err = (w[:, q] - (s * c + z)) / hinv[q, q]
        w[:, q + 1:] -= err[:, None] * hinv[q, q + 1:][None, :]
        hinv = hinv - hinv[:, q:q + 1] @ hinv[q:q + 1, :] / hinv[q, q]  # remove q (OBS)
    return codes


def test_gptq_equals_the_direct_update():
    w = torch.randn(8, 32, generator=gen(6))
    x = torch.randn(200, 32, generator=gen(7)) * torch.linspace(0.2, 3, 32)
    codes, _, _ = gptq_codes(w, hessian(x), bits=4, group_size=16, block_size=8)
    assert (codes.float() != direct_gptq(w, hessian(x), 4, 16, 0.01)).float().mean() < 0.01  # float ties only
    # and it beats round-to-nearest on the layer's output error
    layer_err = lambda c, s, z: ((x @ (s.float().repeat_interleave(16, 1) * c.float()  # noqa: E731
                                       + z.float().repeat_interleave(16, 1)).T - x @ w.T).pow(2).mean())
    g = gptq_codes(w, hessian(x), bits=4, group_size=16)
    r = affine_codes(w, 4, 16, False)
    assert layer_err(*g) < layer_err(r[0].reshape(8, 32), r[1], r[2])


def test_gptq_refuses_a_hessian_that_is_not_positive_definite():
    with pytest.raises(LmlabError, match="not positive definite.*damping"):
        gptq_codes(torch.randn(4, 32), -torch.eye(32), group_size=32, damp=0.0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_stays_close_to_float_and_reloads(method, tmp_path):
    from lmlab.models import load_model, save_model_dir

    lm, q = make(), make()
    calib = torch.randint(0, 40, (4, 32), generator=gen(8))
    quantize_model(q, method, calibration=calib if METHODS[method].calibrated else None)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())
    assert sum(isinstance(m, QuantLinear) for m in q.modules()) == 2 * 7 + 1
    ids = torch.randint(0, 40, (2, 16), generator=gen(9))
    with torch.no_grad():
        a, b = lm(ids)[0].log_softmax(-1), q(ids)[0].log_softmax(-1)
    tv = float((a.exp() - b.exp()).abs().sum(-1).mean() / 2)  # total variation of the next-token distributions
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    eight = METHODS[method].bits == 8
    assert tv < (0.03 if eight else 0.25) and agree > (0.85 if eight else 0.7), (tv, agree)
    save_model_dir(tmp_path / "m", *q.to_state())
    back, _ = load_model(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["quantization"]["layers"]
    with torch.no_grad():
        assert torch.equal(back(ids)[0], q(ids)[0])  # the same codes, not quantized again


def test_quantized_engine_batched_equals_one_by_one_and_cli(capsys, tmp_path):
    tok = WordLevelTokenizer("char").train([TEXT])
    q = quantize_model(make(tok.vocab_size), "int4", dtype="bfloat16")
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


def test_decode_layout_joins_quantized_projections():
    q = quantize_model(make(), "int4")
    ids = torch.randint(0, 40, (1, 12), generator=gen(10))
    with torch.no_grad():
        before = q(ids)[0]
        assert decode_layout(q) == 4
        after = q(ids)[0]
    assert q.blocks[0].attn.packed.joint.out_features == 64 + 2 * 32
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_bad_quantisation_is_one_clear_error():
    with pytest.raises(LmlabError, match="method"):
        quantize_model(make(), "int3")
    with pytest.raises(LmlabError, match="group size 48 does not divide the input dimension 64"):
        quantize_model(make(), "int4", group_size=48)
    with pytest.raises(LmlabError, match="needs calibration"):
        quantize_model(make(), "gptq")
    q = quantize_model(make())
    with pytest.raises(LmlabError, match="already quantized"):
        quantize_model(q)


def test_calibration_text_too_short():
    from lmlab.quant.calibration import calibration_ids

    tok = WordLevelTokenizer("char").train([TEXT])
    with pytest.raises(LmlabError, match="calibration text has .* tokens where 4 sequences of 64 need 256"):
        calibration_ids(tok, [TEXT], 4, 64)


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
    assert any(isinstance(m, QuantLinear) for m in lm.modules())
    assert len(out["turns"]) == 1 and out["turns"][0]["tokens"] <= 4


def test_gguf_codes_match_ggml_dequantisation():
    from lmlab.formats.ggml_quants import BLOCK, CODE_TYPES, block_codes, dequantize

    rng = np.random.default_rng(0)
    for name in CODE_TYPES:
        per_block, size = BLOCK[name]
        raw = rng.integers(0, 256, size=(4, size), dtype=np.uint8)
        for off in {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2],
                    "Q5_K": [0, 2], "Q6_K": [208]}[name]:
            raw[:, off:off + 2] = rng.normal(0, 0.05, 4).astype(np.float16).view(np.uint8).reshape(-1, 2)
        n = 4 * per_block
        parts = block_codes(raw.reshape(-1), name, n)
        g = parts.group_size
        scale = parts.scale.astype(np.float32).repeat(g)
        codes = parts.codes.astype(np.float32)
        values = (scale * (codes - 2 ** (parts.bits - 1)) if parts.zero is None
                  else scale * codes + parts.zero.astype(np.float32).repeat(g))
        ref = dequantize(raw.reshape(-1), name, n)
        assert np.allclose(values, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max()), name


def test_quantize_cli_saves_reports_and_generates(capsys, tmp_path):
    from lmlab.cli import main
    from lmlab.models import save_model_dir

    tok = WordLevelTokenizer("char").train([TEXT])
    save_model_dir(tmp_path / "m", *make(tok.vocab_size).to_state(), tokenizer=tok)
    (tmp_path / "text.txt").write_text((TEXT + "\n") * 20)
    assert main(["quantize", "--model", str(tmp_path / "m"), "--method", "gptq", "--group-size", "32",
                 "--calibration", str(tmp_path / "text.txt"), "--calibration-sequences", "2",
                 "--calibration-length", "32", "--out", str(tmp_path / "q"), "--report", "--eval",
                 str(tmp_path / "text.txt"), "--eval-tokens", "300", "--window", "64", "--stride", "32",
                 "--new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bits_per_weight"] == pytest.approx(4 + 32 / 32)  # 4-bit codes, float16 scale and zero per 32
    assert out["scored_tokens"] == 299 and 0 <= out["kl_divergence"] and 0 <= out["top1_agreement"] <= 1
    assert out["perplexity"] > 1 and out["decode_tokens_per_s"] > 0 and out["size_mb"] > 0
    assert main(["generate", "--model", str(tmp_path / "q"), "--prompt", "the", "--greedy",
                 "--max-new-tokens", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tokens"]) <= 3
    assert main(["quantize", "--model", str(tmp_path / "m"), "--method", "awq", "--calibration",
                 str(tmp_path / "text.txt"), "--out", str(tmp_path / "q2")]) != 0
    assert "the calibration text has 1700 tokens where 32 sequences of 256 need 8192" in capsys.readouterr().err


def test_generate_and_chat_quant_choices_are_the_calibration_free_methods():
    from lmlab.cli import build_parser
    from lmlab.cli.generate import WEIGHT_ONLY

    assert set(WEIGHT_ONLY) == {m for m, spec in METHODS.items() if not spec.calibrated}
    verbs = next(a for a in build_parser()._actions if a.choices and "chat" in a.choices).choices
    for verb in ("generate", "chat"):
        quant = next(a for a in verbs[verb]._actions if "--quant" in a.option_strings)
        assert tuple(quant.choices) == WEIGHT_ONLY


def test_lora_trains_on_a_quantized_base():
    from lmlab.peft.lora import LoraConfig, wrap_lora

    q = quantize_model(make(), "int4")
    wrap_lora(q, ["blocks.0.attn.q_proj", "blocks.1.mlp.down"], LoraConfig(r=4))
    ids = torch.randint(0, 40, (2, 12), generator=gen(11))
    with torch.no_grad():
        before = q(ids)[0]
    q.blocks[0].attn.q_proj.lora_B.data.normal_(generator=gen(12))
    loss = q(ids)[0].logsumexp(-1).mean()
    loss.backward()
    assert q.blocks[1].mlp.down.lora_A.grad is not None
    assert not torch.allclose(before, q(ids)[0].detach())


def test_the_server_batches_a_saved_quantized_model(tmp_path):
    """`lmlab serve --model DIR` of a quantized directory: concurrent requests share the batch and
    each gets the quantized model's own greedy continuation."""
    import http.client
    import threading
    from urllib.parse import urlparse

    from lmlab.models import load_model, save_model_dir
    from lmlab.serve import create_app
    from lmlab.serve.background import background

    tok = WordLevelTokenizer("char").train([TEXT])
    save_model_dir(tmp_path / "m", *quantize_model(make(tok.vocab_size), "int4").to_state(), tokenizer=tok)
    lm, tok = load_model(tmp_path / "m")
    assert isinstance(lm.blocks[0].mlp.up, QuantLinear)
    prompts = ["the quick", "a", "lazy dog", "pack my"]
    expected = [Engine(lm, tok, greedy=True).generate([Request(tok.encode(p), max_new_tokens=12)])[0].text
                for p in prompts]

    def complete(url: str, prompt: str) -> str:
        parts = urlparse(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        conn.request("POST", "/v1/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"model": "q", "prompt": [tok.encode(prompt)], "max_tokens": 12, "temperature": 0}))
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body["choices"][0]["text"]

    served = [None] * len(prompts)
    with background(create_app(lm, tok, model_id="q", max_batch=4)) as url:
        threads = [threading.Thread(target=lambda i=i: served.__setitem__(i, complete(url, prompts[i])))
                   for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert served == expected


def test_the_head_can_take_its_own_method(tmp_path):
    """llama.cpp's Q4_0 files keep the tied embedding/head in Q8_0: head_method does the same here."""
    from lmlab.models import load_model, save_model_dir

    q = quantize_model(make(), "int4", head_method="int8-group")
    assert (q.head.bits, q.head.group_size) == (8, 32) and q.blocks[0].mlp.up.bits == 4
    ids = torch.randint(0, 40, (1, 12), generator=gen(13))
    save_model_dir(tmp_path / "m", *q.to_state())
    back, _ = load_model(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(ids)[0], q(ids)[0]) and back.head.bits == 8
    with pytest.raises(LmlabError, match="head_method"):
        quantize_model(make(), "int4", head_method="gptq")
    with pytest.raises(LmlabError, match="head_method"):
        quantize_model(make(), "int4", head=False, head_method="int8")


def test_quantize_cli_head_method(capsys, tmp_path):
    from lmlab.cli import main
    from lmlab.models import load_model, save_model_dir

    tok = WordLevelTokenizer("char").train([TEXT])
    save_model_dir(tmp_path / "m", *make(tok.vocab_size).to_state(), tokenizer=tok)
    assert main(["quantize", "--model", str(tmp_path / "m"), "--method", "int4", "--head-method", "int8-group",
                 "--out", str(tmp_path / "q"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    back, _ = load_model(tmp_path / "q")
    assert back.head.bits == 8 and back.blocks[1].mlp.down.bits == 4 and 4.5 < out["bits_per_weight"] < 8.5
