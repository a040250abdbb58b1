"""Scaling-law grids: small transformers trained over model sizes × token budgets with the one trainer.

Kaplan et al. (2020, "Scaling Laws for Neural Language Models") and Hoffmann et al. (2022,
"Training Compute-Optimal Large Language Models") read how the loss falls with parameters N and
training tokens D off a grid of runs. ``run_grid`` trains such a grid with ``lmlab.train.train``:
every run is a fresh ``build_model`` transformer trained for its own token budget with its own
cosine schedule (Hoffmann et al. found a schedule longer than the run overstates the loss), and
scored on a fixed held-out slice. Each run lives in ``RUNS/<name>/`` (the trainer's metrics and,
while it trains, its checkpoints); ``result.json`` there, written last and atomically, marks it
finished — a rerun skips finished runs and resumes an interrupted one from its last checkpoint.

N counts **non-embedding** parameters, Kaplan's convention (token and position embeddings and the
output head left out); Chinchilla counted every parameter, recorded beside it as ``params_total``.
Compute is C ≈ 6·N·D (forward and backward passes, Kaplan et al. §2.1).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError, DataError, InputError
from ..core.io import read_json, write_json
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from ..data.loaders import RandomWindows
from ..models.config import PRESETS
from .objectives import CausalLM
from .pretrain import build_model, cached_shards
from .streams import stream_loss
from .trainer import TrainConfig, train

RESULT_FILE = "result.json"
GRID_FILE = "grid.json"
#: modules whose parameters Kaplan et al. leave out of N: token and position embeddings, output head
EMBEDDING_MODULES = ("embed", "positions", "head")
PARAMS_CONVENTION = "non-embedding (Kaplan et al. 2020): token/position embeddings and the output head excluded"
#: settings that may differ between invocations on one grid without changing what a run computes
FREE_SETTINGS = ("device", "checkpoint_every")


@dataclass(frozen=True)
class GridRun:
    """One point of a grid: a transformer of ``d_model`` width and ``n_layers`` blocks, trained on ``tokens``."""

    d_model: int
    n_layers: int
    tokens: int

    @property
    def name(self) -> str:
        return f"d{self.d_model}-l{self.n_layers}-{token_label(self.tokens)}"


@dataclass
class GridSettings:
    """What every run of a grid shares; kept in ``grid.json``, and a rerun on the grid must agree with it."""

    data: str = "wikitext-2"  # a label for the results (the corpora themselves are passed in)
    tokenizer_label: str = "given"  # how the tokenizer was made (e.g. bpe:2048); its fingerprint is checked too
    family: str = "gpt2"  # a decoder preset of lmlab.models.config
    context: int = 64
    batch_size: int = 16
    head_width: int = 16  # n_heads = d_model / head_width
    lr: float = 3e-3
    warmup: float = 0.05  # fraction of each run's steps
    min_lr_ratio: float = 0.1  # the cosine ends at lr × this (Hoffmann et al. decay 10×)
    eval_tokens: int = 65536  # held-out tokens each run is scored on (the first ones of the split)
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choice("family", self.family, tuple(PRESETS))
        for name in ("context", "batch_size", "head_width", "eval_tokens"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_number("lr", self.lr, low=0.0, low_inclusive=False)
        check_number("warmup", self.warmup, low=0.0, high=1.0, high_inclusive=False)
        check_number("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        check_number("checkpoint_every", self.checkpoint_every, low=0, integer=True)
        check_number("seed", self.seed, low=0, integer=True)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    def shared(self) -> dict[str, Any]:
        """The settings that make runs comparable (all but ``FREE_SETTINGS``)."""
        return {k: v for k, v in asdict(self).items() if k not in FREE_SETTINGS}


def token_label(tokens: int) -> str:
    """A short label of a token count: 250000 → 250k, 1000000 → 1M, 1500000 → 1.5M."""
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if tokens >= size:
            return f"{tokens / size:.4g}{unit}"
    return str(tokens)


def grid(sizes: list[tuple[int, int]], tokens: list[int]) -> list[GridRun]:
    """Every (d_model, n_layers) of ``sizes`` with every budget of ``tokens``: the runs of a rectangular grid."""
    if not sizes or not tokens:
        raise ConfigError("a scaling grid needs at least one model size and one token budget",
                          "give sizes as d_model x n_layers (e.g. 32x2,64x2) and token budgets (e.g. 250k,1M)")
    return [GridRun(d, n, t) for d, n in sizes for t in tokens]


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """{"total", "non_embedding"} parameters of ``model`` (tied weights counted once)."""
    total = non_embedding = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if name.split(".")[0] not in EMBEDDING_MODULES:
            non_embedding += p.numel()
    return {"total": total, "non_embedding": non_embedding}


def _check_runs(runs: list[GridRun], settings: GridSettings) -> None:
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"the grid names run(s) {', '.join(twice)} more than once", "list each size and budget once")
    for r in runs:
        check_number("d_model", r.d_model, low=1, integer=True)
        check_number("n_layers", r.n_layers, low=1, integer=True)
        check_number("tokens", r.tokens, low=1, integer=True)
        if r.d_model % settings.head_width:
            raise ConfigError(f"d_model {r.d_model} of run {r.name} is not a multiple of head_width "
                              f"{settings.head_width}", "choose widths that are multiples of the head width")
        if r.tokens < settings.tokens_per_step:
            raise ConfigError(f"run {r.name} has a budget of {r.tokens} tokens, less than one step "
                              f"({settings.batch_size} × {settings.context} = {settings.tokens_per_step} tokens)",
                              "give token budgets of at least one batch")


def _check_grid_file(runs_dir: Path, settings: GridSettings, tokenizer) -> None:
    """Write ``grid.json``, or refuse settings that differ from those the grid's runs were trained with."""
    wanted = {**settings.shared(), "tokenizer": tokenizer.fingerprint()}
    path = runs_dir / GRID_FILE
    if path.exists():
        stored = read_json(path, "the grid's settings")
        differ = [f"{k}: {stored.get(k)!r} there, {v!r} now" for k, v in wanted.items() if stored.get(k) != v]
        if differ:
            raise ConfigError(f"{runs_dir} holds a grid trained with other settings ({'; '.join(differ)})",
                              f"rerun with the settings in {path}, or train the new grid into another directory")
        return
    write_json(path, wanted)


