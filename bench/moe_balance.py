"""Expert load with and without balancing, on a tiny synthetic regression task, plus the MoE
layer's speed against transformers' MixtralSparseMoeBlock with the same weights.

The task: inputs x = mu + N(0, I) share a common direction mu (as transformer hidden states
do), targets come from a fixed random teacher MLP; an 8-expert MoE is trained on it with plain
torch AdamW. Without balancing the router sends the shared direction to a few experts and the
others starve; with the Switch loss or DeepSeek-V3's bias every expert stays within 2x of
uniform. Usage: python bench/moe_balance.py [--steps 200] [--seeds 3]; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from lmlab.models.moe import MoE

D_MODEL, D_HIDDEN, N_EXPERTS, BATCH, MEAN_NORM = 16, 32, 8, 256, 3.0

CONFIGS = {
    # name: MoE options
    "top1_none": {"top_k": 1, "renormalize": False, "balance_loss_weight": 0.0},
    "top1_switch_loss": {"top_k": 1, "renormalize": False, "balance_loss_weight": 0.01},
    "top1_bias": {"top_k": 1, "renormalize": False, "balance_loss_weight": 0.0, "bias_update_rate": 1e-2},
    "top2_none": {"top_k": 2, "balance_loss_weight": 0.0},
    "top2_switch_loss": {"top_k": 2, "balance_loss_weight": 0.01},
    "top2_bias": {"top_k": 2, "balance_loss_weight": 0.0, "bias_update_rate": 1e-2},
    "top2_bias_slow": {"top_k": 2, "balance_loss_weight": 0.0, "bias_update_rate": 1e-3},
    "top2_sigmoid_none": {"top_k": 2, "score": "sigmoid", "balance_loss_weight": 0.0},
    "top2_sigmoid_bias": {"top_k": 2, "score": "sigmoid", "balance_loss_weight": 0.0, "bias_update_rate": 1e-2},
    "switch_cf1.25_none": {"top_k": 1, "routing": "switch", "capacity_factor": 1.25, "balance_loss_weight": 0.0},
    "switch_cf1.25_loss": {"top_k": 1, "routing": "switch", "capacity_factor": 1.25,
                           "balance_loss_weight": 0.01, "z_loss_weight": 1e-3},
}


def train_tiny(options: dict, *, seed: int = 0, steps: int = 200, window: int = 20) -> dict:
    """Train one MoE on the teacher task; load statistics are over the last ``window`` steps."""
    torch.manual_seed(seed)
    mu = torch.randn(D_MODEL)
    mu = MEAN_NORM * mu / mu.norm()
    teacher = nn.Sequential(nn.Linear(D_MODEL, 64), nn.Tanh(), nn.Linear(64, D_MODEL))
    moe = MoE(D_MODEL, D_HIDDEN, N_EXPERTS, **options)
    optimizer = torch.optim.AdamW(moe.parameters(), lr=3e-3)
    start = time.perf_counter()
    for step in range(steps):
        x = mu + torch.randn(BATCH, D_MODEL)
        with torch.no_grad():
            y = teacher(x)
        loss = nn.functional.mse_loss(moe(x), y)
        (loss + moe.aux_loss).backward()
        optimizer.step()
        optimizer.zero_grad()
        moe.update_balance_bias()
        if step == steps - window - 1:
            moe.load_stats(reset=True)
    stats = moe.load_stats()
    moe.eval()
    with torch.no_grad():
        x = mu + torch.randn(4096, D_MODEL)
        test_loss = nn.functional.mse_loss(moe(x), teacher(x)).item()
    return {
        "test_mse": test_loss,
        "max_over_uniform": stats["max_over_uniform"],
        "min_over_uniform": stats["min_over_uniform"],
        "idle_experts": sum(share < 0.01 for share in stats["load"]),
        "dropped_fraction": stats["dropped_fraction"],
        "load": [round(share, 3) for share in stats["load"]],
        "seconds": time.perf_counter() - start,
    }


def speed_against_mixtral(tokens: int = 4096, repeats: int = 20) -> dict:
    """Forward+backward time of our top-2 layer vs transformers' Mixtral block, same weights."""
    try:
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    except ImportError:
        return {"skipped": "transformers is not installed"}
    torch.manual_seed(0)
    d_model, d_hidden = 64, 128
    ours = MoE(d_model, d_hidden, N_EXPERTS, top_k=2)
    config = MixtralConfig(hidden_size=d_model, intermediate_size=d_hidden, num_local_experts=N_EXPERTS,
                           num_experts_per_tok=2)
    theirs = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        theirs.gate.weight.copy_(ours.router.weight)
        for e, expert in enumerate(ours.experts):
            theirs.experts.gate_up_proj[e].copy_(torch.cat([expert.gate.weight, expert.up.weight]))
            theirs.experts.down_proj[e].copy_(expert.down.weight)
    x = torch.randn(1, tokens, d_model)

    def run(layer) -> torch.Tensor:
        out = layer(x)
        out = out[0] if isinstance(out, tuple) else out
        out.square().mean().backward()
        return out.detach()

    max_diff = (run(ours) - run(theirs)).abs().max().item()
    times = {}
    for name, layer in (("ours", ours), ("mixtral", theirs)):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(layer)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    return {
        "tokens": tokens, "max_abs_diff": max_diff,
        "ours_tokens_per_s": tokens / times["ours"], "mixtral_tokens_per_s": tokens / times["mixtral"],
        "speed_ratio": times["mixtral"] / times["ours"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name, options in CONFIGS.items():
        runs = [train_tiny(options, seed=seed, steps=args.steps) for seed in range(args.seeds)]
        summary = {key: statistics.mean(run[key] for run in runs)
                   for key in ("test_mse", "max_over_uniform", "min_over_uniform", "idle_experts",
                               "dropped_fraction", "seconds")}
        summary["worst_max_over_uniform"] = max(run["max_over_uniform"] for run in runs)
        summary["load_seed0"] = runs[0]["load"]
        results[name] = summary
        print(f"{name:22s} max/uniform {summary['max_over_uniform']:.2f} (worst "
              f"{summary['worst_max_over_uniform']:.2f})  min/uniform {summary['min_over_uniform']:.2f}  "
              f"idle {summary['idle_experts']:.1f}  dropped {summary['dropped_fraction']:.3f}  "
              f"test mse {summary['test_mse']:.4f}", flush=True)
    speed = speed_against_mixtral()
    print(f"speed vs Mixtral block: {speed}", flush=True)
    print(json.dumps({"benchmark": "moe_balance", "steps": args.steps, "seeds": args.seeds,
                      "n_experts": N_EXPERTS, "configs": results, "speed_vs_mixtral": speed}))


if __name__ == "__main__":
    main()
