"""Run benchmark tasks on any protocol model and report per-task and aggregate results.

Every request of a task is built first and answered in one batched, cached call, so the
same (context, continuation) is never scored twice. Results carry the full configuration
(task spec, few-shot count and seed, model, limit) next to the numbers, with a standard
error per metric (sample standard deviation / √n, as lm-evaluation-harness reports it).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from typing import Protocol

import numpy as np

from ..core.progress import progress
from .requests import RequestRunner
from .tasks import (
    Task,
    TaskSpec,
    choices_of,
    extract_answer,
    fewshot_context,
    normalize_number_answer,
)


def _mean_and_stderr(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    stderr = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), stderr


def multiple_choice_metrics(loglikelihoods: list[float], choices: list[str], gold: int) -> dict[str, float]:
    """acc (raw log-likelihood), acc_norm (per character of the choice), acc_bytes (per UTF-8 byte)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    chars = np.array([max(len(c), 1) for c in choices], dtype=np.float64)
    nbytes = np.array([max(len(c.encode("utf-8")), 1) for c in choices], dtype=np.float64)
    return {"acc": float(np.argmax(lls) == gold), "acc_norm": float(np.argmax(lls / chars) == gold),
            "acc_bytes": float(np.argmax(lls / nbytes) == gold)}


def score_multiple_choice(task: Task, runner: RequestRunner, contexts: list[str]) -> tuple[dict, list[dict]]:
    """Per-item scores of a multiple-choice task: each context followed by each choice, scored by
    log-likelihood (the metrics of ``multiple_choice_metrics``)."""
    spec = task.spec
    requests, layout = [], []
    for record, ctx in zip(task.items, contexts, strict=True):
        choices, gold = choices_of(spec, record)
        layout.append((choices, gold, len(requests)))
        requests += [(ctx, spec.target_delimiter + c) for c in choices]
    lls = runner.loglikelihood(requests)
    per_item, scores = [], {"acc": [], "acc_norm": [], "acc_bytes": []}
    for (choices, gold, start), ctx in zip(layout, contexts, strict=True):
        item_lls = lls[start:start + len(choices)]
        m = multiple_choice_metrics(item_lls, choices, gold)
        for k, v in m.items():
            scores[k].append(v)
        per_item.append({"context": ctx, "choices": choices, "label": gold, "logits": item_lls, **m})
    return scores, per_item


def _run_generate(task: Task, runner: RequestRunner, contexts: list[str]) -> tuple[dict, list[dict]]:
    spec = task.spec
    scores: dict[str, list[float]] = {"exact_match": []}
    if spec.flexible_regex:
        scores["exact_match_flexible"] = []
    per_item = []
    outputs = runner.generate_many(contexts, until=spec.until, max_new_tokens=spec.max_new_tokens)
    for record, ctx, output in zip(task.items, contexts, outputs, strict=True):
        gold = normalize_number_answer(extract_answer(str(record[spec.gold]), spec.answer_regex))
        item = {"context": ctx, "output": output, "gold": gold, **answer_matches(output, gold, spec)}
        for name in scores:
            scores[name].append(item[name])
        per_item.append(item)
    return scores, per_item


def answer_matches(output: str, gold: str, spec: TaskSpec) -> dict:
    """Strict (``answer_regex``) and, when the spec has one, flexible (last ``flexible_regex`` match)
    predictions of a generated ``output`` and whether each equals ``gold``."""
    strict = normalize_number_answer(extract_answer(output, spec.answer_regex))
    out = {"prediction": strict, "exact_match": float(strict == gold)}
    if spec.flexible_regex:
        flexible = normalize_number_answer(extract_answer(output, spec.flexible_regex, last=True))
        out.update(prediction_flexible=flexible, exact_match_flexible=float(flexible == gold))
    return out


def _run_last_word(task: Task, runner: RequestRunner, contexts: list[str]) -> tuple[dict, list[dict]]:
    requests = [(ctx, " " + item["target"]) for item, ctx in zip(task.items, contexts, strict=True)]
    lls = runner.loglikelihood(requests)
    hits = [float(runner.is_greedy(c, t)) for c, t in progress(requests, desc="greedy check", unit="item")]
    per_item = [{"context": c, "target": t, "loglikelihood": ll, "acc": h}
                for (c, t), ll, h in zip(requests, lls, hits, strict=True)]
    return {"acc": hits, "loglikelihood": lls}, per_item


RUNNERS = {"multiple_choice": score_multiple_choice, "generate": _run_generate, "last_word": _run_last_word}


class Strategy(Protocol):
    """A prompting strategy (``lmlab.agents.strategies``): scores a task its own way — own prompts,
    several model calls per item — and returns (scores per metric, per-item records)."""

    name: str

    def __call__(self, task: Task, runner: RequestRunner) -> tuple[dict, list[dict]]: ...

    def config(self) -> dict: ...


def evaluate_task(task: Task, runner: RequestRunner, *, limit: int | None = None, seed: int = 1234,
                  strategy: Strategy | None = None) -> dict:
    """Score ``task`` (its first ``limit`` items) and return metrics, stderrs, config and per-item records.

    Without a ``strategy`` the task's own prompt is used (the lm-evaluation-harness way); with one,
    the strategy builds the prompts and answers (direct, chain of thought, self-consistency, PAL, ...)
    and the result names it."""
    if limit is not None:
        task = Task(task.spec, task.items[:limit], task.fewshot_pool)
    rng = random.Random(seed)
    if strategy is not None:
        scores, per_item = strategy(task, runner)
    elif task.spec.type == "last_word":
        contexts = [item["context"] for item in task.items]
        scores, per_item = RUNNERS[task.spec.type](task, runner, contexts)
    else:
        contexts = [fewshot_context(task, record, rng) for record in task.items]
        scores, per_item = RUNNERS[task.spec.type](task, runner, contexts)
    metrics: dict[str, float] = {}
    for name, values in scores.items():
        if name == "loglikelihood":  # LAMBADA's perplexity of the target word
            metrics["perplexity"] = math.exp(-float(np.mean(values)))
            continue
        metrics[name], metrics[f"{name}_stderr"] = _mean_and_stderr(values)
    config = {**asdict(task.spec), "seed": seed, "limit": limit}
    if strategy is not None:
        config["strategy"] = strategy.config()
    return {"task": task.spec.name, "n": len(task.items), "strategy": strategy.name if strategy else None,
            "metrics": metrics, "config": config, "items": per_item}


def aggregate(results: list[dict]) -> dict[str, float]:
    """Per metric, the mean over tasks weighted by their item counts."""
    totals: dict[str, list[float]] = {}
    for r in results:
        for name, value in r["metrics"].items():
            if not name.endswith("_stderr") and name != "perplexity":
                totals.setdefault(name, []).extend([value] * r["n"])
    return {name: float(np.mean(v)) for name, v in totals.items()}
