"""NF4 code book and blockwise quantisation, double quantisation's storage saving, QLoRA layers."""

from __future__ import annotations

import copy

import pytest
import torch
from test_peft_tiny import batch, tiny_lm
from torch import nn

from lmlab.core.errors import ModelError
from lmlab.peft import (
    LoraLinear,
    NF4Linear,
    QLoraConfig,
    apply_qlora,
    dequantize_nf4,
    load_adapter,
    merge,
    merge_and_unload,
    nf4_code_book,
    nf4_storage_bytes,
    parameter_report,
    quantize_nf4,
    save_adapter,
)
from lmlab.peft.nf4 import NF4_OFFSET, dequantize_absmax

#: the NF4 table as published with bitsandbytes / the QLoRA paper's appendix (a check, not a source)
PUBLISHED_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                 -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                 0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                 0.7229568362236023, 1.0]


def test_code_book_has_16_sorted_levels_exact_zero_and_unit_ends():
    levels = nf4_code_book()
    assert levels.shape == (16,) and levels.dtype == torch.float32
    assert torch.all(levels[1:] > levels[:-1])
    assert levels[0] == -1.0 and levels[-1] == 1.0 and levels[7] == 0.0
    assert int((levels > 0).sum()) == 8 and int((levels < 0).sum()) == 7


def test_code_book_is_the_normal_quantile_construction():
    import numpy as np
    import scipy.stats as scipy_stats

    assert abs(NF4_OFFSET - 0.9677083) < 1e-7
    positive = scipy_stats.norm.ppf(np.linspace(NF4_OFFSET, 0.5, 9)[:-1])
    negative = -scipy_stats.norm.ppf(np.linspace(NF4_OFFSET, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([negative, [0.0], positive]))
    values /= np.abs(values).max()
    np.testing.assert_allclose(nf4_code_book().numpy(), values, atol=1e-7)
    # each half is symmetric quantiles of N(0,1) scaled by the same outermost quantile
    np.testing.assert_allclose(nf4_code_book().numpy(), PUBLISHED_NF4, atol=2e-6)


def test_levels_round_trip_exactly_and_error_is_bounded():
    levels = nf4_code_book()
    scale = 2.5
    w = (levels.repeat(4) * scale).reshape(8, 8)  # every block holds ±1 so its absmax is `scale`
    q = quantize_nf4(w, block_size=64, double_quant=False)
    assert torch.equal(dequantize_nf4(q, w.shape), w)

    torch.manual_seed(0)
    w = torch.randn(48, 80)
    q = quantize_nf4(w, double_quant=False)
    restored = dequantize_nf4(q, w.shape)
    half_gap = (levels[1:] - levels[:-1]).max() / 2
    blocks_absmax = q["absmax"].repeat_interleave(64)[: w.numel()].view_as(w)
    assert torch.all((restored - w).abs() <= half_gap * blocks_absmax + 1e-6)
    assert (restored - w).abs().mean() < 0.06 * w.abs().mean() * 2  # typical error small


def test_codes_are_packed_two_per_byte_with_per_block_absmax():
    w = torch.arange(1, 129, dtype=torch.float32).view(2, 64)
    q = quantize_nf4(w, double_quant=False)
    assert q["codes"].dtype == torch.uint8 and q["codes"].numel() == 64
    assert torch.equal(q["absmax"], torch.tensor([64.0, 128.0]))
    assert int(q["codes"][31]) & 0x0F == 15  # element 63 is its block's absmax → level +1


def test_double_quant_reconstructs_scales_closely():
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    q = quantize_nf4(w, double_quant=True)
    plain = quantize_nf4(w, double_quant=False)
    assert q["absmax_q"].dtype == torch.int8 and q["absmax_scale"].numel() == 4
    err = (dequantize_absmax(q) - plain["absmax"]).abs().max()
    assert err <= q["absmax_scale"].max() / 127 / 2 + 1e-6
    assert torch.equal(q["codes"], plain["codes"])


def test_double_quant_storage_saving_matches_the_paper():
    numel = 64 * 256 * 1000
    single = nf4_storage_bytes(numel, double_quant=False)
    double = nf4_storage_bytes(numel, double_quant=True)
    assert single["codes"] == double["codes"] == numel // 2
    assert single["scales"] * 8 / numel == 0.5                      # 32 bits per 64 weights
    assert double["scales"] == numel // 64 + 4 * 1000 + 4            # 8-bit scales + fp32 per 256 + mean
    saved_bits = (single["scales"] - double["scales"]) * 8 / numel
    # 0.5 - 8/64 - 32/(64·256) bits per weight, less the one fp32 mean of the scales
    assert abs(saved_bits - (0.5 - 8 / 64 - 32 / (64 * 256) - 32 / numel)) < 1e-12
    assert round(saved_bits, 3) == 0.373


@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_linear_stores_what_was_predicted_and_computes_with_the_dequantised_weight(double_quant):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    layer = NF4Linear(linear, double_quant=double_quant, compute_dtype=torch.float32)
    assert layer.storage_bytes() == layer.predicted_storage_bytes() == \
        nf4_storage_bytes(96 * 40, double_quant=double_quant)["total"]
    x = torch.randn(5, 96)
    weight = layer.dequantized_weight()
    torch.testing.assert_close(layer(x), x @ weight.T + linear.bias)
    assert (weight - linear.weight).abs().max() < 0.25 * linear.weight.abs().max()


def test_bf16_compute_path_returns_the_callers_dtype():
    torch.manual_seed(0)
    layer = NF4Linear(nn.Linear(64, 32), compute_dtype=torch.bfloat16)
    x = torch.randn(3, 64)
    y = layer(x)
    assert y.dtype == torch.float32
    expected = torch.nn.functional.linear(x.bfloat16(), layer.dequantized_weight(torch.bfloat16),
                                          layer.bias.bfloat16()).float()
    torch.testing.assert_close(y, expected)


def test_qlora_model_starts_at_its_dequantised_base_and_trains_only_lora():
    base = tiny_lm()
    model = apply_qlora(copy.deepcopy(base), QLoraConfig(r=4, compute_dtype="float32"))
    reference = copy.deepcopy(base)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLinear):
                reference.get_submodule(name).weight.copy_(module.base.dequantized_weight())
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids), rtol=0, atol=1e-5)
    report = parameter_report(model)
    assert report["total_params"] == sum(p.numel() for p in base.parameters()) + report["trainable_params"]
    model(ids).logsumexp(-1).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith(("lora_A", "lora_B")) for n in with_grad)


def test_qlora_weights_shrink_and_merge_needs_dequantisation(tmp_path):
    base = tiny_lm()
    model = apply_qlora(copy.deepcopy(base), QLoraConfig(r=4, compute_dtype="float32"))
    nf4 = [m for m in model.modules() if isinstance(m, NF4Linear)]
    assert len(nf4) == 14
    assert sum(m.storage_bytes() for m in nf4) < 0.15 * sum(4 * m.quantized_numel for m in nf4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoraLinear):
                m.lora_B.normal_(std=0.1)
    with pytest.raises(ModelError, match="quantised"):
        merge(model)
    ids = batch()
    with torch.no_grad():
        adapted = model(ids)
    save_adapter(model, tmp_path / "q")
    reloaded = load_adapter(copy.deepcopy(base), tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(reloaded(ids), adapted)
        plain = merge_and_unload(model)
        assert not any(isinstance(m, NF4Linear) for m in plain.modules())
        assert (plain(ids) - adapted).abs().max() <= 1e-5
