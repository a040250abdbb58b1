"""LoRA, rsLoRA and DoRA: identity at init, merge/unmerge, target selection, adapter files,
task vectors, and parity with HF PEFT on a tiny random LLaMA."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from test_peft_tiny import batch, forward_backward_both, tiny_llama, tiny_lm
from torch import nn

from lmlab.core.errors import ConfigError, InputError, ModelError
from lmlab.peft import (
    LoraConfig,
    LoraLinear,
    add_task_vector,
    apply_lora,
    cast_frozen_linears,
    combine,
    find_modules,
    load_adapter,
    lora_task_vector,
    merge,
    merge_and_unload,
    negate,
    parameter_report,
    save_adapter,
    task_vector,
    unmerge,
)

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def randomise_b(model: nn.Module, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoraLinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen) * 0.1)
                if m.magnitude is not None:
                    m.magnitude.mul_(1 + 0.1 * torch.randn(m.magnitude.shape, generator=gen))


# --- target selection and the parameter report ---------------------------------------------

def test_patterns_glob_suffix_and_regex():
    model = tiny_lm()
    assert find_modules(model, "q_proj") == ["layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj"]
    assert find_modules(model, "layers.1.*_proj") == [
        f"layers.1.{p}" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                  "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    assert find_modules(model, [r"re:layers\.0\.self_attn\.(k|v)_proj"]) == [
        "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj"]
    with pytest.raises(ConfigError, match="matched no module of kind Linear"):
        find_modules(model, ["mlp"], kinds=(nn.Linear,))


def test_pattern_matching_nothing_lists_module_names():
    with pytest.raises(ConfigError) as err:
        apply_lora(tiny_lm(), LoraConfig(targets=["query"]))
    message = str(err.value)
    assert "'query'" in message and "layers.<i>.self_attn.q_proj" in message
    with pytest.raises(ConfigError, match="regular expression"):
        find_modules(tiny_lm(), "re:(")


def test_parameter_report_counts_lora_exactly():
    model = tiny_lm()
    total = sum(p.numel() for p in model.parameters())
    apply_lora(model, LoraConfig(r=4, targets=["q_proj", "v_proj"]))
    # per layer: q (32→32) and v (32→16): r·(in + out) each
    trainable = 2 * (4 * (32 + 32) + 4 * (32 + 16))
    report = parameter_report(model)
    assert report == {"trainable_params": trainable, "total_params": total + trainable,
                      "trainable_percent": 100 * trainable / (total + trainable)}


def test_config_is_validated():
    with pytest.raises(ConfigError, match="r must be an integer"):
        LoraConfig(r=2.5)
    with pytest.raises(ConfigError, match="dropout"):
        LoraConfig(dropout=1.0)


# --- the maths ------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"rslora": True}, {"dora": True}])
def test_lora_starts_as_identity_and_freezes_the_base(options):
    base = tiny_lm()
    model = apply_lora(copy.deepcopy(base), LoraConfig(r=4, targets=ALL, **options))
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), base(ids), rtol=0, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "magnitude")
                             for n in trainable)
    assert all(torch.count_nonzero(m.lora_B) == 0 for m in model.modules()
               if isinstance(m, LoraLinear))


def test_scaling_plain_and_rslora():
    assert LoraConfig(r=16, alpha=32).scaling == 2.0
    assert LoraConfig(r=16, alpha=32, rslora=True).scaling == 8.0


def test_lora_layer_computes_w_x_plus_scaled_b_a_x():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    layer = LoraLinear(linear, LoraConfig(r=2, alpha=3))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 6)
    expected = x @ linear.weight.T + linear.bias + 1.5 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)



def test_lora_layer_under_bf16_autocast_with_a_bf16_base():
    """The fused path (one addmm) under autocast, with the frozen base stored in bf16 as
    ``cast_frozen_linears`` leaves it, computes what the plain formula gives in bf16."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 12).requires_grad_(False)  # frozen, as apply_lora leaves it
    layer = LoraLinear(linear, LoraConfig(r=4, alpha=8))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 3, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp32_base = layer(x)
        assert cast_frozen_linears(layer, torch.bfloat16) == 12 * 16 * 2  # the base weight only
        bf16_base = layer(x)
    assert layer.base.weight.dtype == torch.bfloat16 and layer.lora_A.dtype == torch.float32
    torch.testing.assert_close(bf16_base, fp32_base, rtol=0, atol=0)  # autocast cast the weight the same way
    expected = x @ linear.weight.float().T + linear.bias + 2 * x @ layer.lora_A.T @ layer.lora_B.T
    torch.testing.assert_close(bf16_base.float(), expected, rtol=0.05, atol=0.05)
    bf16_base.float().sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_A.grad.dtype == torch.float32

