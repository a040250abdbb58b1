"""The one training loop (DESIGN principle 5): it knows the optimizer, schedule, precision,
accumulation, clipping, evaluation, checkpoints and data parallelism — and nothing about the
task, which is the objective's business.

``train(model, objective, source, config, run_dir)`` runs ``config.steps`` optimizer steps.
Batches come from ``source.batch(index, rank, world)`` (a pure function of the index, see
``lmlab.data.loaders``), so a run killed at any point and resumed from its last checkpoint
continues with bit-identical losses: weights, optimizer, RNG and the objective's carried state
are restored and the data position is the step number.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.device import resolve_device
from ..core.errors import ConfigError, ModelError
from ..core.memory import peak_memory_mb
from ..core.progress import progress
from ..core.seed import deterministic_algorithms
from ..core.validate import check_choice, check_keys, check_number
from ..models.neural import unique_tensors
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .distributed import (
    STRATEGIES,
    close_world,
    full_state_dict,
    init_world,
    is_sharded,
    load_optimizer_state,
    mean_over_ranks,
    optimizer_state,
    wrap_model,
)
from .metrics import MetricsLog, plot_metrics
from .schedules import SCHEDULES, lr_at

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Every knob of the training loop (the model and the data are not here)."""

    steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 0.0
    schedule: str = "cosine"
    warmup: int = 0
    decay_steps: int | None = None  # None = steps; for "step": where the decay begins
    decay_every: int = 1  # "step" schedule: multiply by decay_factor every this many steps
    decay_factor: float = 0.5
    optimizer: str = "adamw"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    momentum: float = 0.0  # SGD
    clip: float | None = 1.0
    accumulate: int = 1
    precision: str = "fp32"
    eval_every: int = 0  # 0 = only at the end (when an eval function is given)
    patience: int | None = None  # early stopping after this many evaluations without improvement
    checkpoint_every: int = 0  # 0 = only at the end
    log_every: int = 1
    compile: bool = False
    activation_checkpointing: bool = False  # transformers: recompute block activations in the backward pass
    deterministic: bool = True  # deterministic kernels only (lmlab.core.seed.deterministic_algorithms)
    distributed: str = "auto"
    device: str = "auto"
    seed: int = 1337

    def __post_init__(self) -> None:
        check_number("steps", self.steps, low=1, integer=True)
        check_number("lr", self.lr, low=0.0, low_inclusive=False)
        check_number("min_lr", self.min_lr, low=0.0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_number("warmup", self.warmup, low=0, integer=True)
        check_number("decay_every", self.decay_every, low=1, integer=True)
        check_number("decay_factor", self.decay_factor, low=0.0, high=1.0, low_inclusive=False)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("weight_decay", self.weight_decay, low=0.0)
        for name in ("beta1", "beta2"):
            check_number(name, getattr(self, name), low=0.0, high=1.0, high_inclusive=False)
        check_number("momentum", self.momentum, low=0.0)
        check_number("seed", self.seed, low=0, integer=True)
        for name in ("compile", "activation_checkpointing", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.decay_steps is not None:
            check_number("decay_steps", self.decay_steps, low=0, integer=True)
        check_number("accumulate", self.accumulate, low=1, integer=True)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("distributed", self.distributed, STRATEGIES)
        for name in ("eval_every", "checkpoint_every", "log_every"):
            check_number(name, getattr(self, name), low=0, integer=True)
        if self.clip is not None:
            check_number("clip", self.clip, low=0.0, low_inclusive=False)
        if self.patience is not None:
            check_number("patience", self.patience, low=1, integer=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        check_keys("training setting(s)", values, {f.name for f in fields(cls)})
        return cls(**values)


@dataclass
class TrainResult:
    """What a run did: steps taken, last training loss, evaluations, whether it stopped early."""

    steps: int
    final_loss: float
    eval_losses: list[tuple[int, float]]
    best_eval_loss: float | None
    stopped_early: bool
    seconds: float
    tokens: int
    #: the final (config, tensors) gathered on rank 0 when FSDP sharded the model (else None: use the model)
    final_state: tuple[dict, dict[str, torch.Tensor]] | None = None


class TrainingHooks:
    """What layers of a model add to training, found once by method name on its submodules, so the
    loop needs to know no layer type: ``auxiliary_loss()`` (a tensor added to the objective's loss
    after each forward, e.g. MoE balancing), ``after_optimizer_step()`` (e.g. MoE bias updates) and
    ``training_stats()`` (a dict logged with each record, keyed by the layer's name)."""

    def __init__(self, model: nn.Module) -> None:
        def having(method: str) -> list[tuple[str, nn.Module]]:
            return [(name, m) for name, m in model.named_modules() if callable(getattr(m, method, None))]

        self.losses = [m for _, m in having("auxiliary_loss")]
        self.steppers = [m for _, m in having("after_optimizer_step")]
        self.reporters = having("training_stats")

    def add_auxiliary_losses(self, loss: torch.Tensor) -> torch.Tensor:
        for module in self.losses:
            loss = loss + module.auxiliary_loss().to(loss.device)
        return loss

    def after_optimizer_step(self) -> None:
        for module in self.steppers:
            module.after_optimizer_step()

    def stats(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for name, module in self.reporters:
            for key, value in module.training_stats().items():
                out.setdefault(key, {})[name] = value
        return out


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused where this PyTorch build supports it) with weight decay on matrices only, or SGD.

    A model may say that some parameters learn faster or slower than the schedule's rate: its
    ``lr_scales()`` maps parameters to a factor (e.g. a CRF's transitions on a fine-tuned encoder);
    each such group keeps ``lr_scale``, which the training loop multiplies into every step's rate."""
    params = [p for p in model.parameters() if p.requires_grad]
    scales = {id(p): float(f) for p, f in (model.lr_scales() if hasattr(model, "lr_scales") else [])}
    if config.optimizer == "sgd":
        groups = [{"params": [p for p in params if scales.get(id(p), 1.0) == f], "lr_scale": f}
                  for f in sorted({scales.get(id(p), 1.0) for p in params})]
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    groups = []
    for f in sorted({scales.get(id(p), 1.0) for p in params}):
        mine = [p for p in params if scales.get(id(p), 1.0) == f]
        groups += [{"params": [p for p in mine if p.dim() >= 2], "weight_decay": config.weight_decay, "lr_scale": f},
                   {"params": [p for p in mine if p.dim() < 2], "weight_decay": 0.0, "lr_scale": f}]
    kwargs = dict(lr=config.lr, betas=(float(config.beta1), float(config.beta2)))
    if device.type in ("cuda", "cpu") and not is_sharded(model):
        with contextlib.suppress(RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def train(model: nn.Module, objective: Callable, source: Any, config: TrainConfig, run_dir: str | Path, *,
          eval_fn: Callable[[nn.Module], float | dict[str, float]] | None = None, resume: bool = False,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``source`` batches with ``objective``; write metrics, plot and
    checkpoints to ``run_dir``. ``resume`` continues from the run's latest checkpoint (if any).
    ``eval_fn`` returns the validation loss, or a dict of it (``"loss"``) and other figures to log with it.
    ``on_step(step, loss)`` is called after every optimizer step (tests use it to interrupt)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    world = init_world(device)
    try:
        with deterministic_algorithms(config.deterministic):
            return _train(model, objective, source, config, run_dir, device, world, eval_fn, resume, on_step)
    finally:
        close_world(world)


def model_state(model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of a model for its directory or a checkpoint, gathered whole if FSDP sharded it
    (a collective call then: every rank must make it)."""
    config = model.state_config() if hasattr(model, "state_config") else {}
    return config, unique_tensors(full_state_dict(model))


def check_vocabulary(model: nn.Module, source: Any) -> None:
    """Refuse token data whose vocabulary is larger than the model's (ids the embedding cannot look up)."""
    data_vocab = getattr(getattr(source, "tokens", None), "vocab_size", None)
    model_vocab = getattr(model, "vocab_size", None)
    if data_vocab is not None and isinstance(model_vocab, int) and data_vocab > model_vocab:
        raise ModelError(f"the training data has ids up to {data_vocab - 1}, but the model's vocabulary has "
                         f"{model_vocab} ids", "build the model for the tokenizer that wrote the token shards")


def _train(model, objective, source, config, run_dir, device, world, eval_fn, resume, on_step) -> TrainResult:
    check_vocabulary(model, source)
    torch.manual_seed(config.seed)
    model.to(device)
    model.train()
    start, info = 0, {"eval_losses": [], "best_eval": None, "bad_evals": 0, "tokens": 0}
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        own_config = model.state_config() if hasattr(model, "state_config") else {}
        saved, tensors, trainer_state = load_checkpoint(checkpoint, own_config)
        model.load_state_dict(tensors, strict=False)
    if hasattr(model, "activation_checkpointing"):
        model.activation_checkpointing = config.activation_checkpointing
    elif config.activation_checkpointing:
        raise ConfigError(f"activation checkpointing applies to transformer models, not {type(model).__name__}",
                          "leave activation_checkpointing off")
    engine = wrap_model(model, config.distributed, world, device)
    optimizer = make_optimizer(model, config, device)
    if checkpoint is not None:
        load_optimizer_state(model, optimizer, trainer_state["optimizer"])
        if hasattr(objective, "load_state_dict"):
            objective.load_state_dict(trainer_state["objective"])
        set_rng_state(trainer_state["rng"])
        start = saved["step"]
        info = {k: saved[k] for k in info}
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=start if checkpoint is not None else None)
    if config.compile:
        engine = torch.compile(engine)
    decay_steps = config.decay_steps or config.steps
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if config.precision == "bf16"
                else contextlib.nullcontext())
    bar = progress(desc="training", total=config.steps, unit="step") if world.main else None
    if bar is not None:
        bar.update(start)
    began, loss_value, stopped = time.perf_counter(), math.nan, False

    gathered: list = [None]
    hooks = TrainingHooks(model)

    def checkpoint_now(step: int) -> None:
        state = gathered[0] = model_state(model)
        trainer_state = {"optimizer": optimizer_state(model, optimizer), "rng": rng_state(),
                         "objective": objective.state_dict() if hasattr(objective, "state_dict") else {}}
        if world.main:
            save_checkpoint(run_dir, step, state, trainer_state, {**info, "train_config": asdict(config)})

    step = start
    while step < config.steps:
        lr = lr_at(step, schedule=config.schedule, lr=config.lr, warmup=config.warmup,
                   decay_steps=decay_steps, min_lr=config.min_lr, decay_every=config.decay_every,
                   decay_factor=config.decay_factor)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        t0, cpu0, total, tokens = time.perf_counter(), time.process_time(), 0.0, 0
        for micro in range(config.accumulate):
            batch = source.batch(step * config.accumulate + micro, world.rank, world.size)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            batch["step"] = step
            sync = micro == config.accumulate - 1 or not hasattr(engine, "no_sync")
            with (contextlib.nullcontext() if sync else engine.no_sync()), autocast:
                loss, n = objective(engine, batch)
                loss = hooks.add_auxiliary_losses(loss)
            (loss / config.accumulate).backward()
            total += float(loss.detach()) / config.accumulate
            tokens += n * world.size
        grad_norm = None
        if config.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        hooks.after_optimizer_step()
        step += 1
        loss_value = mean_over_ranks(total, world, device)
        info["tokens"] += tokens
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        extra = objective.metrics() if hasattr(objective, "metrics") else {}  # e.g. reward, KL, clip fraction
        if world.main and (config.log_every and step % config.log_every == 0 or step == config.steps):
            record = {"step": step, "loss": loss_value, "lr": lr, "tokens_per_s": tokens / seconds,
                      "ms_per_step": 1000 * seconds, "cpu_ms_per_step": 1000 * cpu_seconds,
                      "peak_memory_mb": peak_memory_mb(device), **extra}
            if grad_norm is not None:
                record["grad_norm"] = grad_norm
            record.update(hooks.stats())
            log.write(record)
        if bar is not None:
            shown = {k: f"{extra[k]:.3g}" for k in getattr(objective, "plot_keys", ()) if k in extra}
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / seconds:,.0f}", **shown)
            bar.update(1)
        if on_step is not None:
            on_step(step, loss_value)
        last = step == config.steps
        if eval_fn is not None and ((config.eval_every and step % config.eval_every == 0) or last):
            stopped = _evaluate(engine, model, eval_fn, step, info, log, world, config)
        if stopped or last or (config.checkpoint_every and step % config.checkpoint_every == 0):
            checkpoint_now(step)
            if world.main:
                plot_metrics(log.records, run_dir / "metrics.png", extra=getattr(objective, "plot_keys", ()))
        if stopped:
            break
    if bar is not None:
        bar.close()
    best = info["best_eval"]
    return TrainResult(steps=step, final_loss=loss_value, eval_losses=[tuple(e) for e in info["eval_losses"]],
                       best_eval_loss=best, stopped_early=stopped, seconds=time.perf_counter() - began,
                       tokens=info["tokens"], final_state=gathered[0] if is_sharded(model) else None)


def _evaluate(engine, model, eval_fn, step, info, log, world, config) -> bool:
    """Run ``eval_fn``, log it and update early stopping; True when training should stop."""
    model.eval()
    with torch.no_grad():
        value = eval_fn(engine)
    model.train()
    extra = {k: float(v) for k, v in value.items() if k != "loss"} if isinstance(value, dict) else {}
    value = float(value["loss"] if isinstance(value, dict) else value)
    info["eval_losses"].append([step, value])
    if world.main:
        log.write({"step": step, "eval_loss": value, **extra})
    if info["best_eval"] is None or value < info["best_eval"]:
        info["best_eval"], info["bad_evals"] = value, 0
    else:
        info["bad_evals"] += 1
    return config.patience is not None and info["bad_evals"] >= config.patience

