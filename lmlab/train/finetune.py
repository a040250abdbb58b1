"""Supervised fine-tuning as a recipe: a chat model, one PEFT method (or all weights), conversations.

``finetune(model, data, FinetuneConfig(method=...), out=DIR)`` renders conversations with the
model's chat template (``lmlab.train.sft``: loss on assistant tokens only, packing), wraps the
model with the method (``lmlab.peft``), trains it with the one trainer, and saves the adapter
(``adapter_config.json`` + ``adapter_model.safetensors``), the run's metrics and
``finetune.json`` in ``out``. It reports trainable parameters, held-out loss before and after,
tokens/s and measured against predicted memory; ``dry_run`` only predicts the memory.
``lmlab finetune`` is this function behind flags.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError, DataError
from ..core.validate import check_choice, check_number
from .sft import SFTBatches, SFTObjective, build_sft_data, read_conversations, sft_loss
from .trainer import TrainConfig, train

METHODS = ("lora", "qlora", "adapter", "prefix", "prompt", "ia3", "bitfit", "full")
#: learning rates that move each method within a few dozen steps (AdamW, cosine decay)
DEFAULT_LR = {"full": 2e-5, "bitfit": 1e-3, "lora": 5e-4, "qlora": 5e-4, "adapter": 1e-3, "ia3": 5e-3,
              "prefix": 1e-3, "prompt": 3e-2}


@dataclass
class FinetuneConfig:
    """The method and its training knobs (see ``lmlab finetune --help`` for each)."""

    method: str
    steps: int = 100
    batch_size: int = 4
    max_seq_len: int = 256
    pack: bool = True  # prompt tuning never packs
    lr: float | None = None  # None: DEFAULT_LR[method]
    warmup: int | None = None  # None: 10 % of the steps
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    activation_checkpointing: bool = False
    deterministic: bool = True  # deterministic kernels: a several-thread run reproduces bit for bit
    eval_rows: int = 32  # rows held out of the data when no eval data is given
    max_rows: int | None = None
    targets: list[str] | None = None
    rank: int = 8
    alpha: float = 16.0
    lora_dropout: float = 0.0
    bottleneck: int = 16
    n_tokens: int | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        for name in ("steps", "batch_size", "max_seq_len", "eval_rows", "rank", "bottleneck"):
            check_number(name, getattr(self, name), low=1, integer=True)
        for name in ("max_rows", "n_tokens"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), low=1, integer=True)
        if self.lr is not None:
            check_number("lr", self.lr, low=0.0, low_inclusive=False)
        if self.warmup is not None:
            check_number("warmup", self.warmup, low=0, integer=True)
        check_number("lora_dropout", self.lora_dropout, low=0.0, high=1.0, high_inclusive=False)
        check_choice("precision", self.precision, ("fp32", "bf16"))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


def method_config(config: FinetuneConfig, model: Any):
    """The PEFT config of ``config.method``, with target names that fit ``model``."""
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

    targets, linear, method = config.targets, block_linear_names(model), config.method
    if method in ("lora", "qlora"):
        cls = LoraConfig if method == "lora" else QLoraConfig
        return cls(r=config.rank, alpha=config.alpha, dropout=config.lora_dropout, targets=targets or linear)
    if method == "ia3":
        down = [n for n in ("down", "down_proj") if n in linear]
        targets = targets or [n for n in ("k_proj", "v_proj") if n in linear] + down
        return IA3Config(targets=targets, input_targets=[t for t in down if t in targets])
    if method == "adapter":
        return AdapterConfig(bottleneck=config.bottleneck, targets=targets or ["o_proj", "mlp"])
    if method == "prefix":
        return PrefixConfig(n_tokens=config.n_tokens or 10, targets=targets or ["attn"], seed=config.seed)
    if method == "prompt":
        return PromptConfig(n_tokens=config.n_tokens or 20, target=(targets or ["embed"])[0], seed=config.seed)
    if method == "bitfit":
        return BitFitConfig(targets=targets or linear, add_missing=True)
    return FullConfig()


def apply_method(model: Any, peft_config: Any) -> Any:
    """Apply a PEFT config's method to ``model`` in place."""
    from ..peft.saving import methods

    return methods()[peft_config.method][1](model, peft_config)


def decoder_shape(model: Any):
    """The sizes the activation-memory prediction needs, from a TransformerLM's config."""
    from ..peft import DecoderShape

    c = model.config
    return DecoderShape(c.n_layers, c.d_model, c.d_ff, c.n_heads, c.n_kv_heads, c.vocab_size)


def load_chat_model(name: str) -> tuple[Any, Any]:
    """A transformer with a chat-template tokenizer (what SFT needs), or a clear error."""
    from ..models import load_model
    from ..models.transformer import TransformerLM

    lm, tokenizer = load_model(name)
    if not isinstance(lm, TransformerLM):
        raise ConfigError(f"{name} is a {type(lm).__name__}; finetune trains transformer LMs",
                          "pass a transformer model directory or smollm2-135m-instruct")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{name} has no tokenizer with a chat template, so conversations cannot be rendered",
                          "use a chat model (e.g. smollm2-135m-instruct) or one saved with its chat template")
    return lm, tokenizer


