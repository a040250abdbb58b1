"""Tree of thoughts (Yao et al. 2023, "Tree of Thoughts: Deliberate Problem Solving with Large
Language Models"): a problem is solved as a search over partial solutions — each a list of
thoughts — where the model proposes next thoughts and judges the partial solutions.

* **Proposals**: ``k`` next thoughts sampled for a state in one request (n continuations sharing
  one prefill); duplicates are merged.
* **Evaluation**: a *value* prompt — the model rates a partial solution "sure", "likely" or
  "impossible" (Yao et al.'s 20 / 1 / 0.001), summed over ``value_samples`` ratings — or a *vote*
  prompt — the model picks the most promising of the candidates, ``value_samples`` times, and a
  candidate's value is its votes — or any function of the state (e.g. an exact checker).
* **Search**: ``bfs`` keeps the ``breadth`` best states per level, to ``depth`` levels; ``dfs``
  follows the best child first, prunes children valued below ``threshold`` and backtracks, up to
  ``max_nodes`` evaluated states. ``is_solution`` stops either search early.

In-process models are held to the rating words and vote numbers by a regex constraint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.validate import check_choice, check_number
from .models import Generation
from .templates import PromptTemplate

VALUES = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
EVALUATORS = ("value", "vote")

PROPOSE = PromptTemplate("{{ problem }}\n{% if steps %}Steps so far:\n{% for s in steps %}{{ s }}\n{% endfor %}"
                         "{% endif %}Next step:", "tot propose")
VALUE = PromptTemplate("{{ problem }}\nPartial solution:\n{% for s in steps %}{{ s }}\n{% endfor %}"
                       "Can this partial solution reach a correct answer? Answer sure, likely or impossible.\n"
                       "Answer:", "tot value")
VOTE = PromptTemplate("{{ problem }}\nCandidate partial solutions:\n{% for c in candidates %}Choice {{ loop.index }}:"
                      "\n{% for s in c %}{{ s }}\n{% endfor %}{% endfor %}"
                      "Which choice is the most promising? The best choice is", "tot vote")


@dataclass
class SearchResult:
    """The best state found, whether it is a solution, and how much search it took."""

    steps: list[str]
    value: float
    solved: bool
    evaluated: int
    model_calls: int
    tree: list[dict] = field(default_factory=list)  # every evaluated state: {steps, value, depth}


@dataclass
class TreeOfThoughts:
    """The search's settings (see the module docstring). ``value_fn`` (state → value) replaces the
    model's evaluation when given."""

    model: Any
    problem: str
    is_solution: Callable[[list[str]], bool]
    k: int = 3
    breadth: int = 2
    depth: int = 3
    evaluator: str = "value"
    value_samples: int = 1
    threshold: float = 0.0
    max_nodes: int = 50
    temperature: float = 0.7
    max_tokens: int = 48
    seed: int = 0
    value_fn: Callable[[list[str]], float] | None = None
    calls: int = 0
    tree: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("k", "breadth", "depth", "value_samples", "max_nodes", "max_tokens"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_choice("evaluator", self.evaluator, EVALUATORS)

    def _generate(self, requests: list[Generation]) -> list[list[str]]:
        self.calls += len(requests)
        return [[r.text for r in group] for group in self.model.generate(requests)]

    def propose(self, states: Sequence[list[str]]) -> list[list[str]]:
        """Distinct next thoughts for each state."""
        requests = [Generation(prompt=PROPOSE.render(problem=self.problem, steps=s), max_tokens=self.max_tokens,
                               temperature=self.temperature, n=self.k, seed=self.seed + self.calls + i,
                               stop=("\n",)) for i, s in enumerate(states)]
        out = []
        for group in self._generate(requests):
            seen: list[str] = []
            for text in group:
                thought = text.strip()
                if thought and thought not in seen:
                    seen.append(thought)
            out.append(seen)
        return out

    def evaluate(self, candidates: Sequence[list[str]]) -> list[float]:
        """A value per candidate state (value prompts, a vote, or ``value_fn``)."""
        if not candidates:
            return []
        if self.value_fn is not None:
            return [float(self.value_fn(list(c))) for c in candidates]
        constrains = getattr(self.model, "constrains", False)
        sampled = self.value_samples > 1
        settings = {"n": self.value_samples, "temperature": self.temperature if sampled else 0.0,
                    "seed": self.seed if sampled else None}
        if self.evaluator == "value":
            requests = [Generation(prompt=VALUE.render(problem=self.problem, steps=c), max_tokens=4,
                                   constraint=("regex", " ?(sure|likely|impossible)") if constrains else None,
                                   stop=("\n",), **settings) for c in candidates]
            return [sum(VALUES.get(_first_word(t), 0.0) for t in group) for group in self._generate(requests)]
        request = Generation(prompt=VOTE.render(problem=self.problem, candidates=list(candidates)), max_tokens=4,
                             constraint=("regex", f" ?[1-{min(len(candidates), 9)}]") if constrains else None,
                             stop=("\n",), **settings)
        votes = [0.0] * len(candidates)
        for text in self._generate([request])[0]:
            m = re.search(r"\d+", text)
            if m and 1 <= int(m.group(0)) <= len(candidates):
                votes[int(m.group(0)) - 1] += 1.0
        return votes

    def _record(self, states: Sequence[list[str]], values: Sequence[float], depth: int) -> None:
        self.tree += [{"steps": list(s), "value": v, "depth": depth} for s, v in zip(states, values, strict=True)]

    def _result(self, steps: list[str], value: float) -> SearchResult:
        return SearchResult(steps, value, self.is_solution(steps), len(self.tree), self.calls, self.tree)

    def bfs(self) -> SearchResult:
        """Breadth-first: keep the ``breadth`` best states of each level."""
        frontier: list[tuple[list[str], float]] = [([], 0.0)]
        for level in range(1, self.depth + 1):
            children = [s + [t] for (s, _), thoughts in zip(frontier, self.propose([s for s, _ in frontier]),
                                                            strict=True) for t in thoughts]
            values = self.evaluate(children)
            self._record(children, values, level)
            kept = [(c, v) for c, v in zip(children, values, strict=True) if v >= self.threshold]
            if not kept:
                break
            frontier = sorted(kept, key=lambda cv: -cv[1])[:self.breadth]
            solved = [cv for cv in frontier if self.is_solution(cv[0])]
            if solved:
                return self._result(*solved[0])
        return self._result(*max(frontier, key=lambda cv: cv[1]))

    def dfs(self) -> SearchResult:
        """Depth-first: best child first, prune below ``threshold``, backtrack; at most ``max_nodes``."""
        best: list[tuple[list[str], float]] = [([], 0.0)]

        def visit(state: list[str], level: int) -> list[str] | None:
            if self.is_solution(state):
                return state
            if level == self.depth or len(self.tree) >= self.max_nodes:
                return None
            children = [state + [t] for t in self.propose([state])[0]]
            values = self.evaluate(children)
            self._record(children, values, level + 1)
            for child, value in sorted(zip(children, values, strict=True), key=lambda cv: -cv[1]):
                if value < self.threshold:
                    break  # sorted: the rest are pruned too
                if value > best[0][1]:
                    best[0] = (child, value)
                found = visit(child, level + 1)
                if found is not None:
                    best[0] = (found, value)
                    return found
            return None

        found = visit([], 0)
        if found is not None:
            return self._result(found, best[0][1])
        return self._result(*best[0])

    def search(self, method: str = "bfs") -> SearchResult:
        check_choice("search", method, ("bfs", "dfs"))
        return self.bfs() if method == "bfs" else self.dfs()


def _first_word(text: str) -> str:
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""
