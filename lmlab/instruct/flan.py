"""FLAN-style multitask instruction data (Wei et al. 2022 "Finetuned Language Models Are Zero-Shot
Learners"; Chung et al. 2022 "Scaling Instruction-Finetuned Language Models"; the task prefixes of
T5, Raffel et al. 2020).

A task is a shared data set read by lmlab's existing readers (SST-2 and AG News through
``lmlab.classify.data``, ARC and GSM8K through ``lmlab.eval.tasks``, Multi30k through
``lmlab.data.parallel``) as records with named fields, and several templates that turn a record
into an (instruction, output) pair: a T5 task prefix, natural-language zero-shot phrasings (with
the answer options spelled out for classification, as FLAN does) and few-shot templates that put
``shots`` solved examples of the same task before the query. Each example uses one template
drawn at random. The tasks are mixed by ``lmlab.data.mixture`` (example-proportional with a cap,
temperature, or explicit rates) into Alpaca rows for ``lmlab finetune``.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..core.errors import ConfigError, DataError
from ..core.validate import check_number
from ..data.datasets import dataset_file
from ..data.mixture import mixing_rates, mixture_counts, sample_mixture


@dataclass(frozen=True)
class Template:
    """How one record becomes an instruction and its answer (``str.format`` over the record's fields);
    ``shots`` > 0 puts that many solved examples of the task before the query."""

    instruction: str
    output: str
    shots: int = 0


@dataclass(frozen=True)
class TaskSource:
    """A task: the fields its records have, how to read them, and its templates."""

    name: str
    fields: tuple[str, ...]
    read: Callable[[], list[dict]]
    templates: tuple[Template, ...]


def template_fields(text: str) -> set[str]:
    """The field names a ``str.format`` template uses."""
    try:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as exc:
        raise ConfigError(f"template {text!r} is not a valid format string ({exc})",
                          "write fields as {name} and literal braces as {{ }}") from None


def check_template(task: str, template: Template, fields: Sequence[str]) -> None:
    """Refuse a template that uses a field the task's records do not have."""
    check_number("shots", template.shots, low=0, integer=True)
    for part in (template.instruction, template.output):
        missing = sorted(template_fields(part) - set(fields))
        if missing:
            raise ConfigError(f"a template of task {task} uses field(s) {missing} that its records do not have "
                              f"(template: {part!r})", f"use only {', '.join(fields)}")


def _labeled(spec: str, names: Mapping[str, str] | None = None) -> list[dict]:
    from ..classify.data import load_labeled

    texts, labels = load_labeled(spec)
    options = sorted(set(names.values()) if names else set(labels))
    return [{"text": t.strip(), "label": names[y] if names else y, "options": "\n".join(f"- {o}" for o in options)}
            for t, y in zip(texts, labels, strict=True)]


def _arc() -> list[dict]:
    from ..eval.tasks import BUILTIN

    read = BUILTIN["arc_easy"][1]
    out = []
    for r in read(dataset_file("arc", "easy-train")):
        letters = "ABCDEFGH"[:len(r["choices"])]
        out.append({"question": r["question"], "answer": r["choices"][r["gold"]],
                    "options": "\n".join(f"({a}) {c}" for a, c in zip(letters, r["choices"], strict=True))})
    return out


def _gsm8k() -> list[dict]:
    from ..data.corpus import read_jsonl

    return [{"question": r["question"], "answer": r["answer"]} for r in read_jsonl(dataset_file("gsm8k", "train"))]


def _multi30k() -> list[dict]:
    from ..data.parallel import aligned_lines, parallel_corpora

    english, german = aligned_lines(parallel_corpora("multi30k:train", pair="en-de"))
    return [{"english": e, "german": g} for e, g in zip(english, german, strict=True) if e.strip() and g.strip()]


CLASSIFY_FIELDS = ("text", "label", "options")
TASKS: dict[str, TaskSource] = {
    "sst2": TaskSource("sst2", CLASSIFY_FIELDS, lambda: _labeled("sst2:train", {"0": "negative", "1": "positive"}), (
        Template("sst2 sentence: {text}", "{label}"),
        Template("Is the sentiment of this movie review positive or negative?\n\n{text}", "{label}"),
        Template("Review: {text}\nDid the reviewer like the movie?\nOPTIONS:\n{options}", "{label}"),
        Template("Classify the sentiment of the sentence as positive or negative.\n\n{text}", "{label}", shots=2),
    )),
    "agnews": TaskSource("agnews", CLASSIFY_FIELDS, lambda: _labeled("agnews:train"), (
        Template("agnews article: {text}", "{label}"),
        Template("What is this news article about?\n\n{text}\n\nOPTIONS:\n{options}", "{label}"),
        Template("Which topic fits this text best: World, Sports, Business or Sci/Tech?\n\n{text}", "{label}"),
        Template("Give the topic of the news article.\n\n{text}", "{label}", shots=2),
    )),
    "arc": TaskSource("arc", ("question", "answer", "options"), _arc, (
        Template("arc question: {question} options: {options}", "{answer}"),
        Template("{question}\n\nChoose the right answer:\n{options}", "{answer}"),
        Template("Answer the science question.\n\n{question}\n{options}", "{answer}", shots=2),
    )),
    "gsm8k": TaskSource("gsm8k", ("question", "answer"), _gsm8k, (
        Template("gsm8k question: {question}", "{answer}"),
        Template("Solve this maths word problem step by step, then give the answer after ####.\n\n{question}",
                 "{answer}"),
        Template("Solve the problem.\n\n{question}", "{answer}", shots=1),
    )),
    "multi30k": TaskSource("multi30k", ("english", "german"), _multi30k, (
        Template("translate English to German: {english}", "{german}"),
        Template("How do you say this sentence in German?\n\n{english}", "{german}"),
        Template("Translate the caption into German.\n\n{english}", "{german}", shots=3),
    )),
}


def read_templates(path: str) -> dict[str, list[Template]]:
    """Templates from a JSON file ``{"task": [{"instruction": ..., "output": ..., "shots": 0}, ...]}``."""
    from ..core.io import read_json

    raw = read_json(path, "templates file")
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a JSON object of task → template list",
                        'write {"sst2": [{"instruction": "...{text}...", "output": "{label}"}]}')
    out: dict[str, list[Template]] = {}
    for task, items in raw.items():
        if not isinstance(items, list):
            raise DataError(f"{path}: templates of task {task} are not a list", "give a list of template objects")
        out[task] = []
        for k, item in enumerate(items):
            if not isinstance(item, dict) or not {"instruction", "output"} <= set(item) or set(item) - {
                    "instruction", "output", "shots"}:
                raise DataError(f"{path}: template {k} of task {task} is not an object with 'instruction', 'output' "
                                "and optional 'shots'", "write {\"instruction\": ..., \"output\": ...}")
            out[task].append(Template(str(item["instruction"]), str(item["output"]), int(item.get("shots", 0))))
    return out