def test_dora_layer_matches_its_definition():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    layer = LoraLinear(linear, LoraConfig(r=2, alpha=4, dora=True))
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.magnitude.mul_(torch.rand(5) + 0.5)
    x = torch.randn(4, 6)
    adapted = linear.weight + 2 * layer.lora_B @ layer.lora_A
    direction = adapted / adapted.norm(dim=1, keepdim=True)
    expected = x @ (layer.magnitude[:, None] * direction).T + linear.bias
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("options", [{}, {"rslora": True}, {"dora": True}])
def test_merged_equals_unmerged_and_unmerge_restores(options):
    base = tiny_lm()
    model = apply_lora(copy.deepcopy(base), LoraConfig(r=4, alpha=8, targets=ALL, **options))
    randomise_b(model)
    ids = batch()
    with torch.no_grad():
        unmerged = model(ids)
        merge(model)
        assert all(m.merged for m in model.modules() if isinstance(m, LoraLinear))
        assert (model(ids) - unmerged).abs().max() <= 1e-5
        unmerge(model)
        assert (model(ids) - unmerged).abs().max() <= 1e-5
        for name, p in base.named_parameters():
            here = model.get_parameter(name.replace("_proj.", "_proj.base."))
            assert (here - p).abs().max() <= 1e-6


def test_merge_and_unload_gives_a_plain_model():
    base = tiny_lm()
    model = apply_lora(copy.deepcopy(base), LoraConfig(r=4, targets=ALL, dora=True))
    randomise_b(model)
    ids = batch()
    with torch.no_grad():
        adapted = model(ids)
        plain = merge_and_unload(model)
        assert not any(isinstance(m, LoraLinear) for m in plain.modules())
        assert set(plain.state_dict()) == set(base.state_dict())
        assert (plain(ids) - adapted).abs().max() <= 1e-5


def test_gradients_reach_only_the_adapter():
    model = apply_lora(tiny_lm(), LoraConfig(r=4, targets=ALL))
    randomise_b(model)
    model(batch()).logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_dropout_only_changes_the_lora_path():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    layer = LoraLinear(linear, LoraConfig(r=2, dropout=0.5))
    x = torch.randn(4, 6)
    layer.train()
    torch.testing.assert_close(layer(x), linear(x))  # B = 0: dropout cannot matter yet


