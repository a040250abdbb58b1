"""Self-Instruct (Wang et al. 2022, "Self-Instruct: Aligning Language Models with Self-Generated
Instructions"): a model bootstraps an instruction-tuning set from 175 human-written seed tasks.

1. **Instructions.** Each prompt shows 8 tasks — 6 sampled from the human seeds and 2 from the
   model's own kept instructions (all 8 human while fewer than 2 exist) — in the paper's format
   ``Come up with a series of tasks:\\nTask 1: …\\nTask 9:``; the continuation is cut at every
   ``Task N:`` into new instructions (the last one dropped when the reply hit its token limit).
   A new instruction is kept when it passes ``filters.heuristic_reason`` and its ROUGE-L to every
   instruction in the pool is < 0.7 (``filters.NoveltyPool``).
2. **Classification?** A few-shot prompt over the seeds asks whether each kept instruction is a
   classification task with finite output labels.
3. **Instances.** Input-first for ordinary tasks (``Task: …\\nInput: …\\nOutput: …``, the input
   left out when the task needs none); output-first for classification tasks (``Class label: …``
   then ``Input: …``), so the inputs do not all lean to one label. Instances with an empty output,
   an output that copies the input, or a duplicate (instruction, input) are dropped.

The result is Alpaca's JSON Lines (``instruction``, ``input``, ``output``), what ``lmlab finetune``
reads, plus counts per rejection reason and the novelty statistics (ROUGE-L to the nearest
instruction in the pool when each one was judged).
"""

from __future__ import annotations

import os
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError, DataError
from ..core.validate import check_number
from ..data.corpus import jsonl_records
from .complete import check_settings, complete
from .filters import NOVELTY_THRESHOLD, NoveltyPool, heuristic_reason

INSTRUCTION_HEADER = "Come up with a series of tasks:\n"
CLASSIFY_HEADER = "Can the following task be regarded as a classification task with finite output labels?\n\n"
INPUT_FIRST_HEADER = ("Come up with examples for the following tasks. If the task doesn't require additional "
                      "input, you can generate the output directly.\n\n")
OUTPUT_FIRST_HEADER = ("Given the classification task definition and the class labels, generate an input that "
                       "corresponds to each of the class labels. If the task doesn't require input, just "
                       "generate the correct class label.\n\n")
_TASK_MARK = re.compile(r"\s*Task\s*\d+\s*[:.]\s*")


@dataclass(frozen=True)
class SeedTask:
    """One human-written task: its instruction, (input, output) instances and whether it classifies."""

    instruction: str
    instances: tuple[tuple[str, str], ...]
    is_classification: bool = False


def _seed_task(row: Any, where: str) -> SeedTask:
    if not isinstance(row, dict):
        raise DataError(f"{where} is not a JSON object", "write one seed task object per line")
    for name in ("instruction", "instances"):
        if name not in row:
            raise DataError(f"{where} has no field {name!r}",
                            "each seed task needs 'instruction' and 'instances': [{'input', 'output'}, ...]")
    if not isinstance(row["instruction"], str) or not row["instruction"].strip():
        raise DataError(f"{where}: field 'instruction' is not a non-empty string", "give the task's instruction text")
    instances = row["instances"]
    if not isinstance(instances, list) or not instances:
        raise DataError(f"{where}: field 'instances' is not a non-empty list", "give at least one {'input', 'output'}")
    pairs = []
    for k, inst in enumerate(instances):
        if not isinstance(inst, dict) or "output" not in inst:
            raise DataError(f"{where}: instances[{k}] has no field 'output'", "each instance is {'input', 'output'}")
        pairs.append((str(inst.get("input") or ""), str(inst["output"])))
    flag = row.get("is_classification", False)
    if not isinstance(flag, bool):
        raise DataError(f"{where}: field 'is_classification' is not true/false", "write true or false")
    return SeedTask(row["instruction"].strip(), tuple(pairs), flag)


