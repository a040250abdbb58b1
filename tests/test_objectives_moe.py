"""MoE as a drop-in MLP for any preset: one expert with k=1 is the dense model, the parameter
formula counts experts and routers, KV-cached decoding still equals the full forward, the
trainer adds the balancing loss and logs per-expert load, and ``--moe-*`` on ``lmlab pretrain``."""

import json

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.models.config import TransformerConfig
from lmlab.models.moe import MoE
from lmlab.models.transformer import TransformerLM
from lmlab.train.trainer import TrainConfig, train

V = 29


def make(preset="gpt2", seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig.from_preset(preset, vocab_size=V, d_model=32, n_layers=2, n_heads=4,
                                                       context_length=16, **kw)).eval()


@pytest.mark.parametrize("preset", ["gpt2", "llama", "bert"])
def test_one_expert_top1_equals_the_dense_model(preset):
    dense, moe = make(preset), make(preset, moe_experts=1, moe_top_k=1)
    state = {}
    for name, tensor in dense.state_dict().items():
        state[name.replace(".mlp.", ".mlp.experts.0.") if ".mlp." in name else name] = tensor
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert not unexpected and all("router" in m or "balance_bias" in m for m in missing)
    ids = torch.randint(0, V, (2, 10))
    assert torch.allclose(moe(ids)[0], dense(ids)[0], atol=1e-5)
    assert isinstance(moe.blocks[0].mlp, MoE)


@pytest.mark.parametrize("routing,k", [("topk", 2), ("switch", 1), ("noisy_topk", 2), ("hash", 1),
                                       ("expert_choice", 1)])
def test_parameter_formula_counts_experts_and_routers(routing, k):
    m = make("llama", moe_experts=4, moe_top_k=k, moe_routing=routing)
    assert sum(p.numel() for p in m.parameters()) == m.config.num_parameters()


def test_cached_decoding_equals_full_forward_with_topk_experts():
    m = make("gpt2", moe_experts=4, moe_top_k=2)
    ids = torch.randint(0, V, (2, 9))
    full, _ = m(ids)
    state, steps = m.initial_state(2), []
    for t in range(9):
        logits, state = m(ids[:, t:t + 1], state)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


class Windows:
    def batch(self, step, rank=0, world=1):
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(0, V, (8, 13), generator=g)
        return {"input": ids[:, :-1], "target": ids[:, 1:]}


def test_trainer_adds_the_balancing_loss_and_logs_expert_load(tmp_path):
    from lmlab.train.objectives import CausalLM

    m = make("gpt2", moe_experts=4, moe_top_k=1, moe_routing="switch", moe_balance_loss=0.5)
    train(m, CausalLM(), Windows(), TrainConfig(steps=4, lr=1e-3, device="cpu", log_every=2), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loads = [r["expert_load"] for r in records if "expert_load" in r]
    assert len(loads) == 2 and set(loads[0]) == {"blocks.0.mlp", "blocks.1.mlp"}
    for layer in loads[-1].values():
        assert len(layer["load"]) == 4 and abs(sum(layer["load"]) - 1.0) < 1e-6
        assert layer["balance_loss"] >= 1.0 - 1e-6  # Switch's loss is at least 1 (uniform)


def test_pretrain_cli_moe_options(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.models import load_model

    out = tmp_path / "run"
    assert main(["pretrain", "--family", "llama", "--train", "embedded:test", "--d-model", "32",
                 "--n-layers", "1", "--n-heads", "2", "--steps", "2", "--context", "16", "--batch-size", "4",
                 "--moe-experts", "4", "--moe-top-k", "1", "--moe-routing", "switch", "--out", str(out),
                 "--json"]) == 0
    capsys.readouterr()
    model, _ = load_model(out / "model")
    assert model.config.moe_experts == 4 and isinstance(model.blocks[0].mlp, MoE)
    assert "expert_load" in (out / "metrics.jsonl").read_text()
