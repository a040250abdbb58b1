"""Recipes: whole post-training runs as library functions (the ``lmlab align`` verbs call these).

Each recipe adapts a transformer (a LoRA adapter by default; ``method="full"`` trains every weight),
measures the held-out metric it is about before training, trains with the one trainer and one of
this package's objectives, measures again, and writes to ``out``: the adapter (usable as
``lmlab chat --adapter out``), ``run/metrics.jsonl`` and ``run/metrics.png`` (the trainer's),
``curves.png`` (the run's own measures, with held-out evaluations when ``eval_every`` is set) and
``align.json`` (the result, also returned). ``resume=True`` continues the run in ``out/run`` from
its last checkpoint with bit-identical results, as pretraining does.

* ``reward_model`` — Bradley-Terry on preference pairs; held-out pairwise accuracy against a
  length-only baseline, and the scores for calibration;
* ``preference_optimization`` — DPO, cDPO, robust DPO, IPO, hinge, SimPO, ORPO on pairs; held-out
  implicit-reward accuracy and margin, and the KL to the reference;
* ``kto`` — KTO on unpaired (or split) examples;
* ``policy_optimization`` — GRPO, RLOO, REINFORCE, PPO on prompts with a reward; held-out mean reward
  of greedy answers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.device import resolve_device
from ..core.errors import ConfigError
from ..core.io import write_json
from ..core.validate import check_choice, check_number
from ..peft import (
    FullConfig,
    LoraConfig,
    apply_full,
    apply_lora,
    block_linear_names,
    can_disable,
    parameter_report,
    save_adapter,
)
from ..train import TrainConfig, train
from ..train.metrics import plot_metrics, throughput
from .logprobs import Reference, kl_to_reference, n_rows, select_rows
from .objectives import KTOObjective, PreferenceObjective
from .preferences import (
    ItemBatches,
    Judged,
    Preference,
    Truncation,
    encode_judged,
    encode_preferences,
    judged_batch,
    pair_batch,
)
from .reward_model import (
    BradleyTerryObjective,
    RewardModel,
    comparison_batch,
    encode_comparisons,
    length_baseline,
    pairwise_report,
    save_reward_model,
    score_pairs,
)
from .rewards import Reward, Sample, StepReward, checked
from .rl import PolicyGradient, PolicyWithValue, RLConfig, RolloutSchedule
from .rollout import Generate, PromptItem, row_seeds, sample_rollouts

ADAPTER_METHODS = ("lora", "full")
RESULT_FILE = "align.json"


@dataclass
class Adapter:
    """What trains: a LoRA adapter of rank ``rank`` on ``targets`` (default: every linear layer of the
    blocks), or the ``full`` model."""

    method: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] | None = None

    def __post_init__(self) -> None:
        check_choice("adapter method", self.method, ADAPTER_METHODS)

    def apply(self, model: nn.Module) -> dict:
        """Apply to ``model`` in place; the trainable / total parameter report."""
        if self.method == "full":
            apply_full(model, FullConfig())
        else:
            apply_lora(model, LoraConfig(r=self.rank, alpha=self.alpha, dropout=self.dropout,
                                         targets=self.targets or block_linear_names(model)))
        return parameter_report(model)


@dataclass
class Schedule:
    """The optimisation settings the recipes share (AdamW, warm-up then cosine decay, clipping)."""

    steps: int = 50
    lr: float = 5e-5
    warmup: int | None = None  # default: 10 % of the steps
    batch_size: int = 4
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    checkpoint_every: int = 0
    eval_every: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # any other TrainConfig setting

    def train_config(self) -> TrainConfig:
        check_number("eval_every", self.eval_every, low=0, integer=True)
        warmup = self.warmup if self.warmup is not None else self.steps // 10
        return TrainConfig.from_dict({"steps": self.steps, "lr": self.lr, "warmup": warmup, "min_lr": self.lr / 10,
                                      "weight_decay": 0.0, "seed": self.seed, "device": self.device, "log_every": 1,
                                      "precision": self.precision, "checkpoint_every": self.checkpoint_every,
                                      **self.extra})


def _run(model: nn.Module, objective: Any, source: Any, schedule: Schedule, out: Path, resume: bool,
         evaluate: Callable[[], dict] | None, curve_keys: Sequence[str]) -> tuple[Any, list[dict]]:
    """Train, evaluating every ``eval_every`` steps; write ``curves.png``; drop the checkpoints of a
    finished run (the adapter is the result). Returns the trainer's result and the evaluations."""
    config = schedule.train_config()
    evaluations: list[dict] = []

    def on_step(step: int, loss: float) -> None:
        if evaluate is not None and schedule.eval_every and step % schedule.eval_every == 0 and step < config.steps:
            evaluations.append({"step": step, **{f"eval_{k}": v for k, v in evaluate().items()
                                                 if isinstance(v, (int, float))}})

    result = train(model, objective, source, config, out / "run", resume=resume, on_step=on_step)
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    eval_keys = sorted({k for e in evaluations for k in e if k != "step"})
    plot_metrics(sorted(records + evaluations, key=lambda r: r["step"]), out / "curves.png",
                 extra=[*curve_keys, *eval_keys])
    shutil.rmtree(out / "run" / "checkpoints", ignore_errors=True)
    return result, evaluations


