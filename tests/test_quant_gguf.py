"""GGUF writing: block quantizers bit-identical to the `gguf` package's reference, files the `gguf`
package reads back, and lmlab models exported and imported again (float and kept quantized)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import LmlabError
from lmlab.formats.ggml_quants import WRITE_TYPES, dequantize, quantize
from lmlab.formats.gguf import read_gguf, write_gguf
from lmlab.models.config import TransformerConfig
from lmlab.models.gguf_export import export_gguf
from lmlab.models.gguf_import import load_gguf
from lmlab.models.quantized import QuantLinear
from lmlab.models.transformer import TransformerLM


def sample(n_blocks: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, (n_blocks, 32)).astype(np.float32)
    x[0] = 0  # an all-zero block (d = 0)
    x[1, :] = np.linspace(-1, 1, 32)  # exact halves: rounding ties
    x[2, 5] = 3.0  # an outlier
    return x.reshape(-1)


@pytest.mark.parametrize("name", WRITE_TYPES)
def test_quantize_is_bit_identical_to_the_gguf_package(name):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import quantize as ref_quantize

    x = sample()
    ours = quantize(x, name)
    ref = np.asarray(ref_quantize(x.reshape(-1, 32), gguf.GGMLQuantizationType[name])).view(np.uint8).reshape(-1)
    assert np.array_equal(ours, ref)
    back = dequantize(ours, name, x.size)
    step = {"F32": 0, "F16": 1e-3, "Q8_0": 1 / 127, "Q4_0": 1 / 8, "Q4_1": 1 / 15}[name]
    span = np.abs(x.reshape(-1, 32)).max(axis=1).repeat(32) * (2 if name == "Q4_1" else 1)
    # within half a step of its block (Q4_0: a whole step on the side opposite the absmax value, which it
    # clips at 7 steps), plus the float16 rounding of the scale (at most 127 codes × 2^-11 of a step)
    half = 1.0 if name == "Q4_0" else 0.5
    assert (np.abs(back - x) <= span * step * (half + 127 * 2**-11) + 1e-7).all()


def test_unsupported_write_type_names_the_supported_ones():
    with pytest.raises(LmlabError, match="Q2_K.*not supported.*Q8_0, Q4_0, Q4_1"):
        quantize(np.zeros(256, np.float32), "Q2_K")


def test_written_file_reads_back_here_and_in_the_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    x = sample(4)
    meta = {"general.architecture": "llama", "a.count": 7, "a.eps": 0.5, "a.flag": True,
            "a.names": ["x", "yz"], "a.types": np.array([1, 3], np.int32)}
    path = write_gguf(tmp_path / "t.gguf", meta, [("w", (4, 32), "Q8_0", quantize(x, "Q8_0")),
                                                  ("n", (3,), "F32", quantize(np.arange(3.0), "F32"))])
    g = read_gguf(path)
    assert g.get("a.count") == 7 and g.get("a.flag") is True and g.get("a.names") == ["x", "yz"]
    assert np.array_equal(g.tensor("w"), dequantize(quantize(x, "Q8_0"), "Q8_0", 128).reshape(4, 32))
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["w"].tensor_type == gguf.GGMLQuantizationType.Q8_0 and list(tensors["w"].shape) == [32, 4]
    assert np.array_equal(np.asarray(tensors["n"].data), np.arange(3.0, dtype=np.float32))


@pytest.fixture(scope="module")
def tiny():
    from lmlab.tokenizers import smollm2_gguf, tokenizer_from_gguf

    path = smollm2_gguf()
    tok = tokenizer_from_gguf(path)
    tok.chat_template = read_gguf(path).get("tokenizer.chat_template")
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4,
                                        n_kv_heads=2, d_ff=128, context_length=128, tie_embeddings=True)
    lm = TransformerLM(cfg, {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                             "unk_id": tok.unk_id}).eval()
    return lm, tok


@pytest.mark.parametrize("kind,tol", [("F16", 1e-2), ("Q8_0", 0.05), ("Q4_1", 0.5)])
def test_export_then_import_gives_the_same_model(tiny, tmp_path, kind, tol):
    lm, tok = tiny
    path = export_gguf(lm, tok, tmp_path / f"m.{kind}.gguf", kind)
    g = read_gguf(path)
    assert g.get("tokenizer.chat_template") == tok.chat_template and g.get("general.file_type") is not None
    back, back_tok = load_gguf(path)
    assert back_tok.encode("Hello, world!") == tok.encode("Hello, world!")
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():
        ref, out = lm(ids)[0], back(ids)[0]
        assert (ref - out).abs().max() < tol * ref.abs().max()
        if kind != "F16":  # kept quantized: the same codes run through the packed kernels
            kept, _ = load_gguf(path, quantized=True)
            assert isinstance(kept.blocks[0].attn.q_proj, QuantLinear)
            torch.testing.assert_close(kept.blocks[1].mlp.down.dequantize(), back.blocks[1].mlp.down.weight,
                                       rtol=1e-6, atol=1e-7)
            assert (kept(ids)[0] - out).abs().max() < 0.02 * out.abs().max()  # bf16 activations in the kernels
            from lmlab.models import load_model, save_model_dir

            save_model_dir(tmp_path / "kept", *kept.to_state(), tokenizer=back_tok)
            again, _ = load_model(tmp_path / "kept")  # the GGUF codes saved as safetensors, loaded as they are
            assert torch.equal(again(ids)[0], kept(ids)[0]) and again.head.method == f"gguf-{kind}"


def test_export_refuses_what_gguf_cannot_hold(tiny, tmp_path):
    from lmlab.quant import quantize_model

    lm, tok = tiny
    with pytest.raises(LmlabError, match="type"):
        export_gguf(lm, tok, tmp_path / "x.gguf", "Q2_K")
    gpt = TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                                                      n_heads=2, context_length=16))
    with pytest.raises(LmlabError, match="LLaMA-family"):
        export_gguf(gpt, tok, tmp_path / "x.gguf")
    import copy

    w8a8 = quantize_model(copy.deepcopy(lm), "smoothquant", calibration=torch.randint(0, 100, (2, 16)))
    with pytest.raises(LmlabError, match="SmoothQuant"):
        export_gguf(w8a8, tok, tmp_path / "x.gguf")


def test_a_lora_model_is_refused_until_merged_and_then_carries_its_update(tiny, tmp_path):
    import copy

    from lmlab.peft.lora import LoraConfig, apply_lora
    from lmlab.peft.merging import merge_and_unload

    base, tok = tiny
    tuned = apply_lora(copy.deepcopy(base), LoraConfig(r=4, targets=["q_proj", "down"]))
    with torch.no_grad():  # a trained adapter: B away from its zero init
        for layer in (tuned.blocks[0].attn.q_proj, tuned.blocks[1].mlp.down):
            layer.lora_B.normal_(generator=torch.Generator().manual_seed(1))
    with pytest.raises(LmlabError, match="blocks.0.attn.q_proj is a LoraLinear.*merge"):
        export_gguf(tuned, tok, tmp_path / "x.gguf", "F16")
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():
        want, before = tuned(ids)[0], base(ids)[0]
        back, _ = load_gguf(export_gguf(merge_and_unload(tuned.eval()), tok, tmp_path / "m.gguf", "F16"))
        got = back(ids)[0]
    assert (got - want).abs().max() < 1e-2 * want.abs().max() < (before - want).abs().max()


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1"])
def test_kept_blocks_run_as_their_dequantized_weight(tmp_path, name):
    from lmlab.formats.ggml_quants import BLOCK
    from lmlab.models.gguf_import import read_quantized

    rng = np.random.default_rng(1)
    per_block, size = BLOCK[name]
    rows, cols = 32, 512
    raw = rng.integers(0, 256, size=(rows * cols // per_block, size), dtype=np.uint8)
    fields = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q4_K": [0, 2],
              "Q5_K": [0, 2], "Q6_K": [208]}[name]
    for off in fields:
        raw[:, off:off + 2] = rng.normal(0, 0.01, len(raw)).astype(np.float16).view(np.uint8).reshape(-1, 2)
    path = write_gguf(tmp_path / "k.gguf", {"general.architecture": "llama"}, [("w", (rows, cols), name, raw.reshape(-1))])
    g = read_gguf(path)
    layer = read_quantized(g, "w")
    ref = torch.from_numpy(g.tensor("w").copy())
    torch.testing.assert_close(layer.dequantize(), ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    x = torch.randn(3, cols, generator=torch.Generator().manual_seed(0))
    expect = x @ ref.T
    assert (layer(x) - expect).abs().max() < 0.02 * expect.abs().max()
    kernel = {"Q4_0": "int4pack", "Q4_1": "int4pack", "Q4_K": "int4pack", "Q6_K": "dequant"}.get(name, "int4pack-split")
    assert layer.kernel == kernel
