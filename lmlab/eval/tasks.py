"""Benchmark tasks as data: items (JSONL) plus a small spec saying how to prompt and score them.

Three kinds of task:

* ``multiple_choice`` — the prompt is followed by each choice; the choice with the highest
  log-likelihood is the answer (``acc``), also after dividing by the choice's length in
  characters (``acc_norm``, as lm-evaluation-harness defines it) and in UTF-8 bytes
  (``acc_bytes``);
* ``generate`` — greedy generation until a stop string, the answer extracted with a
  regular expression and compared by exact match (GSM8K's ``#### 42``);
* ``last_word`` — LAMBADA-style: predict a passage's last word (``acc`` = greedy decoding
  yields it exactly; ``perplexity`` of the word), built from any corpus.

A spec is a JSON object: ``{"name", "type", "data", "prompt": "Question: {question}\\nAnswer:",
"choices": "choices", "gold": "label", "fewshot_data", "num_fewshot", ...}`` (see
``docs/evaluation.md``); ``prompt`` is a ``str.format`` template over each record's fields.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..analysis.answers import FLEXIBLE_NUMBER, extract_answer, normalize_number_answer  # noqa: F401
from ..core.errors import ConfigError, DataError, InputError
from ..core.io import read_json
from ..core.validate import check_choice, check_number
from ..data import data_root, open_corpus
from ..data.corpus import text_file
from .records import read_jsonl

TASK_TYPES = ("multiple_choice", "generate", "last_word")


@dataclass
class TaskSpec:
    """How to turn records into prompts and how to score the answers."""

    name: str
    type: str
    data: str = ""  # JSONL path, or a corpus spec for last_word tasks
    prompt: str = "{query}"
    choices: str = "choices"  # record field holding the list of choices
    gold: str = "gold"  # record field: index of the right choice, or its text; the answer for generate
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_data: str = ""
    num_fewshot: int = 0
    until: list[str] = field(default_factory=lambda: ["\n\n"])
    max_new_tokens: int = 256
    answer_regex: str = ""  # first group of the first match is the answer (else the whole text)
    flexible_regex: str = ""  # also score the last match of this (lm-evaluation-harness's flexible-extract)
    min_words: int = 10  # last_word: passages shorter than this are skipped
    description: str = ""

    def __post_init__(self) -> None:
        check_choice("task type", self.type, TASK_TYPES)
        check_number("num_fewshot", self.num_fewshot, low=0, integer=True)


@dataclass
class Task:
    """A spec with its loaded items (and few-shot pool)."""

    spec: TaskSpec
    items: list[dict]
    fewshot_pool: list[dict] = field(default_factory=list)


# --- adapters from the shared data sets' formats to flat records ----------------------------------
def _arc_record(r: dict) -> dict:
    labels = r["choices"]["label"]
    if r["answerKey"] not in labels:
        raise DataError(f"ARC item {r.get('id')}: answer {r['answerKey']!r} is not among {labels}")
    return {"id": r.get("id"), "question": r["question"], "choices": r["choices"]["text"],
            "gold": labels.index(r["answerKey"])}


def _gsm8k_record(r: dict) -> dict:
    return {"question": r["question"], "answer": r["answer"]}


def _sst2_records(path: Path) -> list[dict]:
    rows = list(text_file(path))
    header = rows[0].split("\t")
    if "sentence" not in header or "label" not in header:
        raise DataError(f"{path}: expected a TSV with 'sentence' and 'label' columns")
    s, y = header.index("sentence"), header.index("label")
    return [{"sentence": cols[s].strip(), "gold": int(cols[y])} for cols in (row.split("\t") for row in rows[1:])]



BUILTIN: dict[str, tuple[dict, Callable[[Path], list[dict]], str, str]] = {
    # name: (spec fields, reader of a shared file, items file, few-shot file) — paths under LMLAB_DATA
    "arc_easy": ({"type": "multiple_choice", "prompt": "Question: {question}\nAnswer:",
                  "description": "ARC-Easy (test), zero-shot prompt of lm-evaluation-harness"},
                 lambda p: [_arc_record(r) for r in read_jsonl(p)], "arc/ARC-Easy-test.jsonl",
                 "arc/ARC-Easy-train.jsonl"),
    "arc_challenge": ({"type": "multiple_choice", "prompt": "Question: {question}\nAnswer:",
                       "description": "ARC-Challenge (test)"},
                      lambda p: [_arc_record(r) for r in read_jsonl(p)], "arc/ARC-Challenge-test.jsonl",
                      "arc/ARC-Challenge-train.jsonl"),
    "gsm8k": ({"type": "generate", "prompt": "Question: {question}\nAnswer:", "gold": "answer",
               "until": ["Question:", "</s>", "<|im_end|>"], "answer_regex": r"#### (\-?[0-9\.\,]+)",
               "flexible_regex": FLEXIBLE_NUMBER, "num_fewshot": 5,
               "description": "GSM8K (test), exact match of the answer after '####' (strict) "
                              "and of the last number (flexible)"},
              lambda p: [_gsm8k_record(r) for r in read_jsonl(p)], "gsm8k/test.jsonl", "gsm8k/train.jsonl"),
    "sst2": ({"type": "multiple_choice",
              "prompt": "{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:",
              "choices": "", "description": "SST-2 (dev) as prompted classification: negative / positive"},
             _sst2_records, "sst2/dev.tsv", "sst2/train.tsv"),
}
SST2_CHOICES = ["negative", "positive"]


def last_word_items(corpus_spec: str, min_words: int = 10) -> list[dict]:
    """LAMBADA-style items from any corpus: every passage of ``min_words`` words or more."""
    items = []
    for doc in open_corpus(corpus_spec):
        words = doc.split()
        if len(words) >= min_words:
            items.append({"context": " ".join(words[:-1]), "target": words[-1]})
    if not items:
        raise DataError(f"no passage of {corpus_spec} has {min_words} words or more", "lower --min-words")
    return items


def _resolve(path: str, base: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base is None else base / p


def load_task(name_or_path: str, *, num_fewshot: int | None = None, corpus: str | None = None,
              min_words: int | None = None) -> Task:
    """A built-in task (arc_easy, arc_challenge, gsm8k, sst2, lambada) or a spec JSON file."""
    if name_or_path == "lambada":
        if not corpus:
            raise ConfigError("the lambada task needs a corpus", "pass --corpus FILE or NAME:SPLIT (e.g. wikitext-2:test)")
        spec = TaskSpec(name=f"lambada[{corpus}]", type="last_word", data=corpus,
                        min_words=min_words if min_words is not None else 10,
                        description="LAMBADA-style last-word prediction")
        return Task(spec, last_word_items(corpus, spec.min_words))
    if name_or_path.replace("-", "_") in BUILTIN:  # arc-easy is arc_easy
        name_or_path = name_or_path.replace("-", "_")
        settings, reader, items_file, fewshot_file = BUILTIN[name_or_path]
        spec = TaskSpec(name=name_or_path, data=items_file, fewshot_data=fewshot_file, **settings)
        if num_fewshot is not None:
            spec.num_fewshot = check_number("num_fewshot", num_fewshot, low=0, integer=True)
        root = data_root()
        items_path = root / items_file
        if not items_path.exists():
            raise InputError(f"task {name_or_path} needs {items_path}", "set LMLAB_DATA to the shared data folder")
        items = reader(items_path)
        pool = reader(root / fewshot_file) if spec.num_fewshot else []
        if name_or_path == "sst2":
            for r in items + pool:
                r["choices"] = SST2_CHOICES
            spec.choices = "choices"
        return Task(spec, items, pool)
    path = Path(name_or_path)
    if not path.exists():
        raise InputError(f"no built-in task or spec file named {name_or_path!r}",
                         f"use one of {', '.join([*BUILTIN, 'lambada'])} or a task spec .json")
    raw = read_json(path, "task spec")
    if not isinstance(raw, dict):
        raise DataError(f"task spec {path} holds a {type(raw).__name__}, not a JSON object",
                        "write the spec as one JSON object with 'name', 'type' and 'data'")
    known = {f.name for f in fields(TaskSpec)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown task spec keys {sorted(unknown)}", f"use only {sorted(known)}")
    if "name" not in raw or "type" not in raw:
        raise ConfigError(f"{path}: a task spec needs 'name' and 'type'")
    spec = TaskSpec(**raw)
    if num_fewshot is not None:
        spec.num_fewshot = num_fewshot
    if spec.type == "last_word":
        return Task(spec, last_word_items(str(_resolve(spec.data, path.parent)), spec.min_words))
    items = read_jsonl(_resolve(spec.data, path.parent))
    pool = read_jsonl(_resolve(spec.fewshot_data, path.parent)) if spec.fewshot_data and spec.num_fewshot else []
    return Task(spec, items, pool)


# --- prompts ------------------------------------------------------------------------------------------
def render(template: str, record: dict) -> str:
    """``template`` filled with the record's fields, with a clear error for a missing one."""
    try:
        return template.format(**record)
    except KeyError as exc:
        raise DataError(f"the prompt template needs field {exc.args[0]!r}, which a record lacks",
                        f"record fields are {sorted(record)}") from None