def _adapt(lm: nn.Module, adapter: Adapter, schedule: Schedule) -> dict:
    """Seed, apply the adapter, move to the device; the parameter report."""
    torch.manual_seed(schedule.seed)
    report = adapter.apply(lm)
    lm.to(resolve_device(schedule.device))
    return report


def write_result(out: str | Path, result: dict) -> dict:
    """Write a recipe's result as ``align.json`` in ``out`` (and return it)."""
    write_json(Path(out) / RESULT_FILE, result)
    return result


def _summary(trained: Any, out: Path) -> dict:
    return {"steps": trained.steps, "train_loss_final": trained.final_loss, "tokens": trained.tokens,
            "tokens_per_s": throughput(out / "run" / "metrics.jsonl"), "seconds": trained.seconds}


# --- reward models -------------------------------------------------------------------------------------
def reward_model(backbone: str, lm: nn.Module, tokenizer: Any, train_pairs: Sequence[Preference],
                 eval_pairs: Sequence[Preference], out: str | Path, *, adapter: Adapter | None = None,
                 schedule: Schedule | None = None, limits: Truncation | None = None, margin: float | None = None,
                 center: float | None = None, resume: bool = False) -> dict:
    """Train a Bradley-Terry reward model on ``lm`` (the loaded ``backbone``) and save it in ``out``."""
    out, adapter, schedule = Path(out), adapter or Adapter(), schedule or Schedule(lr=5e-4)
    limits = limits or Truncation(max_length=256, max_prompt_length=192)
    train_ids = encode_comparisons(tokenizer, train_pairs, limits)
    eval_ids = encode_comparisons(tokenizer, eval_pairs, limits)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    report = _adapt(lm, adapter, schedule)
    model = RewardModel(lm).to(resolve_device(schedule.device))
    for p in model.head.parameters():
        p.requires_grad_(True)
    eval_batches = ItemBatches(eval_ids, schedule.batch_size, lambda xs: comparison_batch(xs, pad), shuffle=False).batches()

    def evaluate() -> dict:
        return pairwise_report(*score_pairs(model, eval_batches))

    before = evaluate()
    source = ItemBatches(train_ids, schedule.batch_size, lambda xs: comparison_batch(xs, pad), seed=schedule.seed)
    trained, evaluations = _run(model, BradleyTerryObjective(margin, center), source, schedule, out, resume,
                                evaluate, BradleyTerryObjective.plot_keys)
    chosen, rejected = score_pairs(model, eval_batches)
    after = pairwise_report(chosen, rejected)
    save_reward_model(out, model, backbone, tokenizer)
    return write_result(out, {
        "task": "reward", "backbone": backbone, "adapter": asdict(adapter), **report,
        "pairs": {"train": len(train_ids), "eval": len(eval_ids)},
        "truncated": {"prompts": limits.prompts_cut, "completions": limits.completions_cut},
        "metric": "held-out pairwise accuracy", "eval_before": before["pairwise_accuracy"],
        "eval_after": after["pairwise_accuracy"], "before": before, "after": after,
        "length_baseline": length_baseline(train_ids, eval_ids), "evaluations": evaluations,
        "probabilities": torch.sigmoid(chosen - rejected).tolist(), **_summary(trained, out), "out": str(out)})


