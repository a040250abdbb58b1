"""Functional correctness: the unbiased pass@k estimator and HumanEval-style checking.

With n samples per problem of which c pass, pass@k = 1 − C(n−c, k) / C(n, k) (Chen et al.,
2021), the probability that at least one of k samples drawn without replacement passes;
it is computed as a product to stay exact for large n. A sample is checked by running
``prompt + completion + test`` in the sandbox, then ``check(entry_point)``: it passes only if
that call returns (the sandbox's supervisor sees it), not on the exit code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from ..core.errors import DataError
from ..core.progress import progress
from ..core.validate import check_number
from .sandbox import ExecutionResult, run_python


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct."""
    check_number("n", n, low=1, integer=True)
    check_number("c", c, low=0, high=n, integer=True)
    check_number("k", k, low=1, high=n, integer=True)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def humaneval_program(problem: dict, completion: str) -> tuple[str, str]:
    """(program, check call) that test one completion of a HumanEval-format problem."""
    check = f"check({problem['entry_point']})\n" if problem.get("entry_point") else ""
    return problem.get("prompt", "") + completion + "\n\n" + problem["test"] + "\n", check


def evaluate_samples(samples: Iterable[dict], problems: dict[str, dict], ks: Sequence[int] = (1, 10, 100), *,
                     timeout: float = 5.0, memory_mb: int = 512) -> dict:
    """Run every sample ({task_id, completion}) against its problem; pass@k averaged over problems.

    A k is reported only when every problem has at least k samples.
    """
    outcomes: dict[str, list[ExecutionResult]] = defaultdict(list)
    for sample in progress(list(samples), desc="executing", unit="sample"):
        task = sample.get("task_id")
        if task not in problems:
            raise DataError(f"sample for unknown task {task!r}", "every sample's task_id must name a problem")
        program, check = humaneval_program(problems[task], sample.get("completion", ""))
        outcomes[task].append(run_python(program, check=check, timeout=timeout, memory_mb=memory_mb))
    if not outcomes:
        raise DataError("no samples to evaluate")
    counts = {t: (len(r), sum(x.passed for x in r)) for t, r in outcomes.items()}
    result: dict = {"problems": len(counts), "samples": sum(n for n, _ in counts.values())}
    for k in ks:
        if all(n >= k for n, _ in counts.values()):
            result[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in counts.values()]))
    statuses: dict[str, int] = defaultdict(int)
    for runs in outcomes.values():
        for r in runs:
            statuses[r.status] += 1
    result["statuses"] = dict(statuses)
    result["per_task"] = {t: {"n": n, "correct": c} for t, (n, c) in counts.items()}
    return result
