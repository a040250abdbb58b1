"""Optional dependencies: import a module that needs one, or say which package to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def import_optional(module: str, package: str, feature: str) -> ModuleType:
    """Import ``module``; if that fails because ``package`` is missing, raise MissingDependencyError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if package in str(exc):
            raise MissingDependencyError(package, feature) from None
        raise
