"""Word tokenisation for retrieval: a regular expression finds the words, lowercasing folds case."""

from __future__ import annotations

import re
from functools import lru_cache

from ..core.errors import ConfigError

# Unicode letters/digits runs; apostrophes and dots inside a word are split (Lucene's classic habit).
WORD_PATTERN = r"\w+"
# scikit-learn's and bm25s's default: words of two or more characters.
SKLEARN_PATTERN = r"(?u)\b\w\w+\b"
PATTERNS = {"word": WORD_PATTERN, "sklearn": SKLEARN_PATTERN}


@lru_cache(maxsize=32)
def compiled_pattern(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"token pattern {pattern!r} is not a valid regular expression ({exc})",
                          f"use one of {', '.join(PATTERNS)} or a valid regex") from exc


def word_tokens(text: str, pattern: str = WORD_PATTERN, lowercase: bool = True) -> list[str]:
    """The words of ``text`` (matches of ``pattern``), lowercased unless told not to."""
    if lowercase:
        text = text.lower()
    return compiled_pattern(PATTERNS.get(pattern, pattern)).findall(text)
