"""PNG figures: matplotlib's pyplot on its file-only backend (no display is needed), and the one check of a
figure's path."""

from __future__ import annotations

import os
from types import ModuleType

from .errors import ConfigError, MissingDependencyError


def pyplot(feature: str) -> ModuleType:
    """``matplotlib.pyplot`` with the Agg backend; MissingDependencyError naming ``feature`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", feature) from None
    return plt


def check_png(path: str | os.PathLike, what: str) -> None:
    """Refuse a figure path that is not a .png file, naming the figure (``what``)."""
    if not str(path).lower().endswith(".png"):
        raise ConfigError(f"{what} path {str(path)!r} does not end in .png", "name a .png file")