# --- offline preference optimisation ---------------------------------------------------------------------
@torch.no_grad()
def preference_report(model: nn.Module, objective: PreferenceObjective, batches: Sequence[dict],
                      reference: Reference | None) -> dict:
    """Held-out implicit-reward accuracy (ties count half), mean margin and loss; the KL to the reference
    on the chosen completions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    wins, margins, losses, pairs = 0.0, 0.0, 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, pair, _ = objective.pair_loss(model, batch)
        diff = pair.chosen_rewards - pair.rejected_rewards
        wins += float((diff > 0).float().sum() + 0.5 * (diff == 0).float().sum())
        margins += float(diff.sum())
        losses += float(loss) * diff.numel()
        pairs += diff.numel()
    model.train(was_training)
    report = {"reward_accuracy": wins / pairs, "reward_margin": margins / pairs, "loss": losses / pairs}
    if reference is not None:
        half = [select_rows(b, torch.arange(n_rows(b) // 2)) for b in batches]
        report["kl_to_reference"] = kl_to_reference(model, reference, half)
    return report


def _reference(lm: nn.Module, reference_model: nn.Module | None) -> Reference | None:
    if reference_model is None and not can_disable(lm):
        return None
    return Reference(lm, reference_model)


def preference_optimization(lm: nn.Module, tokenizer: Any, train_pairs: Sequence[Preference],
                            eval_pairs: Sequence[Preference], out: str | Path, *, loss: str = "sigmoid",
                            beta: float = 0.1, label_smoothing: float = 0.0, gamma: float = 1.0,
                            adapter: Adapter | None = None, schedule: Schedule | None = None,
                            limits: Truncation | None = None, reference_model: nn.Module | None = None,
                            precompute_reference: bool = False, resume: bool = False) -> dict:
    """DPO and its family (``loss``: sigmoid, cdpo, robust, ipo, hinge, simpo, orpo) on ``lm``."""
    out, adapter, schedule = Path(out), adapter or Adapter(), schedule or Schedule()
    limits = limits or Truncation(max_length=256, max_prompt_length=192)
    train_ids = encode_preferences(tokenizer, train_pairs, limits)
    eval_ids = encode_preferences(tokenizer, eval_pairs, limits)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    report = _adapt(lm, adapter, schedule)
    reference = _reference(lm, reference_model)
    objective = PreferenceObjective(loss, beta=beta, label_smoothing=label_smoothing, gamma=gamma, reference=reference)
    if objective.needs_reference and reference is None:
        raise ConfigError(f"the {loss} loss needs a reference model, and the {adapter.method} policy cannot switch "
                          "its adapter off to give one", "train a LoRA adapter, or pass reference_model")
    if precompute_reference:
        if reference is None:
            raise ConfigError("precomputing reference log-probabilities needs a reference model",
                              "train a LoRA adapter, or pass reference_model")
        fill_reference(reference, train_ids, pad, schedule.batch_size)
    make = lambda xs: pair_batch(xs, pad)  # noqa: E731
    eval_batches = ItemBatches(eval_ids, schedule.batch_size, make, shuffle=False).batches()

    def evaluate() -> dict:
        return preference_report(lm, objective, eval_batches, reference)

    before = evaluate()
    source = ItemBatches(train_ids, schedule.batch_size, make, seed=schedule.seed)
    trained, evaluations = _run(lm, objective, source, schedule, out, resume, evaluate, objective.plot_keys)
    after = evaluate()
    save_adapter(lm, out)
    return write_result(out, {
        "task": loss, "adapter": asdict(adapter), **report, "beta": beta, "label_smoothing": label_smoothing,
        "gamma": gamma, "pairs": {"train": len(train_ids), "eval": len(eval_ids)},
        "truncated": {"prompts": limits.prompts_cut, "completions": limits.completions_cut},
        "reference": "precomputed" if precompute_reference else "adapter off" if reference_model is None else "model",
        "metric": "held-out implicit-reward accuracy", "eval_before": before["reward_accuracy"],
        "eval_after": after["reward_accuracy"], "before": before, "after": after, "evaluations": evaluations,
        **_summary(trained, out), "out": str(out)})


@torch.no_grad()
def fill_reference(reference: Reference, pairs: list, pad_id: int, batch_size: int) -> None:
    """Compute each pair's reference log-probabilities once (``ref_chosen``/``ref_rejected``)."""
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = pair_batch(chunk, pad_id)
        device = next(reference.policy.parameters()).device
        sums = reference.score({k: v.to(device) for k, v in batch.items()}).sums(2 * len(chunk)).tolist()
        for i, p in enumerate(chunk):
            p.ref_chosen, p.ref_rejected = sums[i], sums[len(chunk) + i]