def read_seed_tasks(path: str | os.PathLike) -> list[SeedTask]:
    """The seed tasks of a JSON Lines file (Self-Instruct's ``seed_tasks.jsonl`` format); a line without
    a needed field is refused naming the line and the field."""
    tasks = [_seed_task(row, where) for where, row in jsonl_records(path)]
    if len(tasks) < 2:
        raise DataError(f"{path} holds {len(tasks)} seed task(s); prompting needs at least 2", "add seed tasks")
    return tasks


def instruction_prompt(instructions: Sequence[str]) -> str:
    """The paper's instruction-generation prompt: the tasks numbered, ending at the next number."""
    lines = [f"Task {i}: {text}" for i, text in enumerate(instructions, 1)]
    return INSTRUCTION_HEADER + "\n".join(lines) + f"\nTask {len(instructions) + 1}:"


def parse_instructions(completion: str, *, truncated: bool = False) -> list[str]:
    """The instructions in a continuation of ``instruction_prompt``: split at each ``Task N:``, cut at a blank
    line, whitespace collapsed; the last dropped when ``truncated`` (the reply hit its token limit)."""
    text = completion.split("\n\n", 1)[0]
    pieces = [re.sub(r"\s+", " ", p).strip() for p in _TASK_MARK.split(text)]
    if truncated and pieces:
        pieces = pieces[:-1]
    return [p[0].upper() + p[1:] for p in pieces if p]


def _example_block(task: SeedTask, output_first: bool) -> str:
    given, answer = task.instances[0]
    if output_first:
        return f"Task: {task.instruction}\nClass label: {answer}\nInput: {given}\n\n"
    return f"Task: {task.instruction}\n" + (f"Input: {given}\n" if given else "") + f"Output: {answer}\n\n"


def classification_prompt(instruction: str, shots: Sequence[SeedTask]) -> str:
    """Few-shot yes/no prompt: is ``instruction`` a classification task?"""
    body = "".join(f"Task: {t.instruction}\nIs it classification? {'Yes' if t.is_classification else 'No'}\n\n"
                   for t in shots)
    return CLASSIFY_HEADER + body + f"Task: {instruction}\nIs it classification?"


def instance_prompt(instruction: str, shots: Sequence[SeedTask], output_first: bool) -> str:
    """Input-first (or, for classification, output-first) instance prompt with solved seed examples."""
    header = OUTPUT_FIRST_HEADER if output_first else INPUT_FIRST_HEADER
    return header + "".join(_example_block(t, output_first) for t in shots) + f"Task: {instruction}\n"


def _field(text: str, name: str) -> str | None:
    """The text after the first ``name:`` up to the next field label or blank line."""
    match = re.search(rf"(?:^|\n){name}:[ \t]*", text)
    if match is None:
        return None
    rest = text[match.end():]
    end = re.search(r"\n\n|\n(?:Input|Output|Class label|Task):", rest)
    return (rest[:end.start()] if end else rest).strip()


def parse_instance(completion: str, output_first: bool) -> tuple[str, str] | None:
    """(input, output) from a continuation of ``instance_prompt``, or None when it has no output."""
    text = completion.split("\nTask:", 1)[0]
    if output_first:
        label = _field(text, "Class label")
        given = _field(text, "Input")
        return (given or "", label) if label else None
    given = _field(text, "Input")
    answer = _field(text, "Output")
    if answer is None and given is None:  # the model answered straight away, as a no-input task
        answer = text.split("\n\n", 1)[0].strip()
    return (given or "", answer) if answer else None