def run_grid(runs_dir: str | os.PathLike, runs: list[GridRun], tokenizer, train_corpus=None, valid_corpus=None,
             settings: GridSettings | None = None) -> list[dict[str, Any]]:
    """Train every run of ``runs`` not yet finished in ``runs_dir`` and return all their results (in order).

    ``train_corpus``/``valid_corpus`` are tokenized once into ``runs_dir/data`` (a rerun may pass None and
    reuse them); the held-out loss is the mean cross-entropy (nats/token) of the first ``eval_tokens``
    ids of the validation split, scored with sliding windows (``lmlab.train.stream_loss``)."""
    settings = settings or GridSettings()
    runs_dir = Path(runs_dir)
    _check_runs(runs, settings)
    runs_dir.mkdir(parents=True, exist_ok=True)
    _check_grid_file(runs_dir, settings, tokenizer)
    if not (runs_dir / "tokenizer.json").exists():
        tokenizer.save(runs_dir)
    train_tokens = cached_shards(train_corpus, tokenizer, runs_dir / "data" / "train")
    valid_tokens = cached_shards(valid_corpus, tokenizer, runs_dir / "data" / "valid")
    if train_tokens is None or valid_tokens is None:
        missing = " and ".join(n for n, t in (("training", train_tokens), ("validation", valid_tokens)) if t is None)
        raise ConfigError(f"no {missing} corpus for the grid in {runs_dir}",
                          "pass the training and validation corpora (a rerun reuses their shards in RUNS/data)")
    if len(valid_tokens) < 2 or len(train_tokens) < settings.context + 1:
        raise DataError(f"the grid's data is too short: {len(train_tokens)} training and {len(valid_tokens)} "
                        f"validation tokens (windows need {settings.context + 1})",
                        "pass longer corpora, or a shorter --context")
    results = []
    bar = progress(desc="scaling grid", total=len(runs), unit="run")
    for run in runs:
        bar.set_postfix(run=run.name)
        done = runs_dir / run.name / RESULT_FILE
        results.append(read_json(done, "a scaling run's result") if done.exists()
                       else train_run(run, runs_dir / run.name, tokenizer, train_tokens, valid_tokens, settings))
        bar.update(1)
    bar.close()
    return results


