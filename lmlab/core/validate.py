"""Argument validation in the scikit-learn manner: check early, name the argument, say the fix."""

from __future__ import annotations

import math

from .errors import ConfigError


def check_number(name: str, value: float, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True,
                 integer: bool = False) -> float:
    """Return ``value`` if it is a finite number within the bounds, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        left = "" if low is None else f"{low} {'<=' if low_inclusive else '<'} "
        right = "" if high is None else f" {'<=' if high_inclusive else '<'} {high}"
        raise ConfigError(f"{name} = {value!r} is out of range", f"it must satisfy {left}{name}{right}")
    return value


def check_choice(name: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    if value not in choices:
        raise ConfigError(f"{name} = {value!r} is not supported", f"choose one of: {', '.join(choices)}")
    return value


def check_keys(what: str, given, known) -> None:
    """Raise ConfigError naming any key of ``given`` not in ``known`` (and listing the known ones)."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"unknown {what}: {', '.join(unknown)}", f"known: {', '.join(sorted(known))}")
