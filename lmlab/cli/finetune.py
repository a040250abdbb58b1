"""``lmlab finetune``: supervised fine-tuning of a transformer with one PEFT method (or fully).

The recipe is ``lmlab.train.finetune.finetune``: conversations from a JSON Lines file are rendered
with the model's chat template and trained on their assistant tokens by the one trainer. ``--out`` receives the adapter
(``adapter_config.json`` + ``adapter_model.safetensors``, usable as ``--adapter``), the run's
metrics and ``finetune.json``. ``--dry-run`` only reports the predicted training memory.
"""

from __future__ import annotations

import argparse

from .common import add_common, check_outputs, emit, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="supervised fine-tuning with LoRA, QLoRA, adapters, prefix/prompt "
                                        "tuning, IA3, BitFit or fully",
                       description="Fine-tune a chat model on conversations (JSONL: 'messages', or Alpaca's "
                                   "'instruction'/'input'/'output', or 'prompt'/'completion'); the loss covers "
                                   "assistant tokens only.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="a model directory or built-in name")
    p.add_argument("--method", required=True,
                   help="lora, qlora, adapter, prefix, prompt, ia3, bitfit or full (lmlab.train.finetune.METHODS)")
    p.add_argument("--data", required=True, help="training conversations (JSON Lines)")
    p.add_argument("--eval-data", help="held-out conversations (default: the last --eval-rows of --data)")
    p.add_argument("--eval-rows", type=int, default=32, help="rows held out of --data when no --eval-data")
    p.add_argument("--max-rows", type=int, default=None, help="read at most this many rows of --data")
    p.add_argument("--out", help="output directory: the adapter, run/metrics.jsonl and finetune.json")
    p.add_argument("--dry-run", action="store_true", help="predict the training memory and stop")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--max-seq-len", type=int, default=256, help="tokens per row; longer examples are truncated")
    g.add_argument("--no-pack", action="store_true", help="one example per row (prompt tuning never packs)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per method)")
    g.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 10%% of --steps)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: bf16 autocast, and frozen linear weights stored in bf16 (no fp32 copy)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                   help="deterministic kernels only, so a run on several threads reproduces bit for bit (same "
                        "thread count; default on, --no-deterministic allows the others)")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="keep only each layer's input for the backward pass and recompute the rest there "
                        "(less memory, about a third more compute)")
    m = p.add_argument_group("method")
    m.add_argument("--targets", default=None,
                   help="comma-separated module patterns (default: every linear layer of the blocks; "
                        "adapters: attention output and MLP; prefix: attention)")
    m.add_argument("--rank", type=int, default=8, help="LoRA/QLoRA rank")
    m.add_argument("--alpha", type=float, default=16.0, help="LoRA/QLoRA alpha")
    m.add_argument("--lora-dropout", type=float, default=0.0)
    m.add_argument("--bottleneck", type=int, default=16, help="bottleneck adapter width")
    m.add_argument("--n-tokens", type=int, default=None, help="soft tokens (prompt, default 20) or prefix length (10)")
    add_common(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The ``FinetuneConfig`` the flags ask for (checked there: bad values name the setting)."""
    from ..train.finetune import FinetuneConfig

    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    return FinetuneConfig(method=args.method, steps=args.steps, batch_size=args.batch_size,
                          max_seq_len=args.max_seq_len, pack=not args.no_pack, lr=args.lr, warmup=args.warmup,
                          seed=args.seed, device=args.device, precision=args.precision,
                          activation_checkpointing=args.activation_checkpointing,
                          deterministic=args.deterministic, eval_rows=args.eval_rows,
                          max_rows=args.max_rows, targets=targets, rank=args.rank, alpha=args.alpha,
                          lora_dropout=args.lora_dropout, bottleneck=args.bottleneck, n_tokens=args.n_tokens)


def run(args: argparse.Namespace) -> int:
    from ..train.finetune import finetune

    check_outputs(args, dirs=("out",))
    config = config_from_args(args)
    result = finetune(args.model, args.data, config, out=args.out, eval_data=args.eval_data, dry_run=args.dry_run,
                      on_status=lambda message: status(args, message))
    predicted = result["predicted_memory_bytes"]
    head = (f"{args.method}: {result['trainable_params']:,} trainable parameters "
            f"({result['trainable_percent']:.2f} %)")
    if args.dry_run:
        mib = [[k, f"{v / 2**20:,.0f} MiB"] for k, v in predicted.items()]
        human = (f"{head}\npredicted training memory (batch {args.batch_size} × {result['seq_len']}, AdamW):\n"
                 + table(mib, ["part", "memory"]))
    else:
        human = (f"{head}, {result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s, peak memory "
                 f"{result['peak_memory_bytes'] / 2**20:,.0f} MiB (predicted {predicted['total'] / 2**20:,.0f} MiB)\n"
                 f"held-out assistant-token loss {result['eval_loss_before']:.4f} → {result['eval_loss_after']:.4f}\n"
                 f"adapter saved in {result['out']} (use it with --adapter {result['out']})")
    emit(args, result, human)
    return 0
