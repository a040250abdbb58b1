"""Dense vs mixture-of-experts GPT-2-style character LMs on tiny Shakespeare, same active parameters.

Three runs of ``pretrain("gpt2")`` with the same data, steps and seed: a dense model (MLP width
d_ff), a top-1 MoE with ``--experts`` experts of width d_ff (so each token computes exactly as many
MLP parameters as in the dense model) with the Switch balancing loss, and the same MoE with no
balancing. Reported: validation loss, training tokens/s (ratio to dense, measured in this run),
the final per-expert load (max / min share over uniform) and a PNG of expert load over training.
Run: LMLAB_DATA=../shared/data python bench/moe.py [--steps 200] [--plot PNG] (default
bench-out/moe_load.png; ``--plot docs/moe_load.png`` replaces the figure of docs/encoders.md);
the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.data import data_root, from_texts  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import pretrain  # noqa: E402


def load_history(run: Path) -> list[dict]:
    """(step, {layer: load shares}) records of a run's metrics.jsonl."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in records if "expert_load" in r]


def plot(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.5), sharey=True)
    for ax, (name, history) in zip(axes, histories.items(), strict=True):
        layer = sorted(history[0]["expert_load"])[-1]
        steps = [r["step"] for r in history]
        loads = list(zip(*[r["expert_load"][layer]["load"] for r in history], strict=True))
        for e, share in enumerate(loads):
            ax.plot(steps, share, label=f"expert {e}")
        ax.axhline(1 / len(loads), color="grey", ls="--", lw=0.8)
        ax.set_title(f"{name} ({layer})")
        ax.set_xlabel("step")
    axes[0].set_ylabel("share of routed tokens")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--plot", default="bench-out/moe_load.png")
    args = parser.parse_args()
    torch.set_num_threads(2)
    text = (data_root() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    cut = int(0.9 * len(text))
    train, valid = from_texts([text[:cut]], "shakespeare:train"), from_texts([text[cut:]], "shakespeare:valid")
    tokenizer = WordLevelTokenizer("char").train(train)
    base = dict(d_model=args.d_model, n_layers=args.layers, n_heads=4, d_ff=4 * args.d_model)
    runs = {"dense": base,
            "moe_switch_loss": {**base, "moe_experts": args.experts, "moe_top_k": 1, "moe_routing": "topk",
                                "moe_balance_loss": 0.01},
            "moe_no_balancing": {**base, "moe_experts": args.experts, "moe_top_k": 1, "moe_routing": "topk",
                                 "moe_balance_loss": 0.0}}
    training = dict(steps=args.steps, lr=2e-3, warmup=max(args.steps // 10, 1), device="cpu",
                    log_every=max(args.steps // 20, 1))
    results: dict = {"data": "tiny Shakespeare characters (90/10 split)", "steps": args.steps,
                     "batch_size": args.batch_size, "context": args.context, **base}
    histories = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in runs.items():
            run = pretrain("gpt2", train, tokenizer, Path(tmp) / name, model=settings, training=training,
                           valid=valid, batch_size=args.batch_size, context=args.context, eval_batches=20)
            model = run.model
            active = sum(p.numel() for n, p in model.named_parameters()
                         if not (".experts." in n and not n.split(".experts.")[1].startswith("0.")))
            entry = {"valid_loss": run.valid_loss, "train_loss": run.train.final_loss,
                     "tokens_per_s": run.train.tokens / run.train.seconds,
                     "parameters": sum(p.numel() for p in model.parameters()), "active_parameters": active}
            if name != "dense":
                history = load_history(Path(tmp) / name)
                histories[name] = history
                last = history[-1]["expert_load"]
                entry["max_over_uniform"] = max(s["max_over_uniform"] for s in last.values())
                entry["min_over_uniform"] = min(s["min_over_uniform"] for s in last.values())
            results[name] = entry
    dense = results["dense"]
    for name in ("moe_switch_loss", "moe_no_balancing"):
        results[name]["speed_ratio_to_dense"] = results[name]["tokens_per_s"] / dense["tokens_per_s"]
        results[name]["valid_loss_minus_dense"] = results[name]["valid_loss"] - dense["valid_loss"]
    plot(histories, Path(args.plot))
    results["plot"] = args.plot
    print(json.dumps(results))


if __name__ == "__main__":
    main()