def kto(lm: nn.Module, tokenizer: Any, train_examples: Sequence[Judged], eval_pairs: Sequence[Preference],
        out: str | Path, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
        adapter: Adapter | None = None, schedule: Schedule | None = None, limits: Truncation | None = None,
        resume: bool = False) -> dict:
    """KTO on unpaired examples; evaluated like DPO on held-out pairs (implicit reward β log π/π_ref)."""
    out, adapter, schedule = Path(out), adapter or Adapter(), schedule or Schedule()
    limits = limits or Truncation(max_length=256, max_prompt_length=192)
    train_ids = encode_judged(tokenizer, train_examples, limits)
    eval_ids = encode_preferences(tokenizer, eval_pairs, limits)
    if schedule.batch_size < 2:
        raise ConfigError("KTO estimates its KL reference point from mismatched pairs within a batch",
                          "use a batch size of 2 or more")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    report = _adapt(lm, adapter, schedule)
    reference = Reference(lm)
    objective = KTOObjective(reference, beta=beta, desirable_weight=desirable_weight,
                             undesirable_weight=undesirable_weight)
    scorer = PreferenceObjective("sigmoid", beta=beta, reference=reference)
    eval_batches = ItemBatches(eval_ids, schedule.batch_size, lambda xs: pair_batch(xs, pad), shuffle=False).batches()

    def evaluate() -> dict:
        return preference_report(lm, scorer, eval_batches, reference)

    before = evaluate()
    source = ItemBatches(train_ids, schedule.batch_size, lambda xs: judged_batch(xs, pad), seed=schedule.seed)
    trained, evaluations = _run(lm, objective, source, schedule, out, resume, evaluate, objective.plot_keys)
    after = evaluate()
    save_adapter(lm, out)
    return write_result(out, {
        "task": "kto", "adapter": asdict(adapter), **report, "beta": beta,
        "examples": {"train": len(train_ids), "eval_pairs": len(eval_ids)},
        "metric": "held-out implicit-reward accuracy", "eval_before": before["reward_accuracy"],
        "eval_after": after["reward_accuracy"], "before": before, "after": after, "evaluations": evaluations,
        **_summary(trained, out), "out": str(out)})


