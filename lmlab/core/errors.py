"""One error hierarchy for lmlab: every message says what was wrong and how to fix it.

The CLI prints ``str(error)`` as a single line and exits non-zero; library users can catch
``LmlabError`` or the matching built-in type (each subclass also derives from one).
"""

from __future__ import annotations


class LmlabError(Exception):
    """Base class: ``problem`` says what was wrong, ``fix`` what the user can do about it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} — {fix}")


class ConfigError(LmlabError, ValueError):
    """An argument, option or configuration value is invalid."""


class InputError(LmlabError, OSError):
    """A file or directory the user named is missing, unreadable or of the wrong kind."""


class DataError(LmlabError, ValueError):
    """Data could be read but is unusable (empty corpus, undecodable bytes, bad records)."""


class ModelError(LmlabError, ValueError):
    """A model, tokenizer or checkpoint is malformed or the pieces do not belong together."""


class MissingDependencyError(LmlabError, ImportError):
    """An optional package needed for this feature is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the optional package '{package}'",
                         f"install it with: pip install {package}")
