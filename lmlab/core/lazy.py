"""Lazy package exports: a package's names imported from their submodules on first use (PEP 562).

A package whose ``__init__`` imported every submodule would make ``import lmlab.pkg.light`` pay for
``lmlab.pkg.heavy`` (torch) too; ``lmlab --help`` must not. The package keeps its public names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``exports[name]`` (a submodule name)
    when ``name`` is first looked up."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
