"""Memory arithmetic: exact parameter-side bytes, hand-computed activations, and a check of the
activation prediction against the tensors autograd actually keeps."""

from __future__ import annotations

import copy

import pytest
import torch
from test_peft_tiny import batch, tiny_lm

from lmlab.core.errors import ConfigError
from lmlab.peft import (
    IA3Config,
    LoraConfig,
    QLoraConfig,
    apply_full,
    apply_ia3,
    apply_lora,
    apply_qlora,
)
from lmlab.peft.memory import DecoderShape, activation_memory, parameter_memory, training_memory


def adamw_bytes_after_one_step(model) -> int:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    model(batch()).logsumexp(-1).mean().backward()
    opt.step()
    return sum(t.numel() * t.element_size() for state in opt.state.values()
               for t in state.values())


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_and_optimizer_bytes_are_exact(method):
    model = tiny_lm()
    if method == "full":
        apply_full(model)
    else:
        apply_lora(model, LoraConfig(r=4, targets=["q_proj", "down_proj"]))
    predicted = parameter_memory(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert predicted["gradients"] == 4 * sum(p.numel() for p in trained)
    assert predicted["optimizer_states"] == adamw_bytes_after_one_step(model)
    assert predicted["weights"] == sum(t.numel() * 4 for t in model.state_dict().values())
    assert parameter_memory(model, "sgd")["optimizer_states"] == 0
    with pytest.raises(ConfigError, match="optimizer"):
        parameter_memory(model, "adafactor")


def test_qlora_weights_take_about_an_eighth():
    lora = apply_lora(tiny_lm(), LoraConfig(r=4, targets=["*_proj"]))
    qlora = apply_qlora(tiny_lm(), QLoraConfig(r=4, targets=["*_proj"]))
    proj = sum(m.weight.numel() * 4 for n, m in tiny_lm().named_modules() if n.endswith("_proj"))
    saved = parameter_memory(lora)["weights"] - parameter_memory(qlora)["weights"]
    assert 0.85 * proj < saved < proj * (1 - 1 / 8)


def test_activation_formula_by_hand():
    shape = DecoderShape(n_layers=2, hidden=8, intermediate=16, n_heads=2, n_kv_heads=1,
                         vocab_size=10)
    # per token and layer: norms 16 + scores 2·3 + q/k/v 8 + 2·4 + SiLU path 48 = 86,
    # plus inputs kept: qkv 8, o 8, gate/up 8, down 16, norm 16 → 142 for full training
    tokens = 2 * 3
    full = tokens * (2 * 142 * 4 + 2 * 8 * 4 + 2 * 10 * 4)
    assert activation_memory(shape, 2, 3) == full
    frozen = tokens * (2 * 86 * 4 + 8 * 4 + 2 * 10 * 4)
    assert activation_memory(shape, 2, 3, kept=()) == frozen
    assert activation_memory(shape, 2, 3, kept=(), extra_per_token_layer=5, bytes_per_value=2) \
        == tokens * (2 * 91 * 2 + 8 * 2 + 2 * 10 * 4)
    # checkpointing: each layer's input (8) for both layers, plus one layer's activations
    assert activation_memory(shape, 2, 3, checkpointing=True) == tokens * ((2 * 8 + 142) * 4 + 2 * 8 * 4 + 2 * 10 * 4)


def _measured_activation_bytes(model, ids) -> int:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    kept: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(kept.values())


@pytest.mark.parametrize("method", ["full", "lora_qv", "lora_all", "ia3"])
def test_activation_prediction_is_close_to_what_autograd_keeps(method):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, attn_implementation="eager")
    model = transformers.LlamaForCausalLM(config)
    if method == "full":
        apply_full(model)
    elif method == "ia3":
        apply_ia3(model, IA3Config())
    else:
        targets = ["q_proj", "v_proj"] if method == "lora_qv" else ["*_proj"]
        apply_lora(model, LoraConfig(r=4, targets=targets))
    shape = DecoderShape(2, 32, 64, 4, 2, 64)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    predicted = training_memory(copy.deepcopy(model), shape, 4, 16)["activations"]
    measured = _measured_activation_bytes(model, ids)
    assert abs(predicted - measured) <= 0.15 * measured, (predicted, measured)


def test_lora_needs_less_memory_than_full_fine_tuning():
    shape = DecoderShape(2, 32, 48, 4, 2, 50)
    full = training_memory(apply_full(tiny_lm()), shape, 8, 32)
    lora = training_memory(apply_lora(tiny_lm(), LoraConfig(r=4)), shape, 8, 32)
    assert lora["gradients"] < full["gradients"] / 10
    assert lora["activations"] < full["activations"]
    assert full["total"] == sum(v for k, v in full.items() if k != "total")
