"""Adapters, AdapterFusion, IA3, BitFit, full fine-tuning, prompt and prefix tuning."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_peft_tiny import TinyAttention, batch, forward_backward_both, tiny_llama, tiny_lm
from torch import nn

from lmlab.core.errors import ConfigError
from lmlab.peft import (
    AdapterConfig,
    BitFitConfig,
    FullConfig,
    FusionConfig,
    IA3Config,
    IA3Linear,
    PrefixConfig,
    PromptConfig,
    adapter_state_dict,
    apply_adapters,
    apply_bitfit,
    apply_full,
    apply_fusion,
    apply_ia3,
    apply_prefix,
    apply_prompt,
    extend_labels,
    extend_mask,
    load_adapter,
    merge,
    merge_and_unload,
    parameter_report,
    read_adapter,
    save_adapter,
    strip_prompt,
    unmerge,
)
from lmlab.peft.fusion import WithFusion
from lmlab.peft.prefix import PrefixEncoder


def same_outputs(a: nn.Module, b: nn.Module, atol: float = 0.0) -> None:
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=atol)


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def perturb(model: nn.Module, names: tuple[str, ...], seed: int = 4) -> None:
    """Move the named adapter tensors away from their initial values, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(part in name for part in names):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))


# --- bottleneck adapters and AdapterFusion -------------------------------------------------

def test_houlsby_adapters_start_as_identity_after_attention_and_mlp():
    base = tiny_lm()
    model = apply_adapters(copy.deepcopy(base), AdapterConfig(bottleneck=4))
    same_outputs(model, base)
    assert trainable(model) == {f"layers.{i}.{m}.adapter.{p}.{w}" for i in range(2)
                                for m in ("self_attn", "mlp") for p in ("down", "up")
                                for w in ("weight", "bias")}
    assert parameter_report(model)["trainable_params"] == 4 * (32 * 4 + 4 + 4 * 32 + 32)


def test_adapter_adds_up_act_down_to_the_output():
    base = tiny_lm()
    model = apply_adapters(copy.deepcopy(base), AdapterConfig(bottleneck=4, activation="tanh"))
    perturb(model, ("adapter.up",))
    wrapped = model.layers[0].mlp
    h = torch.randn(2, 5, 32)
    out = base.layers[0].mlp(h)
    a = wrapped.adapter
    expected = out + F.linear(torch.tanh(F.linear(out, a.down.weight, a.down.bias)), a.up.weight, a.up.bias)
    torch.testing.assert_close(wrapped(h), expected)


def _trained_adapter(base: nn.Module, path, seed: int):
    model = apply_adapters(copy.deepcopy(base), AdapterConfig(bottleneck=4))
    perturb(model, ("adapter",), seed=seed)
    save_adapter(model, path)
    return model


def test_fusion_of_identity_adapters_is_identity_and_only_fusion_trains():
    base = tiny_lm()
    model = apply_fusion(copy.deepcopy(base), FusionConfig(n_adapters=3, bottleneck=4))
    same_outputs(model, base, atol=1e-6)
    assert trainable(model) and all(".fusion." in n for n in trainable(model))


def test_fusion_attends_over_trained_adapters(tmp_path):
    base = tiny_lm()
    first = _trained_adapter(base, tmp_path / "a", seed=1)
    second = _trained_adapter(base, tmp_path / "b", seed=2)
    weights = [read_adapter(tmp_path / d)[1] for d in ("a", "b")]
    model = apply_fusion(copy.deepcopy(base), FusionConfig(n_adapters=2, bottleneck=4), weights)
    site = model.layers[1].mlp
    assert isinstance(site, WithFusion)
    h = torch.randn(2, 5, 32)
    out = base.layers[1].mlp(h)
    a1, a2 = first.layers[1].mlp.adapter(out), second.layers[1].mlp.adapter(out)
    fusion = site.fusion
    q = fusion.query(out)
    scores = torch.stack([(q * fusion.key(a)).sum(-1) for a in (a1, a2)], -1) / math.sqrt(32)
    w = scores.softmax(-1)
    expected = w[..., :1] * fusion.value(a1) + w[..., 1:] * fusion.value(a2)
    torch.testing.assert_close(site(h), expected)
    with pytest.raises(ConfigError, match="2 adapters given but n_adapters = 3"):
        apply_fusion(copy.deepcopy(base), FusionConfig(n_adapters=3, bottleneck=4), weights)
    with pytest.raises(ConfigError, match="no bottleneck adapter"):
        apply_fusion(copy.deepcopy(base), FusionConfig(n_adapters=2, bottleneck=8), weights)
    save_adapter(model, tmp_path / "fused")
    same_outputs(load_adapter(copy.deepcopy(base), tmp_path / "fused"), model)