# --- RL ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_policy(generate: Generate, tokenizer: Any, prompts: Sequence[PromptItem], reward: Reward,
                    max_new_tokens: int, stop_id: int | None, batch_size: int = 32, examples: int = 3) -> dict:
    """Mean reward of greedy answers to ``prompts`` (and a few of them to look at)."""
    texts, values = [], []
    for start in range(0, len(prompts), batch_size):
        chunk = list(range(start, min(start + batch_size, len(prompts))))
        rollouts = sample_rollouts(generate, tokenizer, prompts, chunk, 1, max_new_tokens,
                                   row_seeds(0, 0, len(chunk)), stop_id, greedy=True)
        samples = [Sample(prompts[i].messages, t, prompts[i].answer) for i, t in zip(chunk, rollouts.texts, strict=True)]
        values += checked(reward, samples)
        texts += rollouts.texts
    return {"reward": sum(values) / max(len(values), 1), "prompts": len(values),
            "examples": [{"prompt": prompts[i].messages[-1]["content"], "completion": texts[i], "reward": values[i]}
                         for i in range(min(examples, len(texts)))]}


def policy_optimization(lm: nn.Module, tokenizer: Any, train_prompts: Sequence[PromptItem],
                        eval_prompts: Sequence[PromptItem], generate: Generate, reward: Reward, out: str | Path, *,
                        config: RLConfig, adapter: Adapter | None = None, schedule: Schedule | None = None,
                        step_reward: StepReward | None = None, reference_model: nn.Module | None = None,
                        resume: bool = False) -> dict:
    """GRPO, RLOO, REINFORCE or PPO (``config.method``) on ``lm`` with rollouts from ``generate``.

    ``generate`` must sample from ``lm`` itself (e.g. ``lmlab.generate.engine.rollout_generate(lm, ...)``),
    so each rollout comes from the current weights.
    """
    out, adapter, schedule = Path(out), adapter or Adapter(), schedule or Schedule(lr=2e-5)
    check_reward_tokenizer(reward, tokenizer)
    report = _adapt(lm, adapter, schedule)
    reference = _reference(lm, reference_model)
    if reference is None and config.kl_coef > 0:
        raise ConfigError(f"the KL to the reference needs a reference model, and the {adapter.method} policy cannot "
                          "switch its adapter off to give one", "train a LoRA adapter, pass reference_model, or kl_coef 0")
    model = PolicyWithValue(lm) if config.value_head else lm
    stop_id = getattr(lm, "eos_id", None)

    def evaluate() -> dict:
        return evaluate_policy(generate, tokenizer, eval_prompts, reward, config.max_new_tokens, stop_id)

    before = evaluate()
    objective = PolicyGradient(config, prompts=list(train_prompts), generate=generate, tokenizer=tokenizer,
                               reward=reward, reference=reference, step_reward=step_reward, stop_id=stop_id,
                               seed=schedule.seed)
    source = RolloutSchedule(len(train_prompts), config, seed=schedule.seed)
    trained, evaluations = _run(model, objective, source, schedule, out, resume, evaluate, objective.plot_keys)
    after = evaluate()
    save_adapter(lm, out)
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return write_result(out, {
        "task": config.method, "config": config.to_dict(), "adapter": asdict(adapter), **report,
        "reward_name": reward.name, "prompts": {"train": len(train_prompts), "eval": len(eval_prompts)},
        "metric": f"held-out mean {reward.name} reward (greedy)", "eval_before": before["reward"],
        "eval_after": after["reward"], "before": before, "after": after, "evaluations": evaluations,
        "train_reward_curve": [r["reward"] for r in records if "reward" in r],
        "ms_per_step": [r["ms_per_step"] for r in records if "ms_per_step" in r],
        **_summary(trained, out), "out": str(out)})


def check_reward_tokenizer(reward: Reward, tokenizer: Any) -> None:
    """Refuse a reward model (inside ``reward``, weighted or not) whose tokenizer is not the policy's."""
    parts = [p for p, _ in getattr(reward, "parts", [])] or [reward]
    for part in parts:
        if hasattr(part, "check_tokenizer"):
            part.check_tokenizer(tokenizer)
