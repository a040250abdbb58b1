"""``lmlab finetune``: supervised fine-tuning of a transformer with one PEFT method (or fully).

Conversations from a JSON Lines file are rendered with the model's chat template and trained on
their assistant tokens (``lmlab.train.sft``) by the one trainer. ``--out`` receives the adapter
(``adapter_config.json`` + ``adapter_model.safetensors``, usable as ``--adapter``), the run's
metrics and ``finetune.json``. ``--dry-run`` only reports the predicted training memory.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .common import add_common, emit, status, table

METHODS = ("lora", "qlora", "adapter", "prefix", "prompt", "ia3", "bitfit", "full")
#: learning rates that move each method within a few dozen steps (AdamW, cosine decay)
DEFAULT_LR = {"full": 2e-5, "bitfit": 1e-3, "lora": 5e-4, "qlora": 5e-4, "adapter": 1e-3, "ia3": 5e-3,
              "prefix": 1e-3, "prompt": 3e-2}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="supervised fine-tuning with LoRA, QLoRA, adapters, prefix/prompt "
                                        "tuning, IA3, BitFit or fully",
                       description="Fine-tune a chat model on conversations (JSONL: 'messages', or Alpaca's "
                                   "'instruction'/'input'/'output', or 'prompt'/'completion'); the loss covers "
                                   "assistant tokens only.")
    p.add_argument("--model", default="smollm2-135m-instruct", help="a model directory or built-in name")
    p.add_argument("--method", required=True, choices=METHODS)
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


def method_config(args: argparse.Namespace, model: Any):
    """The PEFT config the flags ask for, with target names that fit ``model``."""
    from ..peft import (
        AdapterConfig,
        BitFitConfig,
        FullConfig,
        IA3Config,
        LoraConfig,
        PrefixConfig,
        PromptConfig,
        QLoraConfig,
        block_linear_names,
    )

    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    linear = block_linear_names(model)
    method = args.method
    if method in ("lora", "qlora"):
        cls = LoraConfig if method == "lora" else QLoraConfig
        return cls(r=args.rank, alpha=args.alpha, dropout=args.lora_dropout, targets=targets or linear)
    if method == "ia3":
        down = [n for n in ("down", "down_proj") if n in linear]
        targets = targets or [n for n in ("k_proj", "v_proj") if n in linear] + down
        return IA3Config(targets=targets, input_targets=[t for t in down if t in targets])
    if method == "adapter":
        return AdapterConfig(bottleneck=args.bottleneck, targets=targets or ["o_proj", "mlp"])
    if method == "prefix":
        return PrefixConfig(n_tokens=args.n_tokens or 10, targets=targets or ["attn"], seed=args.seed)
    if method == "prompt":
        return PromptConfig(n_tokens=args.n_tokens or 20, target=(targets or ["embed"])[0], seed=args.seed)
    if method == "bitfit":
        return BitFitConfig(targets=targets or linear, add_missing=True)
    return FullConfig()


def apply_method(model: Any, config) -> Any:
    """Apply ``config``'s method to ``model`` in place."""
    from ..peft.saving import methods

    return methods()[config.method][1](model, config)


def decoder_shape(model: Any):
    """The sizes the activation-memory prediction needs, from a TransformerLM's config."""
    from ..peft import DecoderShape

    c = model.config
    return DecoderShape(c.n_layers, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.vocab_size)


def _check(args: argparse.Namespace) -> None:
    from ..core.errors import ConfigError
    from ..core.validate import check_number

    for name in ("steps", "batch_size", "max_seq_len", "eval_rows", "rank", "bottleneck"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), low=1, integer=True)
    if args.lr is not None:
        check_number("--lr", args.lr, low=0.0, low_inclusive=False)
    if not args.dry_run and not args.out:
        raise ConfigError("finetune needs an output directory", "pass --out DIR (or --dry-run to only predict memory)")


def _load(args: argparse.Namespace):
    from ..core.errors import ConfigError
    from ..models import load_model
    from ..models.transformer import TransformerLM

    lm, tokenizer = load_model(args.model)
    if not isinstance(lm, TransformerLM):
        raise ConfigError(f"{args.model} is a {type(lm).__name__}; finetune trains transformer LMs",
                          "pass a transformer model directory or smollm2-135m-instruct")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{args.model} has no tokenizer with a chat template, so conversations cannot be rendered",
                          "use a chat model (e.g. smollm2-135m-instruct) or one saved with its chat template")
    return lm, tokenizer


