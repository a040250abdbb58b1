"""Mixture of experts: routing on hand-built logits, equivalences with a dense MLP, auxiliary
losses, bias balancing, float32 router, gradients, and parity with transformers' MoE blocks."""

import math

import pytest
import torch
from torch import nn

from lmlab.core.errors import ConfigError, InputError
from lmlab.models.moe import (
    GeluMLP,
    MoE,
    SwiGLU,
    expert_capacity,
    expert_choice_routing,
    hash_expert,
    hash_routing,
    load_balancing_loss,
    moe_aux_loss,
    moe_load_stats,
    router_z_loss,
    switch_routing,
    topk_routing,
    upcycle,
    update_balance_biases,
)

E = math.e


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32),
                          atol=tol, rtol=0)


# ---------------------------------------------------------------- routing on hand-built logits


def test_topk_renormalised_weights_by_hand():
    r = topk_routing(torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 3.0, 3.0]]), 2)
    assert r.dispatch.tolist() == [[True, True, False, False], [False, False, True, True]]
    # softmax restricted to the two chosen experts: e^2/(e^2+e), e/(e^2+e)
    assert close(r.weights, [[E / (E + 1), 1 / (E + 1), 0, 0], [0, 0, 0.5, 0.5]])


def test_topk_without_renormalisation_keeps_softmax_probabilities():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = torch.softmax(logits, -1)
    r = topk_routing(logits, 2, renormalize=False)
    assert close(r.weights, [[p[0, 0], p[0, 1], 0, 0]])
    assert close(r.probs, p)


def test_bias_changes_the_choice_but_not_the_weight():
    logits = torch.tensor([[1.0, 0.0, 0.0]])                 # probs e/(e+2), 1/(e+2), 1/(e+2)
    bias = torch.tensor([0.0, 0.5, 0.0])
    r = topk_routing(logits, 1, renormalize=False, bias=bias)
    assert r.dispatch.tolist() == [[False, True, False]]
    assert close(r.weights, [[0, 1 / (E + 2), 0]])
    assert topk_routing(logits, 1, bias=bias).weights.tolist() == [[0.0, 1.0, 0.0]]


def test_sigmoid_scores_deepseek_v3():
    logits = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    s = torch.sigmoid(logits)[0]
    r = topk_routing(logits, 2, score="sigmoid")
    assert r.dispatch.tolist() == [[False, True, False, True]]
    assert close(r.weights, [[0, s[1] / (s[1] + s[3]), 0, s[3] / (s[1] + s[3])]])
    assert close(r.probs.sum(-1), [1.0])


def test_switch_drops_tokens_over_capacity_in_arrival_order():
    # argmax experts: 0, 0, 1, 0, 0, 2 ; capacity 2 -> tokens 3 and 4 overflow expert 0
    logits = torch.tensor([[3.0, 0, 0], [2.0, 1, 0], [0, 1.0, 0], [1.0, 0, 0], [5.0, 0, 0], [0, 0, 1.0]])
    r = switch_routing(logits, capacity=2)
    assert r.dispatch.nonzero().tolist() == [[0, 0], [1, 0], [2, 1], [5, 2]]
    assert r.chosen.sum().item() == 6
    p = torch.softmax(logits, -1)
    assert close(r.weights[0], [p[0, 0], 0, 0]) and close(r.weights[2], [0, p[2, 1], 0])
    assert r.weights[3].abs().sum() == 0 and r.weights[4].abs().sum() == 0
    assert expert_capacity(6, 3, 1.0) == 2 and expert_capacity(7, 3, 1.0) == 3
    assert expert_capacity(8, 4, 1.25) == 3 and expert_capacity(8, 4, 1.0, top_k=2) == 4