# --- IA3 -----------------------------------------------------------------------------------

def test_ia3_starts_as_identity_scales_keys_values_and_mlp_activation():
    base = tiny_lm()
    model = apply_ia3(copy.deepcopy(base), IA3Config())
    same_outputs(model, base)
    assert parameter_report(model)["trainable_params"] == 2 * (16 + 16 + 48)
    perturb(model, ("ia3_scale",))
    k, down = model.layers[0].self_attn.k_proj, model.layers[0].mlp.down_proj
    x, inner = torch.randn(3, 32), torch.randn(3, 48)
    torch.testing.assert_close(k(x), (x @ k.base.weight.T + k.base.bias) * k.ia3_scale)
    torch.testing.assert_close(down(inner), (inner * down.ia3_scale) @ down.base.weight.T)


def test_ia3_merges_and_unmerges_exactly():
    base = tiny_lm()
    model = apply_ia3(copy.deepcopy(base), IA3Config())
    perturb(model, ("ia3_scale",))
    ids = batch()
    with torch.no_grad():
        before = model(ids)
        merge(model)
        assert (model(ids) - before).abs().max() <= 1e-5
        unmerge(model)
        assert (model(ids) - before).abs().max() <= 1e-5
        plain = merge_and_unload(model)
        assert not any(isinstance(m, IA3Linear) for m in plain.modules())
        assert (plain(ids) - before).abs().max() <= 1e-5


def test_ia3_input_targets_must_be_targets():
    with pytest.raises(ConfigError, match="outside targets"):
        apply_ia3(tiny_lm(), IA3Config(targets=["k_proj"], input_targets=["down_proj"]))


def test_parity_with_hf_peft_ia3():
    peft = pytest.importorskip("peft")
    base = tiny_llama()
    targets, feedforward = ["k_proj", "v_proj", "down_proj"], ["down_proj"]
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.IA3Config(
        target_modules=targets, feedforward_modules=feedforward))
    ours = apply_ia3(copy.deepcopy(base), IA3Config(targets=targets, input_targets=feedforward))
    perturb(ours, ("ia3_scale",))
    pairs = []
    with torch.no_grad():
        for name, mine in ours.named_modules():
            if isinstance(mine, IA3Linear):
                other = theirs.base_model.model.get_submodule(name).ia3_l["default"]
                other.copy_(mine.ia3_scale.view_as(other))
                pairs.append((mine, other))
    assert len(pairs) == 6
    forward_backward_both(ours, theirs)
    for mine, other in pairs:
        torch.testing.assert_close(mine.ia3_scale.grad, other.grad.flatten(), rtol=0, atol=1e-7)


# --- BitFit and full fine-tuning ----------------------------------------------------------

def test_bitfit_trains_only_existing_biases():
    model = apply_bitfit(tiny_lm(), BitFitConfig())
    assert trainable(model) == {n for n, _ in tiny_lm().named_parameters() if n.endswith("bias")}


def test_bitfit_adds_zero_biases_where_missing_and_refuses_when_there_are_none():
    base = tiny_lm()
    with pytest.raises(ConfigError, match="no bias parameters"):
        apply_bitfit(copy.deepcopy(base), BitFitConfig(targets=["o_proj", "down_proj"]))
    model = apply_bitfit(copy.deepcopy(base), BitFitConfig(targets=["o_proj", "down_proj"],
                                                           add_missing=True))
    same_outputs(model, base)
    assert trainable(model) == {f"layers.{i}.{m}.bias" for i in range(2)
                                for m in ("self_attn.o_proj", "mlp.down_proj")}


def test_bitfit_adapter_round_trip(tmp_path):
    base = tiny_lm()
    model = apply_bitfit(copy.deepcopy(base), BitFitConfig(targets=["down_proj"], add_missing=True))
    perturb(model, ("down_proj.bias",))
    save_adapter(model, tmp_path / "b")
    assert set(read_adapter(tmp_path / "b")[1]) == {"layers.0.mlp.down_proj.bias",
                                                     "layers.1.mlp.down_proj.bias"}
    same_outputs(load_adapter(copy.deepcopy(base), tmp_path / "b"), model)


def test_full_fine_tuning_trains_everything():
    model = apply_full(tiny_lm(), FullConfig())
    report = parameter_report(model)
    assert report["trainable_params"] == report["total_params"] and report["trainable_percent"] == 100.0
    assert set(adapter_state_dict(model)) == set(tiny_lm().state_dict())


# --- prompt tuning -------------------------------------------------------------------------