def finetune_data(tokenizer: Any, data: str | os.PathLike, config: FinetuneConfig,
                  eval_data: str | os.PathLike | None = None):
    """(training, held-out) SFT data: ``eval_data``, else the last ``config.eval_rows`` rows of ``data``."""
    conversations = read_conversations(data, config.max_rows)
    if eval_data:
        held_out = read_conversations(eval_data)
    else:
        if len(conversations) <= config.eval_rows:
            raise DataError(f"{data} has {len(conversations)} rows, too few to hold out {config.eval_rows}",
                            "pass separate eval data (--eval-data), or fewer eval rows (--eval-rows)")
        conversations, held_out = conversations[:-config.eval_rows], conversations[-config.eval_rows:]
    pack = config.pack and config.method != "prompt"
    return (build_sft_data(tokenizer, conversations, config.max_seq_len, pack=pack),
            build_sft_data(tokenizer, held_out, config.max_seq_len, pack=False))


def check_output_dir(out: str | os.PathLike) -> Path:
    """``out`` as a directory that can be written, made now (before any training), or a clear error."""
    from ..core.errors import InputError

    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".lmlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to the output directory {path} ({exc.strerror or exc})",
                         "pass a directory you can write to (--out DIR)") from None
    return path


def finetune(model: str, data: str | os.PathLike, config: FinetuneConfig, *, out: str | os.PathLike | None = None,
             eval_data: str | os.PathLike | None = None, dry_run: bool = False,
             on_status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` (a directory or built-in name) on the conversations in ``data`` (JSON Lines);
    the result as a JSON-ready dict (see the module docstring)."""
    from ..core.device import resolve_device
    from ..core.io import write_json
    from ..core.memory import peak_memory_mb, release_free_memory, reset_peak_memory
    from ..peft import cast_frozen_linears, parameter_report, save_adapter, training_memory
    from .metrics import throughput

    say = on_status or (lambda message: None)
    if not dry_run and out is None:
        raise ConfigError("finetune needs an output directory", "pass out=DIR (--out DIR), or dry_run (--dry-run)")
    out_dir = None if dry_run else check_output_dir(out)
    say(f"loading {model} ...")
    lm, tokenizer = load_chat_model(model)
    train_data, eval_set = finetune_data(tokenizer, data, config, eval_data)
    peft_config = method_config(config, lm)
    apply_method(lm, peft_config)
    report = parameter_report(lm)
    if config.precision == "bf16":
        cast_frozen_linears(lm, torch.bfloat16)
    seq_len = config.max_seq_len + (peft_config.n_tokens if config.method == "prompt" else 0)
    predicted = training_memory(lm, decoder_shape(lm), config.batch_size, seq_len,
                                checkpointing=config.activation_checkpointing)
    result: dict[str, Any] = {"model": str(model), "method": config.method, "config": asdict(peft_config), **report,
                              "batch_size": config.batch_size, "max_seq_len": config.max_seq_len,
                              "seq_len": seq_len, "precision": config.precision,
                              "activation_checkpointing": config.activation_checkpointing,
                              "predicted_memory_bytes": predicted, "data": train_data.summary(),
                              "eval_data": eval_set.summary()}
    if train_data.truncated:
        say(f"warning: {train_data.truncated} of {train_data.examples} training examples were longer than "
            f"max_seq_len {config.max_seq_len} and were truncated")
    if dry_run:
        return {**result, "dry_run": True}

    device = resolve_device(config.device)
    lm.to(device)
    torch.manual_seed(config.seed)
    eval_batches = SFTBatches(eval_set, config.batch_size, shuffle=False).batches()
    say(f"{report['trainable_params']:,} trainable parameters; held-out loss before ...")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    with autocast:
        before = sft_loss(lm, eval_batches)
    lr = config.learning_rate
    warmup = config.warmup if config.warmup is not None else config.steps // 10
    train_config = TrainConfig(steps=config.steps, lr=lr, warmup=warmup, min_lr=lr / 10, weight_decay=0.0,
                               seed=config.seed, device=config.device, log_every=1, precision=config.precision,
                               activation_checkpointing=config.activation_checkpointing,
                               deterministic=config.deterministic)
    peak: dict[str, float] = {}

    def on_step(step: int, loss: float) -> None:  # before the trainer writes its final checkpoint
        if step == config.steps:
            peak["mb"] = peak_memory_mb(device) or 0.0

    release_free_memory()  # what loading and the evaluation above freed is not the training's memory
    reset_peak_memory(device)
    trained = train(lm, SFTObjective(), SFTBatches(train_data, config.batch_size, seed=config.seed), train_config,
                    out_dir / "run", on_step=on_step)
    shutil.rmtree(out_dir / "run" / "checkpoints", ignore_errors=True)  # the adapter below is the result
    with autocast:
        after = sft_loss(lm, eval_batches)
    save_adapter(lm, out_dir)
    result.update({"steps": trained.steps, "lr": lr, "train_loss_final": trained.final_loss,
                   "tokens": trained.tokens, "tokens_per_s": throughput(out_dir / "run" / "metrics.jsonl"),
                   "peak_memory_bytes": int(peak.get("mb", 0.0) * 2**20), "eval_loss_before": before,
                   "eval_loss_after": after, "out": str(out_dir), "device": str(device)})
    write_json(out_dir / "finetune.json", result)
    return result
