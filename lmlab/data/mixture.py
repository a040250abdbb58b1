"""Multitask mixtures: how many examples each task contributes, and the mixed, shuffled sample.

T5 (Raffel et al. 2020, §3.5.2) and FLAN (Wei et al. 2022; Chung et al. 2022) mix tasks by
*example-proportional mixing with a cap*: task i is drawn with rate ∝ min(n_i, K), so a huge task
cannot drown the small ones; *temperature mixing* raises those rates to the power 1/T (T = 1 is
proportional, T → ∞ uniform). Explicit rates (any positive numbers) replace the formula. The
counts of a sample of ``total`` examples are the rates' largest-remainder rounding, so a mixture
is exact and reproducible; a task asked for more examples than it has repeats them (epochs), as
T5 does for small tasks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

from ..core.errors import ConfigError, DataError
from ..core.validate import check_number

T = TypeVar("T")


def mixing_rates(sizes: Mapping[str, int], *, cap: int | None = None, temperature: float = 1.0,
                 rates: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each task's share of the mixture (sums to 1): ``min(n, cap) ** (1 / temperature)`` normalised,
    or the explicit ``rates`` normalised (every one must be positive; tasks left out are refused)."""
    if not sizes:
        raise ConfigError("a mixture needs at least one task", "name the tasks to mix")
    empty = [name for name, n in sizes.items() if n <= 0]
    if empty:
        raise DataError(f"task(s) {', '.join(empty)} have no examples", "drop them from the mixture or give them data")
    if rates is not None:
        bad = {k: v for k, v in rates.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)}
        if bad:
            raise ConfigError(f"mixing rates must be positive numbers; got {bad}",
                              "give every task a rate > 0 (drop a task instead of giving it 0)")
        unknown, missing = sorted(set(rates) - set(sizes)), sorted(set(sizes) - set(rates))
        if unknown:
            raise ConfigError(f"mixing rates name task(s) {unknown} that are not mixed", f"mix only {', '.join(sizes)}")
        if missing:
            raise ConfigError(f"mixing rates leave out task(s) {missing}", f"give one rate per task: {', '.join(sizes)}")
        raw = {k: float(rates[k]) for k in sizes}
    else:
        check_number("temperature", temperature, low=0.0, low_inclusive=False)
        if cap is not None:
            check_number("cap", cap, low=1, integer=True)
        raw = {k: float(min(n, cap) if cap is not None else n) ** (1.0 / temperature) for k, n in sizes.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def mixture_counts(rates: Mapping[str, float], total: int) -> dict[str, int]:
    """``total`` examples split by ``rates`` with largest-remainder rounding (ties to the earlier task)."""
    check_number("total", total, low=1, integer=True)
    exact = {k: r * total for k, r in rates.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(rates, key=lambda k: (-(exact[k] - counts[k]), list(rates).index(k)))
    for k in order[:total - sum(counts.values())]:
        counts[k] += 1
    return counts


def sample_mixture(tasks: Mapping[str, Sequence[T]], counts: Mapping[str, int], seed: int = 0) -> list[tuple[str, T]]:
    """(task, example) pairs: ``counts[task]`` examples of each task — a seeded draw without replacement,
    whole shuffled passes when a task is asked for more than it holds — shuffled together."""
    rng = random.Random(seed)
    out: list[tuple[str, T]] = []
    for name, examples in tasks.items():
        need = counts.get(name, 0)
        while need > 0:
            order = list(range(len(examples)))
            rng.shuffle(order)
            out += [(name, examples[i]) for i in order[:need]]
            need -= min(need, len(examples))
    rng.shuffle(out)
    return out