def test_expert_choice_each_expert_takes_its_best_tokens():
    logits = torch.tensor([[4.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    r = expert_choice_routing(logits, capacity=2)
    assert r.dispatch.tolist() == [[True, False], [True, False], [False, True], [False, True]]
    r = expert_choice_routing(logits, capacity=3)       # expert 0 also takes token 3 (prob 1/(1+e))
    assert r.dispatch[:, 0].tolist() == [True, True, False, True]
    assert r.dispatch[:, 1].tolist() == [False, True, True, True]
    p = torch.softmax(logits, -1)
    assert close(r.weights[1], p[1])                    # token 1 gets both experts


def test_hash_routing_is_a_fixed_function_of_the_token():
    ids = torch.tensor([[5, 9, 5], [9, 1, 5]])
    r = hash_routing(ids, 4)
    experts = hash_expert(ids.reshape(-1), 4).tolist()
    assert r.dispatch.float().argmax(-1).tolist() == experts and experts[0] == experts[2] == experts[5]
    assert (r.weights.sum(-1) == 1).all()
    counts = torch.bincount(hash_expert(torch.arange(50_000), 8), minlength=8).float()
    assert counts.max() / counts.mean() < 1.05


# ---------------------------------------------------------------- auxiliary losses


def test_balance_loss_is_one_when_uniform_and_n_experts_when_collapsed():
    uniform = topk_routing(torch.zeros(8, 4) + torch.eye(4).repeat(2, 1) * 1e-3, 1)
    assert close(load_balancing_loss(uniform.probs, uniform.chosen), 1.0, 1e-3)
    collapsed = topk_routing(torch.tensor([[100.0, 0, 0, 0]]).repeat(8, 1), 1)
    assert close(load_balancing_loss(collapsed.probs, collapsed.chosen), 4.0, 1e-4)


def test_z_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])   # log-partitions log 2 and log 4
    assert close(router_z_loss(logits), (math.log(2) ** 2 + math.log(4) ** 2) / 2)


def test_losses_equal_transformers():
    switch = pytest.importorskip("transformers.models.switch_transformers.modeling_switch_transformers")
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    r = topk_routing(logits, 1)
    theirs = switch.load_balancing_loss_func(r.probs[None], r.chosen.float().argmax(-1)[None])
    assert close(load_balancing_loss(r.probs, r.chosen), theirs, 1e-5)
    assert close(router_z_loss(logits), switch.router_z_loss_func(logits[None]), 1e-5)
    r2 = topk_routing(logits, 2)
    # Mixtral counts top-k choices per token (its minimum is k); ours is normalised to 1
    theirs2 = mixtral.load_balancing_loss_func((logits,), num_experts=8, top_k=2)
    assert close(load_balancing_loss(r2.probs, r2.chosen), theirs2 / 2, 1e-5)


# ---------------------------------------------------------------- the layer


def test_one_expert_top1_equals_the_dense_mlp():
    torch.manual_seed(0)
    for factory in (SwiGLU, GeluMLP):
        moe = MoE(16, 32, 1, top_k=1, expert_factory=factory)
        x = torch.randn(2, 5, 16)
        assert torch.allclose(moe(x), moe.experts[0](x), atol=1e-6)


def test_upcycled_moe_equals_the_dense_mlp_at_init():
    torch.manual_seed(1)
    dense = SwiGLU(16, 48)
    x = torch.randn(3, 7, 16)
    for options in ({"top_k": 2}, {"top_k": 1}, {"top_k": 2, "routing": "noisy_topk"},
                    {"top_k": 3, "score": "sigmoid"}):
        moe = upcycle(dense, 4, d_model=16, **options)
        moe.eval()
        assert torch.allclose(moe(x), dense(x), atol=1e-6), options
        assert all(torch.equal(e.up.weight, dense.up.weight) for e in moe.experts)
        assert moe.experts[0].up.weight is not dense.up.weight          # copies, not shared
    with pytest.raises(ConfigError):
        upcycle(dense, 4, d_model=16, n_shared_experts=1)


def test_output_is_the_weighted_sum_of_chosen_experts_plus_shared():
    torch.manual_seed(2)
    moe = MoE(8, 16, 4, top_k=2, n_shared_experts=1)
    x = torch.randn(10, 8)
    routing = topk_routing(moe.router_logits(x), 2)
    expected = moe.shared_experts[0](x)
    for e, expert in enumerate(moe.experts):
        expected = expected + routing.weights[:, e:e + 1] * expert(x)
    assert torch.allclose(moe(x), expected, atol=1e-6)


def test_switch_layer_drops_tokens_and_reports_it():
    torch.manual_seed(3)
    moe = MoE(8, 16, 4, top_k=1, routing="switch", capacity_factor=1.0)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0                           # every positive-sum token wants expert 0
    x = torch.rand(2, 6, 8) + 0.1                            # 12 tokens, capacity ceil(12/4) = 3
    y = moe(x).reshape(12, 8)
    assert (y[3:] == 0).all() and (y[:3] != 0).any()
    stats = moe.load_stats()
    assert stats["load"] == [1.0, 0.0, 0.0, 0.0]
    assert close(stats["dropped_fraction"], 9 / 12) and close(stats["max_over_uniform"], 4.0)
    assert moe.load_stats()["load"] == [0.0] * 4            # reset


def test_expert_choice_and_hash_layers():
    torch.manual_seed(4)
    x = torch.randn(2, 8, 8)
    ec = MoE(8, 16, 4, top_k=2, routing="expert_choice", capacity_factor=1.0)
    ec(x)
    assert ec.load_stats()["load"] == [0.25] * 4             # each expert takes exactly 2*16/4 tokens
    hashed = MoE(8, 16, 4, routing="hash", top_k=1)
    ids = torch.randint(100, (2, 8))
    y = hashed(x, token_ids=ids).reshape(16, 8)
    experts = hash_expert(ids.reshape(-1), 4)
    assert torch.allclose(y[0], hashed.experts[int(experts[0])](x.reshape(16, 8)[0]), atol=1e-6)
    with pytest.raises(InputError):
        hashed(x)


def test_padding_is_left_out_of_routing_and_statistics():
    torch.manual_seed(11)
    moe = MoE(8, 16, 4, top_k=1, routing="switch", capacity_factor=1.0)
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True, True, True, False, False, False]])
    y = moe(x, token_mask=mask)
    assert (y[1, 3:] == 0).all()
    real = x[mask]                                           # the 9 real tokens, in order
    stats_masked = moe.load_stats()
    assert torch.allclose(y[mask], moe(real), atol=1e-6)     # capacity counts real tokens only
    assert moe.load_stats() == stats_masked
    with pytest.raises(InputError):
        moe(x, token_mask=torch.ones(3, dtype=torch.bool))
    assert (moe(x, token_mask=torch.zeros(2, 6, dtype=torch.bool)) == 0).all()
    assert moe.aux_loss == 0