@dataclass
class SynthesisResult:
    """Alpaca rows and what happened: kept/rejected counts per reason and the novelty statistics."""

    rows: list[dict]
    counts: Counter = field(default_factory=Counter)
    nearest_kept: list[float] = field(default_factory=list)  # ROUGE-L to the nearest pool instruction, kept ones
    nearest_all: list[float] = field(default_factory=list)  # the same for every candidate judged for novelty
    prompts: int = 0

    def summary(self) -> dict:
        def stats(xs: list[float]) -> dict:
            if not xs:
                return {"n": 0}
            bins = Counter(min(int(x * 10), 9) for x in xs)
            return {"n": len(xs), "mean": statistics.fmean(xs), "median": statistics.median(xs), "max": max(xs),
                    "histogram": {f"{b / 10:.1f}-{(b + 1) / 10:.1f}": bins[b] for b in range(10)}}

        return {"rows": len(self.rows), "prompts": self.prompts, "counts": dict(sorted(self.counts.items())),
                "novelty_rouge_l_to_nearest": {"kept": stats(self.nearest_kept), "candidates": stats(self.nearest_all)}}


def generate_instructions(model: Any, seeds: Sequence[SeedTask], n: int, *, human: int = 6, machine: int = 2,
                          batch_size: int = 16, seed: int = 0, max_tokens: int = 128, temperature: float = 0.7,
                          chat: bool = False, threshold: float = NOVELTY_THRESHOLD, max_prompts: int | None = None,
                          result: SynthesisResult | None = None,
                          on_progress: Callable[[int, int], None] | None = None) -> tuple[list[str], SynthesisResult]:
    """Up to ``n`` new instructions that pass the heuristics and the novelty filter (step 1)."""
    check_number("n", n, low=1, integer=True)
    check_settings(batch_size=batch_size, seed=seed, temperature=temperature, max_tokens=max_tokens)
    check_number("human", human, low=1, integer=True)
    check_number("machine", machine, low=0, integer=True)
    if human > len(seeds):
        raise ConfigError(f"{human} human tasks per prompt, but only {len(seeds)} seed tasks",
                          "lower human (--human) or add seed tasks")
    limit = max_prompts if max_prompts is not None else 20 * n
    check_number("max_prompts", limit, low=1, integer=True)
    result = result or SynthesisResult([])
    rng = random.Random(seed)
    pool = NoveltyPool(threshold)
    pool.extend(t.instruction for t in seeds)
    kept: list[str] = []
    while len(kept) < n and result.prompts < limit:
        prompts = []
        for _ in range(min(batch_size, limit - result.prompts)):
            shown = [t.instruction for t in rng.sample(list(seeds), human + machine if len(kept) < machine else human)]
            if len(kept) >= machine:
                shown += rng.sample(kept, machine)
            prompts.append(instruction_prompt(shown))
        replies = complete(model, prompts, chat=chat, max_tokens=max_tokens, temperature=temperature,
                           seed=seed * 1_000_003 + result.prompts, stop=("\n\n",), batch_size=batch_size)
        result.prompts += len(prompts)
        for reply in replies:
            for candidate in parse_instructions(reply.text, truncated=reply.finish_reason == "length"):
                result.counts["candidates"] += 1
                if len(kept) >= n:
                    result.counts["rejected_over_quota"] += 1
                    continue
                reason = heuristic_reason(candidate)
                if reason is not None:
                    result.counts[f"rejected_{reason}"] += 1
                    continue
                score, _ = pool.nearest(candidate)
                result.nearest_all.append(score)
                if not pool.is_novel(score):
                    result.counts["rejected_not_novel"] += 1
                    continue
                pool.add(candidate)
                kept.append(candidate)
                result.nearest_kept.append(score)
                result.counts["kept_instructions"] += 1
        if on_progress is not None:
            on_progress(len(kept), n)
    if len(kept) < n:
        result.counts["prompt_budget_exhausted"] = 1
    return kept, result