# --- adapter files --------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path):
    base = tiny_lm()
    model = apply_lora(copy.deepcopy(base), LoraConfig(r=4, targets=["q_proj", "v_proj"], dora=True))
    randomise_b(model)
    out = save_adapter(model, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["method"] == "lora" and config["config"]["dora"] is True
    from safetensors.torch import load_file

    names = set(load_file(str(out / "adapter_model.safetensors")))
    assert names == {f"layers.{i}.self_attn.{p}.{w}" for i in range(2) for p in ("q_proj", "v_proj")
                     for w in ("lora_A", "lora_B", "magnitude")}
    loaded = load_adapter(copy.deepcopy(base), out)
    ids = batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_loading_onto_another_base_is_refused(tmp_path):
    model = apply_lora(tiny_lm(seed=0), LoraConfig(r=2))
    save_adapter(model, tmp_path / "a")
    with pytest.raises(ModelError, match="the shapes match but the weights differ"):
        load_adapter(tiny_lm(seed=1), tmp_path / "a")
    with pytest.raises(ModelError, match="shapes differ.*embed_tokens.weight: \\[50, 32\\] vs \\[60, 32\\]"):
        load_adapter(tiny_lm(seed=0, vocab=60), tmp_path / "a")
    with pytest.raises(InputError, match="not an adapter directory"):
        load_adapter(tiny_lm(), tmp_path)


def test_a_second_method_on_one_model_is_refused(tmp_path):
    model = apply_lora(tiny_lm(), LoraConfig(r=2))
    with pytest.raises(ConfigError, match="already carries"):
        apply_lora(model, LoraConfig(r=2))
    with pytest.raises(ConfigError, match="already carries"):
        load_adapter(model, save_adapter(model, tmp_path / "a"))


# --- task arithmetic ------------------------------------------------------------------------

def test_task_vector_add_negate_combine_exact():
    base = {"w": torch.tensor([1.0, 2.0]), "step": torch.tensor(3)}
    tuned = {"w": torch.tensor([1.5, 1.0]), "step": torch.tensor(9)}
    tau = task_vector(tuned, base)
    assert set(tau) == {"w"} and torch.equal(tau["w"], torch.tensor([0.5, -1.0]))
    assert torch.equal(add_task_vector(base, tau)["w"], tuned["w"])
    assert torch.equal(add_task_vector(base, negate(tau))["w"], torch.tensor([0.5, 3.0]))
    assert torch.equal(add_task_vector(base, tau, scale=2.0)["w"], torch.tensor([2.0, 0.0]))
    other = {"w": torch.tensor([1.0, 1.0]), "v": torch.tensor([2.0])}
    merged = combine([tau, other], [0.5, 2.0])
    assert torch.equal(merged["w"], torch.tensor([2.25, 1.5])) and torch.equal(merged["v"], torch.tensor([4.0]))
    with pytest.raises(ConfigError, match="different tensors"):
        task_vector({"w": base["w"]}, base)
    with pytest.raises(ConfigError, match="lacks"):
        add_task_vector(base, other)


@pytest.mark.parametrize("dora", [False, True])
def test_lora_task_vector_equals_merged_minus_base(dora):
    base = tiny_lm()
    model = apply_lora(copy.deepcopy(base), LoraConfig(r=4, targets=ALL, dora=dora))
    randomise_b(model)
    with torch.no_grad():
        tau = lora_task_vector(model)
        expected = task_vector(merge_and_unload(model).state_dict(), base.state_dict())
    assert set(tau) <= set(expected)
    for k, v in expected.items():
        assert (tau.get(k, torch.zeros_like(v)) - v).abs().max() <= 1e-6, k
    assert math.isclose(sum(float(v.abs().sum()) for v in negate(tau).values()),
                        sum(float(v.abs().sum()) for v in tau.values()))


# --- parity with HF PEFT --------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"rslora": True}, {"dora": True}])
def test_parity_with_hf_peft_lora(options):
    peft = pytest.importorskip("peft")
    base = tiny_llama()
    targets = ["q_proj", "v_proj", "o_proj", "down_proj"]
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets,
        use_rslora=options.get("rslora", False), use_dora=options.get("dora", False)))
    ours = apply_lora(copy.deepcopy(base), LoraConfig(r=4, alpha=8, targets=targets, **options))
    randomise_b(ours)
    pairs = []
    with torch.no_grad():
        for name, mine in ours.named_modules():
            if isinstance(mine, LoraLinear):
                other = theirs.base_model.model.get_submodule(name)
                other.lora_A["default"].weight.copy_(mine.lora_A)
                other.lora_B["default"].weight.copy_(mine.lora_B)
                if mine.magnitude is not None:
                    other.lora_magnitude_vector["default"].weight.copy_(mine.magnitude)
                pairs.append((mine, other))
    assert len(pairs) == 2 * len(targets)
    forward_backward_both(ours, theirs)
    for mine, other in pairs:
        torch.testing.assert_close(mine.lora_A.grad, other.lora_A["default"].weight.grad, rtol=0, atol=1e-7)
        torch.testing.assert_close(mine.lora_B.grad, other.lora_B["default"].weight.grad, rtol=0, atol=1e-7)
        if mine.magnitude is not None:
            torch.testing.assert_close(mine.magnitude.grad,
                                       other.lora_magnitude_vector["default"].weight.grad, rtol=0, atol=1e-7)


def test_damaged_adapter_files_give_one_clear_error(tmp_path):
    base = tiny_lm()
    out = save_adapter(apply_lora(copy.deepcopy(base), LoraConfig(r=2)), tmp_path / "a")
    (out / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read the adapter"):
        load_adapter(copy.deepcopy(base), out)
    out = save_adapter(apply_lora(copy.deepcopy(base), LoraConfig(r=2)), tmp_path / "b")
    config = json.loads((out / "adapter_config.json").read_text())
    config["config"]["r"] = 3  # the weights on disk have rank 2
    (out / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="shape"):
        load_adapter(copy.deepcopy(base), out)
    config["method"] = "lorax"
    (out / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="unknown PEFT method 'lorax'"):
        load_adapter(copy.deepcopy(base), out)