def train_run(run: GridRun, run_dir: Path, tokenizer, train_tokens, valid_tokens,
              settings: GridSettings) -> dict[str, Any]:
    """Train one grid run (resuming from its last checkpoint), score it, write and return its result."""
    model_settings = dict(d_model=run.d_model, n_layers=run.n_layers, n_heads=run.d_model // settings.head_width,
                          context_length=settings.context)
    torch.manual_seed(settings.seed)
    model = build_model(settings.family, model_settings, tokenizer)
    steps = max(1, round(run.tokens / settings.tokens_per_step))
    config = TrainConfig(steps=steps, lr=settings.lr, min_lr=settings.lr * settings.min_lr_ratio, schedule="cosine",
                         warmup=round(settings.warmup * steps), checkpoint_every=settings.checkpoint_every,
                         log_every=max(1, steps // 100), device=settings.device, seed=settings.seed)
    source = RandomWindows(train_tokens, settings.batch_size, settings.context, seed=settings.seed)
    eval_tokens = min(settings.eval_tokens, len(valid_tokens) - 1)

    def held_out(engine) -> float:
        return stream_loss(model, valid_tokens, context=settings.context, batch_size=32, max_tokens=eval_tokens)

    result = train(model, CausalLM(), source, config, run_dir, eval_fn=held_out, resume=True)
    loss = result.eval_losses[-1][1] if result.eval_losses else math.nan
    counts = parameter_counts(model)
    record = {"name": run.name, "family": settings.family, "data": settings.data, "d_model": run.d_model,
              "n_layers": run.n_layers, "n_heads": run.d_model // settings.head_width, "context": settings.context,
              "params": counts["non_embedding"], "params_total": counts["total"], "params_convention": PARAMS_CONVENTION,
              "tokens": result.tokens, "tokens_budget": run.tokens, "steps": result.steps,
              "epochs": result.tokens / max(1, len(train_tokens) - 1),
              "compute": 6 * counts["non_embedding"] * result.tokens, "compute_total": 6 * counts["total"] * result.tokens,
              "loss": loss if math.isfinite(loss) else None, "loss_split": "valid", "eval_tokens": eval_tokens,
              "train_loss": result.final_loss if math.isfinite(result.final_loss) else None,
              "lr": settings.lr, "seconds": round(result.seconds, 2)}
    write_json(run_dir / RESULT_FILE, record)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # finished: its result is all the grid needs
    return record


def read_results(runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The results of every finished run in ``runs_dir`` (sorted by name); a diverged run's loss is NaN."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise InputError(f"{runs_dir} is not a directory", "pass the --out directory of `lmlab scaling run`")
    paths = sorted(runs_dir.glob(f"*/{RESULT_FILE}"))
    if not paths:
        raise DataError(f"{runs_dir} holds no finished scaling runs (no */{RESULT_FILE})",
                        f"train a grid first: lmlab scaling run --out {runs_dir}")
    results = []
    for path in paths:
        record = read_json(path, "a scaling run's result")
        missing = [k for k in ("name", "params", "tokens", "loss") if k not in record]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}", "delete that run's directory and rerun the grid")
        record["loss"] = math.nan if record["loss"] is None else float(record["loss"])
        results.append(record)
    return results


__all__ = ["GRID_FILE", "PARAMS_CONVENTION", "RESULT_FILE", "GridRun", "GridSettings", "grid", "parameter_counts",
           "read_results", "run_grid", "token_label", "train_run"]