def test_router_runs_in_float32_under_low_precision():
    torch.manual_seed(5)
    moe = MoE(16, 32, 4).to(torch.bfloat16)
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    logits = moe.router_logits(x)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, x.float() @ moe.router.weight.float().T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert moe.router_logits(x.float()).dtype == torch.float32
        assert moe(x).dtype == torch.bfloat16


def test_gradients_reach_router_noise_experts_and_shared_experts():
    torch.manual_seed(6)
    moe = MoE(8, 16, 4, top_k=2, routing="noisy_topk", n_shared_experts=1, z_loss_weight=1e-3)
    with torch.no_grad():
        moe.noise.weight.normal_()                   # zero-initialised noise has gradient only through softplus
    out = moe(torch.randn(32, 8))
    (out.square().mean() + moe_aux_loss(moe)).backward()
    for name, param in moe.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_noise_only_in_training():
    torch.manual_seed(7)
    moe = MoE(8, 16, 4, top_k=1, routing="noisy_topk")
    with torch.no_grad():
        moe.noise.weight.fill_(3.0)
    x = torch.randn(64, 8)
    moe.eval()
    assert torch.equal(moe(x), moe(x))
    moe.train()
    assert not torch.equal(moe(x), moe(x))


def test_bias_step_rule_by_hand():
    moe = MoE(4, 8, 4, top_k=1, bias_update_rate=0.1)
    moe.pending_load.copy_(torch.tensor([3.0, 1.0, 0.0, 0.0]))        # mean 1
    update_balance_biases(nn.Sequential(moe))
    assert close(moe.balance_bias, [-0.1, 0.0, 0.1, 0.1])
    assert moe.pending_load.sum() == 0
    assert not moe.balance_bias.requires_grad and "balance_bias" in moe.state_dict()


def test_aux_loss_and_stats_for_a_whole_model():
    torch.manual_seed(8)
    model = nn.Sequential(MoE(8, 16, 4, balance_loss_weight=0.5), nn.ReLU(), MoE(8, 16, 4, z_loss_weight=0.25))
    model(torch.randn(3, 5, 8))
    first, second = model[0], model[2]
    expected = 0.5 * first.last_losses["balance_loss"] + 0.01 * second.last_losses["balance_loss"] \
        + 0.25 * second.last_losses["z_loss"]
    assert close(moe_aux_loss(model), expected)
    stats = moe_load_stats(model)
    assert set(stats) == {"0", "2"} and close(sum(stats["0"]["load"]), 1.0)


def test_bad_configurations_are_refused():
    with pytest.raises(ConfigError):
        MoE(8, 16, 4, routing="switch", top_k=2)
    with pytest.raises(ConfigError):
        MoE(8, 16, 4, routing="nope")
    with pytest.raises(ConfigError):
        MoE(8, 16, 4, top_k=5)
    with pytest.raises(ConfigError):
        MoE(8, 16, 4, routing="hash", bias_update_rate=0.1)
    with pytest.raises(InputError):
        MoE(8, 16, 4)(torch.randn(2, 7))


# ---------------------------------------------------------------- parity with transformers


def test_topk_layer_equals_mixtral_sparse_moe_block():
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    from transformers import MixtralConfig

    torch.manual_seed(9)
    config = MixtralConfig(hidden_size=16, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2)
    block = mixtral.MixtralSparseMoeBlock(config).eval()
    ours = MoE(16, 24, 4, top_k=2)
    with torch.no_grad():
        block.gate.weight.copy_(ours.router.weight)
        for e, expert in enumerate(ours.experts):
            block.experts.gate_up_proj[e].copy_(torch.cat([expert.gate.weight, expert.up.weight]))
            block.experts.down_proj[e].copy_(expert.down.weight)
    x = torch.randn(2, 9, 16)
    theirs = block(x)
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    assert (ours(x) - theirs).abs().max() < 1e-5


def test_switch_routing_equals_switch_transformers_router():
    switch = pytest.importorskip("transformers.models.switch_transformers.modeling_switch_transformers")
    from transformers import SwitchTransformersConfig

    torch.manual_seed(10)
    config = SwitchTransformersConfig(d_model=16, num_experts=4, expert_capacity=5, router_jitter_noise=0.0)
    router = switch.SwitchTransformersTop1Router(config).eval()
    x = torch.randn(1, 20, 16)
    dispatch, top_prob, logits = router(x)
    ours = switch_routing(logits[0], capacity=5)
    assert torch.equal(ours.dispatch, dispatch[0].bool())
    assert close(ours.weights.sum(-1)[ours.dispatch.any(-1)], top_prob[0, :, 0][dispatch[0].any(-1)])