def test_prompt_tuning_prepends_soft_tokens_initialised_from_vocabulary():
    base = tiny_lm()
    model = apply_prompt(copy.deepcopy(base), PromptConfig(n_tokens=3, init_ids=[7, 8]))
    wrapper = model.embed_tokens
    assert torch.equal(wrapper.soft_prompt, base.embed_tokens.weight[[7, 8, 7]])
    assert trainable(model) == {"embed_tokens.soft_prompt"}
    ids = batch()
    with torch.no_grad():
        embedded = wrapper(ids)
        assert embedded.shape == (3, 12, 32)
        assert torch.equal(embedded[:, 3:], base.embed_tokens(ids))
        # soft tokens initialised from [7, 8, 7] act exactly like those tokens prepended
        prepended = torch.cat([torch.tensor([[7, 8, 7]]).expand(3, -1), ids], dim=1)
        torch.testing.assert_close(strip_prompt(model(ids), 3), base(prepended)[:, 3:], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        apply_prompt(copy.deepcopy(base), PromptConfig(init_ids=[50]))


def test_prompt_mask_and_label_helpers():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert extend_mask(mask, 2).tolist() == [[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]]
    labels = torch.tensor([[5, 6, 7]])
    assert extend_labels(labels, 2).tolist() == [[-100, -100, 5, 6, 7]]


def test_parity_with_hf_peft_prompt_tuning():
    peft = pytest.importorskip("peft")
    base = tiny_llama()
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4))
    ours = apply_prompt(copy.deepcopy(base), PromptConfig(n_tokens=4))
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(ours.model.embed_tokens.soft_prompt)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    out_theirs = theirs(input_ids=ids, attention_mask=mask, labels=ids)
    out_ours = ours(input_ids=ids, attention_mask=extend_mask(mask, 4), labels=extend_labels(ids, 4))
    torch.testing.assert_close(out_ours.logits, out_theirs.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_ours.loss, out_theirs.loss, rtol=0, atol=1e-6)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    torch.testing.assert_close(ours.model.embed_tokens.soft_prompt.grad,
                               theirs.prompt_encoder["default"].embedding.weight.grad, rtol=0, atol=1e-7)


# --- prefix tuning -------------------------------------------------------------------------

def test_attention_with_a_prefix_attends_to_it_from_every_position():
    torch.manual_seed(0)
    attn = TinyAttention(8, n_heads=2, n_kv_heads=1)
    h = torch.randn(1, 3, 8)
    pk, pv = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4)
    attn.past_prefix = lambda b: (pk.expand(b, -1, -1, -1), pv.expand(b, -1, -1, -1))
    q = attn.q_proj(h).view(1, 3, 2, 4).transpose(1, 2)
    k = torch.cat([pk, attn.k_proj(h).view(1, 3, 1, 4).transpose(1, 2)], 2).expand(1, 2, 5, 4)
    v = torch.cat([pv, attn.v_proj(h).view(1, 3, 1, 4).transpose(1, 2)], 2).expand(1, 2, 5, 4)
    scores = q @ k.transpose(-1, -2) / 2.0
    visible = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    weights = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    expected = attn.o_proj((weights @ v).transpose(1, 2).reshape(1, 3, 8))
    torch.testing.assert_close(attn(h), expected)


def test_prefix_tuning_trains_only_the_encoder_and_materialises():
    base = tiny_lm()
    model = apply_prefix(copy.deepcopy(base), PrefixConfig(n_tokens=3, hidden=16))
    encoder = model.prefix_encoder
    assert isinstance(encoder, PrefixEncoder)
    # table (3 × 16) + Linear(16 → 16) + Linear(16 → 2 layers · 2 · 2 heads · 8)
    assert parameter_report(model)["trainable_params"] == 3 * 16 + (16 * 16 + 16) + (16 * 64 + 64)
    k0, v0 = model.layers[0].self_attn.past_prefix(2)
    k1, _ = model.layers[1].self_attn.past_prefix(2)
    assert k0.shape == v0.shape == (2, 2, 3, 8) and not torch.equal(k0, k1)
    ids = batch()
    out = model(ids)
    assert out.shape == base(ids).shape and not torch.allclose(out, base(ids))
    out.logsumexp(-1).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable(model) == {n for n, _ in model.named_parameters()
                                             if n.startswith("prefix_encoder.")}
    with torch.no_grad():
        before = model(ids)
        encoder.materialize()
        assert encoder.mlp is None
        torch.testing.assert_close(model(ids), before, rtol=0, atol=1e-6)


def test_prefix_adapter_round_trip_and_shape_errors(tmp_path):
    base = tiny_lm()
    model = apply_prefix(copy.deepcopy(base), PrefixConfig(n_tokens=2, hidden=8, seed=3))
    save_adapter(model, tmp_path / "p")
    same_outputs(load_adapter(copy.deepcopy(base), tmp_path / "p"), model)
    with pytest.raises(ConfigError, match="key/value shape"):
        apply_prefix(copy.deepcopy(base), PrefixConfig(targets=["mlp"]))