def render_record(task: str, template: Template, record: dict, shots: Sequence[dict] = ()) -> dict:
    """The Alpaca row of ``record`` under ``template``, with ``shots`` solved examples before it."""
    try:
        solved = [template.instruction.format(**s) + "\n" + template.output.format(**s) for s in shots]
        query = template.instruction.format(**record)
        answer = template.output.format(**record)
    except KeyError as exc:
        raise DataError(f"a record of task {task} has no field {exc.args[0]!r}, which its template uses",
                        f"record fields are {sorted(record)}") from None
    return {"instruction": "\n\n".join([*solved, query]), "input": "", "output": answer}


def file_task(name: str, path: str) -> TaskSource:
    """A task of your own: the JSON objects of a JSONL file, its fields those every record has (no
    built-in templates: give them with ``templates``)."""
    from ..data.corpus import read_jsonl

    records = read_jsonl(path)
    if not records:
        raise DataError(f"task {name}: {path} holds no records", "write one JSON object per line")
    fields = set(records[0]).intersection(*records[1:])
    return TaskSource(name, tuple(sorted(fields)), lambda: records, ())


def load_tasks(names: Sequence[str], templates: Mapping[str, Sequence[Template]] | None = None
               ) -> dict[str, tuple[list[dict], tuple[Template, ...]]]:
    """Records and (checked) templates per task: a built-in name, or ``NAME=FILE.jsonl`` for a task of your
    own (``file_task``); ``templates`` replaces a task's built-in ones."""
    sources = {}
    for entry in names:
        name, eq, path = entry.partition("=")
        if eq:
            sources[name] = file_task(name, path)
        elif name in TASKS:
            sources[name] = TASKS[name]
        else:
            raise ConfigError(f"unknown task {name!r}", f"choose from {', '.join(TASKS)}, or give NAME=FILE.jsonl")
    extra = sorted(set(templates or {}) - set(sources))
    if extra:
        raise ConfigError(f"templates given for task(s) {extra} that are not mixed", "add them to the tasks or drop them")
    out = {}
    for name, source in sources.items():
        chosen = tuple((templates or {}).get(name, source.templates))
        if not chosen:
            raise ConfigError(f"task {name} has no templates", "give it templates in the templates file (--templates)")
        for t in chosen:
            check_template(name, t, source.fields)
        out[name] = (source.read(), chosen)
    return out


def multitask_mixture(names: Sequence[str], total: int, *, cap: int | None = 3000, temperature: float = 1.0,
                      rates: Mapping[str, float] | None = None, seed: int = 0,
                      templates: Mapping[str, Sequence[Template]] | None = None) -> tuple[list[dict], dict]:
    """``total`` Alpaca rows mixed from ``names`` (see the module docstring) and a summary (sizes, rates, counts)."""
    tasks = load_tasks(names, templates)
    sizes = {n: len(records) for n, (records, _) in tasks.items()}
    shares = mixing_rates(sizes, cap=cap, temperature=temperature, rates=rates)
    counts = mixture_counts(shares, total)
    rng = random.Random(seed)
    rows, used = [], {n: [0] * len(t) for n, (_, t) in tasks.items()}
    for name, record in sample_mixture({n: records for n, (records, _) in tasks.items()}, counts, seed):
        records, chosen = tasks[name]
        k = rng.randrange(len(chosen))
        template = chosen[k]
        if template.shots >= len(records):
            raise DataError(f"task {name} has {len(records)} records, too few for a {template.shots}-shot template",
                            "use fewer shots")
        shots = []
        while len(shots) < template.shots:
            other = records[rng.randrange(len(records))]
            if other is not record and other not in shots:
                shots.append(other)
        rows.append(render_record(name, template, record, shots))
        used[name][k] += 1
    summary = {"tasks": list(tasks), "sizes": sizes, "cap": cap, "temperature": temperature,
               "explicit_rates": rates is not None, "rates": shares, "counts": counts, "template_counts": used,
               "rows": len(rows), "seed": seed}
    return rows, summary