def choices_of(spec: TaskSpec, record: dict) -> tuple[list[str], int]:
    """(choice texts, index of the right one) of a multiple-choice record."""
    choices = record.get(spec.choices)
    if not isinstance(choices, list) or not choices:
        raise DataError(f"task {spec.name}: a record has no list of choices in field {spec.choices!r}")
    gold = record.get(spec.gold)
    if isinstance(gold, str) and not gold.lstrip("-").isdigit():
        if gold not in choices:
            raise DataError(f"task {spec.name}: gold answer {gold!r} is not one of the choices {choices}")
        gold = choices.index(gold)
    if gold is None or not 0 <= int(gold) < len(choices):
        raise DataError(f"task {spec.name}: gold index {gold!r} is outside the {len(choices)} choices")
    return [str(c) for c in choices], int(gold)


def target_text(spec: TaskSpec, record: dict) -> str:
    """The text that answers a record in a few-shot example."""
    if spec.type == "multiple_choice":
        choices, gold = choices_of(spec, record)
        return choices[gold]
    if spec.gold not in record:
        raise DataError(f"task {spec.name}: a record has no answer field {spec.gold!r}")
    return str(record[spec.gold])


def fewshot_context(task: Task, record: dict, rng: random.Random) -> str:
    """The prompt for ``record``, preceded by ``num_fewshot`` solved examples from the pool."""
    spec = task.spec
    query = render(spec.prompt, record)
    if not spec.num_fewshot:
        return query
    pool = [r for r in task.fewshot_pool if r is not record and r != record] or [
        r for r in task.items if r is not record]
    if len(pool) < spec.num_fewshot:
        raise DataError(f"task {spec.name}: {spec.num_fewshot}-shot needs that many examples, the pool has {len(pool)}")
    shots = rng.sample(pool, spec.num_fewshot)
    parts = [render(spec.prompt, s) + spec.target_delimiter + target_text(spec, s) for s in shots]
    return spec.fewshot_delimiter.join([*parts, query])