def classify_instructions(model: Any, instructions: Sequence[str], seeds: Sequence[SeedTask], *, shots: int = 8,
                          batch_size: int = 16, chat: bool = False, seed: int = 0) -> list[bool]:
    """Whether each instruction is a classification task (step 2), by a balanced few-shot prompt."""
    rng = random.Random(seed)
    yes = [t for t in seeds if t.is_classification]
    no = [t for t in seeds if not t.is_classification]
    chosen = rng.sample(yes, min(len(yes), shots // 2)) + rng.sample(no, min(len(no), shots - shots // 2))
    rng.shuffle(chosen)
    prompts = [classification_prompt(i, chosen) for i in instructions]
    replies = complete(model, prompts, chat=chat, max_tokens=3, temperature=0.0, batch_size=batch_size,
                       desc="classification?")
    return [r.text.strip().lower().startswith("yes") for r in replies]


def generate_instances(model: Any, instructions: Sequence[str], classification: Sequence[bool],
                       seeds: Sequence[SeedTask], *, shots: int = 2, batch_size: int = 16, seed: int = 0,
                       max_tokens: int = 128, chat: bool = False,
                       result: SynthesisResult | None = None) -> SynthesisResult:
    """One instance per instruction (step 3), input-first or output-first; Alpaca rows in ``result.rows``."""
    result = result or SynthesisResult([])
    rng = random.Random(seed)
    by_kind = {kind: [t for t in seeds if t.is_classification == kind] or list(seeds) for kind in (True, False)}
    prompts = [instance_prompt(i, rng.sample(by_kind[c], min(shots, len(by_kind[c]))), c)
               for i, c in zip(instructions, classification, strict=True)]
    replies = complete(model, prompts, chat=chat, max_tokens=max_tokens, temperature=0.0, batch_size=batch_size,
                       stop=("\nTask:",), desc="instances")  # not a blank line: an input may have paragraphs
    seen = set()
    for instruction, output_first, reply in zip(instructions, classification, replies, strict=True):
        parsed = parse_instance(reply.text, output_first)
        if parsed is not None and reply.finish_reason == "length" and reply.text.rstrip().endswith(parsed[1]):
            result.counts["rejected_truncated_output"] += 1  # the output ran on into the token limit
            continue
        if parsed is None:
            result.counts["rejected_no_output"] += 1
            continue
        given, answer = parsed
        if answer.strip().lower() == given.strip().lower() or answer.strip() == instruction.strip():
            result.counts["rejected_output_copies_input"] += 1
            continue
        if (instruction, given) in seen:
            result.counts["rejected_duplicate_instance"] += 1
            continue
        seen.add((instruction, given))
        result.rows.append({"instruction": instruction, "input": given, "output": answer})
        result.counts["kept_rows"] += 1
        result.counts["classification_rows" if output_first else "input_first_rows"] += 1
    return result


def self_instruct(model: Any, seeds: Sequence[SeedTask], n: int, *, batch_size: int = 16, seed: int = 0,
                  human: int = 6, machine: int = 2, chat: bool = False, temperature: float = 0.7,
                  instruction_tokens: int = 128, instance_tokens: int = 128, threshold: float = NOVELTY_THRESHOLD,
                  max_prompts: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> SynthesisResult:
    """The whole pipeline (steps 1–3) on ``model`` (``LocalModel`` or ``EndpointModel``); see the module docstring."""
    check_settings(batch_size=batch_size, seed=seed, temperature=temperature, instruction_tokens=instruction_tokens,
                   instance_tokens=instance_tokens)
    instructions, result = generate_instructions(
        model, seeds, n, human=human, machine=machine, batch_size=batch_size, seed=seed,
        max_tokens=instruction_tokens, temperature=temperature, chat=chat, threshold=threshold,
        max_prompts=max_prompts, on_progress=on_progress)
    if not instructions:
        return result
    classification = classify_instructions(model, instructions, seeds, batch_size=batch_size, chat=chat, seed=seed)
    return generate_instances(model, instructions, classification, seeds, batch_size=batch_size, seed=seed,
                              max_tokens=instance_tokens, chat=chat, result=result)
