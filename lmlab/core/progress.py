"""Progress bars for long work: shown on a terminal, silent in pipes, CI and under ``--quiet``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar in this process."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    """True when progress bars are silenced, explicitly or because stderr is not a terminal."""
    return _quiet or not sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", unit_scale: bool = False, leave: bool = False) -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a progress bar (or return a manual bar when ``iterable`` is None): a notebook
    widget inside Jupyter, text elsewhere (``tqdm.auto``'s choice, without its import of asyncio and IPython
    on every start of the command line)."""
    if "ipykernel" in sys.modules:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale,
                leave=leave, disable=is_quiet(), dynamic_ncols=True)
