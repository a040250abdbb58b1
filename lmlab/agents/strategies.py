"""Prompting strategies as evaluation-harness strategies: the same items, answered different ways.

* ``direct`` — few-shot examples that show only the answer; multiple choice: the choices scored by
  log-likelihood after the task's prompt.
* ``cot`` — few-shot chain of thought (Wei et al. 2022): examples show a worked solution ending
  "The answer is N." (GSM8K's solutions, their ``<<…>>`` calculator notes removed); the answer is
  the number after "answer is", else the last number. Needs worked solutions in the few-shot pool.
* ``zero-shot-cot`` (Kojima et al. 2022): "Let's think step by step." then an answer-extraction
  second pass — "Therefore, the answer (arabic numerals) is" for numbers, or "Therefore, among A
  through D, the answer is" with the letters scored by log-likelihood.
* ``least-to-most`` (Zhou et al. 2023): the model first lists simpler sub-questions, then answers
  them in order, each answer added to the context, and the original question last.
* ``self-consistency`` (Wang et al. 2023): ``samples`` reasoning paths sampled at ``temperature``
  — one request with n continuations, so they share one prefill — and the majority answer.
* ``pal`` (Gao et al. 2023, "PAL: Program-aided Language Models"): the model writes a Python
  ``solution()``; ``lmlab.eval.sandbox`` runs it; what it prints is the answer.

Prompts are Jinja2 templates (``templates``) and few-shot examples come from ``fewshot`` (fixed,
random, BM25 or dense nearest). A strategy that does not apply to a task (PAL on multiple choice,
few-shot CoT without worked solutions) is refused by name.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..analysis.answers import extract_answer, normalize_number_answer, numeric_answer, same_number
from ..core.errors import ConfigError, DataError
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from ..eval.harness import score_multiple_choice
from ..eval.tasks import Task, choices_of, render, target_text
from .fewshot import ExampleSelector
from .models import Generation, LocalModel
from .templates import PromptTemplate

STRATEGIES = ("direct", "cot", "zero-shot-cot", "least-to-most", "self-consistency", "pal")
LETTERS = "ABCDEFGHIJ"
STEP_BY_STEP = "Let's think step by step."

SHOTS = PromptTemplate("{% for shot in shots %}{{ shot.query }} {{ shot.target }}\n\n{% endfor %}{{ query }}{{ cue }}",
                       "few-shot")
NUMBER_EXTRACTION = PromptTemplate("{{ reasoning_prompt }}{{ reasoning }}\nTherefore, the answer (arabic numerals) is",
                                   "answer extraction (numbers)")
LETTER_EXTRACTION = PromptTemplate("{{ reasoning_prompt }}{{ reasoning }}\nTherefore, among A through {{ last }}, "
                                   "the answer is", "answer extraction (letters)")
DECOMPOSE = PromptTemplate("{{ problem }}\nTo solve this problem, first answer these simpler questions, one per "
                           "line:\n1.", "least-to-most decomposition")
SUBQUESTIONS = PromptTemplate("{{ problem }}\n{% for q, a in solved %}Q: {{ q }}\nA: {{ a }}\n{% endfor %}"
                              "Q: {{ question }}\nA:", "least-to-most solving")
PAL_PROMPT = PromptTemplate('''Write a Python function solution() that returns the answer to the question.

Question: Olivia has $23. She bought five bagels for $3 each. How much money does she have left?
# solution in Python:
def solution():
    money_initial = 23
    bagels = 5
    bagel_cost = 3
    money_spent = bagels * bagel_cost
    money_left = money_initial - money_spent
    return money_left


Question: A library has 4 floors with 1250 books on each floor. It lends 870 books. How many books are still in the library?
# solution in Python:
def solution():
    floors = 4
    books_per_floor = 1250
    books_lent = 870
    books_total = floors * books_per_floor
    books_left = books_total - books_lent
    return books_left


Question: Sam runs 6 kilometres a day for 3 weeks. How many kilometres does he run?
# solution in Python:
def solution():
    km_per_day = 6
    days = 3 * 7
    km_total = km_per_day * days
    return km_total


Question: {{ problem }}
# solution in Python:
''', "PAL")


def worked_solution(task: Task, record: dict) -> tuple[str, str]:
    """(worked solution, answer) of a generate-task record whose answer field holds a solution before
    its answer (GSM8K's "… #### 72"); the solution is "" when there is none."""
    spec = task.spec
    text = str(record[spec.gold])
    answer = normalize_number_answer(extract_answer(text, spec.answer_regex))
    match = re.search(spec.answer_regex, text) if spec.answer_regex else None
    solution = text[:match.start()] if match else ""
    solution = re.sub(r"<<[^>]*>>", "", solution)  # GSM8K's calculator annotations
    return " ".join(solution.split()), answer


def problem_text(task: Task, record: dict) -> str:
    """The question alone: the task's prompt without a trailing answer cue ("Answer:", "A:")."""
    return re.sub(r"\s*(Answer|A)\s*:\s*$", "", render(task.spec.prompt, record)).strip()


def choice_query(task: Task, record: dict) -> tuple[str, list[str], int]:
    """A multiple-choice prompt listing the lettered choices before "Answer:", the choices, the gold index."""
    choices, gold = choices_of(task.spec, record)
    if len(choices) > len(LETTERS):
        raise DataError(f"task {task.spec.name}: an item has {len(choices)} choices, at most {len(LETTERS)} "
                        "can be lettered")
    listed = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{problem_text(task, record)}\n{listed}\nAnswer:", choices, gold


def vote(answers: Sequence[str]) -> str:
    """The most frequent valid answer (numbers compared by value); ties go to the earliest; "[invalid]"
    when no answer is valid."""
    valid = [a for a in answers if a != "[invalid]"]
    if not valid:
        return "[invalid]"
    groups: list[list[str]] = []
    for a in valid:
        for g in groups:
            if same_number(a, g[0]):
                g.append(a)
                break
        else:
            groups.append([a])
    return max(groups, key=len)[0]  # max keeps the first of equal counts


@dataclass
class Strategy:
    """One prompting strategy (see the module docstring) and its settings.

    ``shots`` few-shot examples (None: the task's own number for direct/cot, 0 for the zero-shot
    ones), chosen by ``selection``; ``samples`` and ``temperature`` for self-consistency;
    ``max_tokens`` per reasoning; ``timeout`` seconds per PAL program. ``model`` generates instead of
    the harness's model when given (any ``lmlab.agents.models`` model, e.g. an endpoint); multiple-choice
    letters are still scored by the harness's model.
    """

    name: str
    shots: int | None = None
    selection: str = "fixed"
    samples: int = 5
    temperature: float = 0.7
    max_tokens: int = 256
    seed: int = 1234
    timeout: float = 5.0
    encoder: Any = None
    model: Any = None

    def __post_init__(self) -> None:
        check_choice("strategy", self.name, STRATEGIES)
        if self.shots is not None:
            check_number("shots", self.shots, low=0, integer=True)
        check_number("samples", self.samples, low=1, integer=True)
        check_number("temperature", self.temperature, low=0.0, low_inclusive=False)
        check_number("max_tokens", self.max_tokens, low=1, integer=True)

    def config(self) -> dict:
        out = {"name": self.name, "shots": self.shots, "selection": self.selection, "max_tokens": self.max_tokens}
        if self.name == "self-consistency":
            out.update(samples=self.samples, temperature=self.temperature, seed=self.seed)
        if self.name == "pal":
            out["timeout"] = self.timeout
        return out

    # --- plumbing -----------------------------------------------------------------------------------
    def __call__(self, task: Task, runner: Any) -> tuple[dict, list[dict]]:
        kind = task.spec.type
        if kind not in ("generate", "multiple_choice"):
            raise ConfigError(f"prompting strategies apply to generate and multiple-choice tasks, not {kind}",
                              "leave --strategy out")
        if kind == "multiple_choice" and self.name in ("cot", "pal", "least-to-most"):
            hint = "use --strategy zero-shot-cot or self-consistency" if self.name == "cot" else "use another strategy"
            raise ConfigError(f"--strategy {self.name} needs a task with a numeric answer; {task.spec.name} is "
                              "multiple choice" + (" without worked solutions" if self.name == "cot" else ""), hint)
        model = self.model or LocalModel(runner.lm, runner.tokenizer, name="harness")
        method = getattr(self, f"_{kind}_{self.name.replace('-', '_')}")
        return method(task, runner, model)

    def _generate(self, model: LocalModel, requests: list[Generation], batch: int, desc: str) -> list[list[str]]:
        out: list[list[str]] = []
        starts = range(0, len(requests), batch)
        for start in progress(starts, desc=desc, unit="batch", total=len(starts)):
            out += [[r.text for r in group] for group in model.generate(requests[start:start + batch])]
        return out

    def _selector(self, task: Task, default: int) -> ExampleSelector:
        shots = default if self.shots is None else self.shots
        pool = task.fewshot_pool or task.items
        return ExampleSelector(pool, lambda r: problem_text(task, r), self.selection, shots, self.seed, self.encoder)

    def _shot_prompts(self, task: Task, target: Any, cue: str = "") -> list[str]:
        selector = self._selector(task, task.spec.num_fewshot)
        prompts = []
        for record in task.items:
            shots = [{"query": render(task.spec.prompt, s), "target": target(s)}
                     for s in selector.select(problem_text(task, record))]
            prompts.append(SHOTS.render(shots=shots, query=render(task.spec.prompt, record), cue=cue))
        return prompts

    def _cot_prompts(self, task: Task) -> list[str]:
        def target(record: dict) -> str:
            solution, answer = worked_solution(task, record)
            if not solution:
                raise ConfigError(f"few-shot CoT needs worked solutions; an example of {task.spec.name} has none",
                                  "use --strategy zero-shot-cot")
            return f"{solution} The answer is {answer}."
        return self._shot_prompts(task, target)

    def _golds(self, task: Task) -> list[str]:
        return [worked_solution(task, r)[1] for r in task.items]

    def _scored(self, task: Task, predictions: list[str], extra: list[dict]) -> tuple[dict, list[dict]]:
        golds = self._golds(task)
        hits = [float(same_number(p, g)) for p, g in zip(predictions, golds, strict=True)]
        items = [{"question": problem_text(task, r), "gold": g, "prediction": p, "exact_match": h, **e}
                 for r, g, p, h, e in zip(task.items, golds, predictions, hits, extra, strict=True)]
        return {"exact_match": hits}, items

    # --- numeric answers --------------------------------------------------------------------------
    def _generate_direct(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        prompts = self._shot_prompts(task, lambda r: worked_solution(task, r)[1])
        outs = self._generate(model, [Generation(prompt=p, max_tokens=32, stop=("\n",)) for p in prompts],
                              runner.batch_size, "direct")
        return self._scored(task, [numeric_answer(o[0], last=False) for o in outs], [{"output": o[0]} for o in outs])

    def _generate_cot(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        requests = [Generation(prompt=p, max_tokens=self.max_tokens, stop=("\n\n", "Question:"))
                    for p in self._cot_prompts(task)]
        outs = self._generate(model, requests, runner.batch_size, "chain of thought")
        return self._scored(task, [numeric_answer(o[0]) for o in outs], [{"output": o[0]} for o in outs])

    def _zero_shot_prompts(self, task: Task) -> list[str]:
        return [f"{render(task.spec.prompt, r)} {STEP_BY_STEP}" for r in task.items]

    def _extract_numbers(self, model: LocalModel, prompts: list[str], reasonings: list[str], batch: int) -> list[str]:
        requests = [Generation(prompt=NUMBER_EXTRACTION.render(reasoning_prompt=p, reasoning=" " + r.strip()),
                               max_tokens=16, stop=("\n",)) for p, r in zip(prompts, reasonings, strict=True)]
        return [numeric_answer(o[0], last=False) for o in self._generate(model, requests, batch, "answer extraction")]

    def _generate_zero_shot_cot(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        prompts = self._zero_shot_prompts(task)
        outs = self._generate(model, [Generation(prompt=p, max_tokens=self.max_tokens, stop=("\n\nQuestion:",))
                                      for p in prompts], runner.batch_size, "reasoning")
        reasonings = [o[0] for o in outs]
        predictions = self._extract_numbers(model, prompts, reasonings, runner.batch_size)
        return self._scored(task, predictions, [{"output": r} for r in reasonings])

    def _generate_self_consistency(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        few = (self.shots if self.shots is not None else task.spec.num_fewshot) > 0
        prompts = self._cot_prompts(task) if few else self._zero_shot_prompts(task)
        stop = ("\n\n", "Question:") if few else ("\n\nQuestion:",)
        requests = [Generation(prompt=p, max_tokens=self.max_tokens, stop=stop, n=self.samples,
                               temperature=self.temperature, seed=self.seed + i) for i, p in enumerate(prompts)]
        batch = max(1, runner.batch_size // self.samples)
        samples = self._generate(model, requests, batch, "sampling paths")
        if few:
            answers = [[numeric_answer(s) for s in group] for group in samples]
        else:
            flat = self._extract_numbers(model, [p for p, g in zip(prompts, samples, strict=True) for _ in g],
                                         [s for g in samples for s in g], runner.batch_size)
            answers = [flat[i * self.samples:(i + 1) * self.samples] for i in range(len(samples))]
        return self._scored(task, [vote(a) for a in answers], [{"samples": g, "answers": a}
                                                               for g, a in zip(samples, answers, strict=True)])

    def _generate_least_to_most(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        problems = [problem_text(task, r) for r in task.items]
        outs = self._generate(model, [Generation(prompt=DECOMPOSE.render(problem=p), max_tokens=96, stop=("\n\n",))
                                      for p in problems], runner.batch_size, "decomposing")
        plans = []
        for p, o in zip(problems, outs, strict=True):
            subs = [re.sub(r"^\s*\d+[.)]\s*", "", line).strip() for line in ("1." + o[0]).splitlines()]
            subs = [s for s in subs if s.endswith("?")][:3]
            final = re.findall(r"[^.!?]*\?", p)
            plans.append(subs + [final[-1].strip() if final else p])
        solved: list[list[tuple[str, str]]] = [[] for _ in problems]
        for step in range(max(len(plan) for plan in plans)):
            todo = [i for i, plan in enumerate(plans) if step < len(plan)]
            requests = [Generation(prompt=SUBQUESTIONS.render(problem=problems[i], solved=solved[i],
                                                              question=plans[i][step]), max_tokens=64, stop=("\n",))
                        for i in todo]
            for i, o in zip(todo, self._generate(model, requests, runner.batch_size, f"sub-question {step + 1}"),
                            strict=True):
                solved[i].append((plans[i][step], o[0].strip()))
        predictions = [numeric_answer(s[-1][1]) for s in solved]
        return self._scored(task, predictions, [{"subquestions": [list(qa) for qa in s]} for s in solved])

    def _generate_pal(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        from ..eval.sandbox import run_python

        questions = [re.sub(r"^(Question|Q)\s*:\s*", "", problem_text(task, r)) for r in task.items]  # one label
        requests = [Generation(prompt=PAL_PROMPT.render(problem=q), max_tokens=self.max_tokens,
                               stop=("\n\n", "Question:")) for q in questions]
        programs = [o[0] for o in self._generate(model, requests, runner.batch_size, "writing programs")]
        predictions, extra = [], []
        for program in progress(programs, desc="running programs", unit="program"):
            result = run_python(program + "\n\nprint(solution())\n", timeout=self.timeout)
            printed = result.stdout.strip().splitlines()
            predictions.append(numeric_answer(printed[-1], last=True) if result.passed and printed else "[invalid]")
            extra.append({"program": program, "status": result.status, "stdout": result.stdout[-200:]})
        return self._scored(task, predictions, extra)

    # --- multiple choice ----------------------------------------------------------------------------
    def _multiple_choice_direct(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        selector = self._selector(task, task.spec.num_fewshot)
        contexts = []
        for record in task.items:
            shots = [{"query": render(task.spec.prompt, s), "target": target_text(task.spec, s)}
                     for s in selector.select(problem_text(task, record))]
            contexts.append(SHOTS.render(shots=shots, query=render(task.spec.prompt, record), cue=""))
        return score_multiple_choice(task, runner, contexts)

    def _letter_choice(self, runner: Any, prompts: list[str], reasonings: list[list[str]],
                       n_choices: list[int]) -> list[list[int]]:
        requests, layout = [], []
        for p, group, n in zip(prompts, reasonings, n_choices, strict=True):
            for r in group:
                ctx = LETTER_EXTRACTION.render(reasoning_prompt=p, reasoning=" " + r.strip(), last=LETTERS[n - 1])
                layout.append((len(requests), n))
                requests += [(ctx, " " + LETTERS[k]) for k in range(n)]
        lls = runner.loglikelihood(requests)
        picks = [max(range(n), key=lambda k, s=start: lls[s + k]) for start, n in layout]
        out, at = [], 0
        for group in reasonings:
            out.append(picks[at:at + len(group)])
            at += len(group)
        return out

    def _multiple_choice_reasoning(self, task: Task, runner: Any, model: LocalModel, samples: int
                                   ) -> tuple[dict, list[dict]]:
        queries = [choice_query(task, r) for r in task.items]
        prompts = [f"{q} {STEP_BY_STEP}" for q, _, _ in queries]
        sampled = samples > 1
        requests = [Generation(prompt=p, max_tokens=self.max_tokens, stop=("\n\nQuestion:",), n=samples,
                               temperature=self.temperature if sampled else 0.0,
                               seed=self.seed + i if sampled else None) for i, p in enumerate(prompts)]
        reasonings = self._generate(model, requests, max(1, runner.batch_size // samples), "reasoning")
        picks = self._letter_choice(runner, prompts, reasonings, [len(c) for _, c, _ in queries])
        hits, items = [], []
        for (q, choices, gold), group, chosen in zip(queries, reasonings, picks, strict=True):
            counts = Counter(chosen)
            answer = max(chosen, key=lambda k: (counts[k], -chosen.index(k)))
            hits.append(float(answer == gold))
            items.append({"context": q, "choices": choices, "label": gold, "prediction": answer, "votes": chosen,
                          "reasoning": group if sampled else group[0], "acc": hits[-1]})
        return {"acc": hits}, items

    def _multiple_choice_zero_shot_cot(self, task: Task, runner: Any, model: LocalModel) -> tuple[dict, list[dict]]:
        return self._multiple_choice_reasoning(task, runner, model, 1)

    def _multiple_choice_self_consistency(self, task: Task, runner: Any, model: LocalModel
                                          ) -> tuple[dict, list[dict]]:
        return self._multiple_choice_reasoning(task, runner, model, self.samples)
