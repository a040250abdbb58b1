"""A generated tool-use set: multi-step arithmetic word problems whose numbers are too large for a
small model to compute in its head, so a calculator or a program must do the arithmetic.

Each problem comes from one of twelve templates (one to three operations: products of 3–5 digit
numbers, sums, differences, exact divisions) with numbers drawn by a seeded generator; its answer
is computed exactly, written GSM8K's way — a worked solution, then ``#### N`` — so the evaluation
harness scores it like GSM8K and chain-of-thought examples come with it. ``write_problem_task``
saves items, a disjoint few-shot pool and a task spec, ready for ``lmlab eval task``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from ..core.io import write_text
from ..core.validate import check_number
from ..eval.records import write_jsonl
from .calculator import calculate

NAMES = ("Tom", "Ana", "Ravi", "Mei", "Omar", "Lena", "Jon", "Sofia")

# (question, expression, solution) over drawn numbers a, b, c, d and a name n
Template = tuple[str, str, str]
TEMPLATES: list[Template] = [
    ("A warehouse holds {a} boxes. Each box contains {b} screws. How many screws are in the warehouse?",
     "{a} * {b}", "The boxes hold {a} * {b} = {r} screws."),
    ("A farm has {a} cows. Each cow gives {b} liters of milk a day. How many liters do the cows give in {c} days?",
     "{a} * {b} * {c}", "The cows give {a} * {b} * {c} = {r} liters."),
    ("{n} had {a} dollars. {n} spent {b} dollars on a car and {c} dollars on a boat. How many dollars are left?",
     "{a} - {b} - {c}", "{n} has {a} - {b} - {c} = {r} dollars left."),
    ("A factory makes {a} bolts a day and ships {b} of them. How many bolts does it keep after {c} days?",
     "({a} - {b}) * {c}", "It keeps ({a} - {b}) * {c} = {r} bolts."),
    ("A stadium has {a} rows with {b} seats in each row. {c} seats are taken. How many seats are free?",
     "{a} * {b} - {c}", "There are {a} * {b} - {c} = {r} free seats."),
    ("A company pays each of its {a} workers {b} dollars a month. How many dollars does it pay in {c} months?",
     "{a} * {b} * {c}", "It pays {a} * {b} * {c} = {r} dollars."),
    ("A tank holds {a} liters of water. {b} liters leak out every hour for {c} hours. How many liters are left?",
     "{a} - {b} * {c}", "There are {a} - {b} * {c} = {r} liters left."),
    ("A town has {a} houses that use {b} units of power each and {c} shops that use {d} units each. How many "
     "units do they use in all?", "{a} * {b} + {c} * {d}", "They use {a} * {b} + {c} * {d} = {r} units."),
    ("{q} candies are shared equally among {b} children. How many candies does each child get?",
     "{q} / {b}", "Each child gets {q} / {b} = {r} candies."),
    ("A school buys {a} books at {b} dollars each and {c} pens at {d} dollars each. How many dollars does it "
     "spend?", "{a} * {b} + {c} * {d}", "It spends {a} * {b} + {c} * {d} = {r} dollars."),
    ("A truck carries {a} kilograms on each trip. {b} trucks make {c} trips each. How many kilograms do they "
     "carry?", "{a} * {b} * {c}", "They carry {a} * {b} * {c} = {r} kilograms."),
    ("A library had {a} books. It bought {b} boxes of {c} books each. How many books does it have now?",
     "{a} + {b} * {c}", "It has {a} + {b} * {c} = {r} books."),
]


def _numbers(rng: random.Random) -> dict:
    a, b = rng.randint(1000, 99999), rng.randint(12, 999)
    c, d = rng.randint(12, 99), rng.randint(12, 999)
    if a < b + c * max(d, 1):  # differences stay positive
        a += b + c * d
    return {"a": a, "b": b, "c": c, "d": d, "q": b * rng.randint(1000, 9999), "n": rng.choice(NAMES)}


def arithmetic_problems(n: int, seed: int = 0) -> list[dict]:
    """``n`` problems ``{id, question, answer ("solution\\n#### N"), expression, value}``; the same
    ``seed`` gives the same problems."""
    check_number("n", n, low=1, integer=True)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        question, expression, solution = TEMPLATES[i % len(TEMPLATES)]
        values = _numbers(rng)
        if "{a} - {b} * {c}" in expression:
            values["a"] = max(values["a"], values["b"] * values["c"] + rng.randint(100, 9999))
        expr = expression.format(**values)
        value = calculate(expr)
        out.append({"id": f"arith-{seed}-{i}", "question": question.format(**values),
                    "answer": f"{solution.format(**values, r=value)}\n#### {value}", "expression": expr,
                    "value": value})
    return out


TASK_SPEC = {"name": "arithmetic_tools", "type": "generate", "prompt": "Question: {question}\nAnswer:",
             "gold": "answer", "answer_regex": r"#### (\-?[0-9\.\,]+)", "until": ["Question:", "\n\n"],
             "num_fewshot": 3, "max_new_tokens": 128,
             "description": "generated multi-step arithmetic word problems with large numbers (lmlab.agents.problems)"}


def write_problem_task(folder: str | os.PathLike, n: int = 40, seed: int = 0, fewshot: int = 20) -> Path:
    """Write ``items.jsonl`` (n problems), ``fewshot.jsonl`` (another seed) and ``task.json`` under
    ``folder``; returns the spec's path (for ``lmlab eval task``)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    write_jsonl(path / "items.jsonl", arithmetic_problems(n, seed))
    write_jsonl(path / "fewshot.jsonl", arithmetic_problems(fewshot, seed + 1_000_003))
    spec = {**TASK_SPEC, "data": "items.jsonl", "fewshot_data": "fewshot.jsonl"}
    write_text(path / "task.json", json.dumps(spec, indent=2) + "\n")
    return path / "task.json"