def _data(args: argparse.Namespace, tokenizer):
    from ..core.errors import DataError
    from ..train.sft import build_sft_data, read_conversations

    conversations = read_conversations(args.data, args.max_rows)
    if args.eval_data:
        held_out = read_conversations(args.eval_data)
    else:
        if len(conversations) <= args.eval_rows:
            raise DataError(f"{args.data} has {len(conversations)} rows, too few to hold out {args.eval_rows}",
                            "pass --eval-data, or a smaller --eval-rows")
        conversations, held_out = conversations[:-args.eval_rows], conversations[-args.eval_rows:]
    pack = not args.no_pack and args.method != "prompt"
    train = build_sft_data(tokenizer, conversations, args.max_seq_len, pack=pack)
    evaluation = build_sft_data(tokenizer, held_out, args.max_seq_len, pack=False)
    return train, evaluation


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.device import resolve_device
    from ..core.io import write_json
    from ..core.memory import peak_memory_mb, release_free_memory, reset_peak_memory
    from ..peft import cast_frozen_linears, parameter_report, save_adapter, training_memory
    from ..train import TrainConfig, train
    from ..train.metrics import throughput
    from ..train.sft import SFTBatches, SFTObjective, sft_loss

    _check(args)
    status(args, f"loading {args.model} ...")
    lm, tokenizer = _load(args)
    train_data, eval_data = _data(args, tokenizer)
    config = method_config(args, lm)
    apply_method(lm, config)
    report = parameter_report(lm)
    if args.precision == "bf16":
        cast_frozen_linears(lm, torch.bfloat16)
    seq_len = args.max_seq_len + (config.n_tokens if args.method == "prompt" else 0)
    predicted = training_memory(lm, decoder_shape(lm), args.batch_size, seq_len,
                                checkpointing=args.activation_checkpointing)
    result: dict[str, Any] = {"model": str(args.model), "method": args.method, "config": asdict(config),
                              **report, "batch_size": args.batch_size, "max_seq_len": args.max_seq_len,
                              "precision": args.precision, "activation_checkpointing": args.activation_checkpointing,
                              "predicted_memory_bytes": predicted, "data": train_data.summary(),
                              "eval_data": eval_data.summary()}
    if train_data.truncated:
        status(args, f"warning: {train_data.truncated} of {train_data.examples} training examples were longer "
                     f"than --max-seq-len {args.max_seq_len} and were truncated")
    mib = {k: f"{v / 2**20:,.0f} MiB" for k, v in predicted.items()}
    if args.dry_run:
        human = (f"{args.method} on {args.model}: {report['trainable_params']:,} trainable parameters "
                 f"({report['trainable_percent']:.2f} %)\npredicted training memory (batch {args.batch_size} × "
                 f"{seq_len}, AdamW):\n" + table([[k, v] for k, v in mib.items()], ["part", "memory"]))
        emit(args, {**result, "dry_run": True}, human)
        return 0

    out = Path(args.out)
    device = resolve_device(args.device)
    lm.to(device)
    torch.manual_seed(args.seed)
    eval_batches = SFTBatches(eval_data, args.batch_size, shuffle=False).batches()
    status(args, f"{report['trainable_params']:,} trainable parameters; held-out loss before ...")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with autocast:
        before = sft_loss(lm, eval_batches)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.method]
    warmup = args.warmup if args.warmup is not None else args.steps // 10
    train_config = TrainConfig(steps=args.steps, lr=lr, warmup=warmup, min_lr=lr / 10, weight_decay=0.0,
                               seed=args.seed, device=args.device, log_every=1,
                               precision=args.precision, activation_checkpointing=args.activation_checkpointing)
    peak: dict[str, float] = {}

    def on_step(step: int, loss: float) -> None:  # before the trainer writes its final checkpoint
        if step == args.steps:
            peak["mb"] = peak_memory_mb(device) or 0.0

    release_free_memory()  # what loading and the evaluation above freed is not the training's memory
    reset_peak_memory(device)
    trained = train(lm, SFTObjective(), SFTBatches(train_data, args.batch_size, seed=args.seed), train_config,
                    out / "run", on_step=on_step)
    shutil.rmtree(out / "run" / "checkpoints", ignore_errors=True)  # the adapter below is the result
    with autocast:
        after = sft_loss(lm, eval_batches)
    save_adapter(lm, out)
    result.update({"steps": trained.steps, "lr": lr, "train_loss_final": trained.final_loss,
                   "tokens": trained.tokens, "tokens_per_s": throughput(out / "run" / "metrics.jsonl"),
                   "peak_memory_bytes": int(peak.get("mb", 0.0) * 2**20), "eval_loss_before": before,
                   "eval_loss_after": after, "out": str(out), "device": str(device)})
    write_json(out / "finetune.json", result)
    human = (f"{args.method}: {report['trainable_params']:,} trainable parameters, {trained.steps} steps, "
             f"{result['tokens_per_s']:,.0f} tokens/s, peak memory {result['peak_memory_bytes'] / 2**20:,.0f} MiB "
             f"(predicted {predicted['total'] / 2**20:,.0f} MiB)\nheld-out assistant-token loss {before:.4f} → "
             f"{after:.4f}\nadapter saved in {out} (use it with --adapter {out})")
    emit(args, result, human)
    return 0
