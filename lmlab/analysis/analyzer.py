"""An analyzer turns text into index terms: tokenise, lowercase, drop stop words, stem.

Its settings are plain data (``to_dict``/``from_dict``) so a saved index remembers exactly how its
terms were made, and queries are analysed the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import ConfigError
from .stopwords import stopword_list
from .tokenize import PATTERNS, compiled_pattern

STEMMERS = ("none", "porter")


def stemmer_function(name: str) -> Callable[[str], str] | None:
    """The stemming function called ``name`` ('porter'), or None for 'none'."""
    if name == "none":
        return None
    if name == "porter":
        try:
            from .porter import stem
        except ImportError as exc:
            raise ConfigError("the Porter stemmer (lmlab.analysis.porter) is not available in this build",
                              "use stemmer='none'") from exc
        return stem
    raise ConfigError(f"stemmer = {name!r} is not supported", f"choose one of: {', '.join(STEMMERS)}")


@dataclass
class Analyzer:
    """Text → terms: ``pattern`` finds words, then lowercase, stop-word removal and stemming."""

    pattern: str = "word"
    lowercase: bool = True
    stopwords: str = "lucene"
    stemmer: str = "none"

    def __post_init__(self) -> None:
        self._regex = compiled_pattern(PATTERNS.get(self.pattern, self.pattern))
        self._stop = stopword_list(self.stopwords)
        self._stem = stemmer_function(self.stemmer)
        self._stem_cache: dict[str, str] = {}

    def __call__(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise ConfigError(f"text to analyse must be a string, got {type(text).__name__}")
        words = self._regex.findall(text.lower() if self.lowercase else text)
        stop = self._stop
        if self._stem is None:
            return [w for w in words if w not in stop]
        cache, stem = self._stem_cache, self._stem
        out = []
        for w in words:
            if w in stop:
                continue
            s = cache.get(w)
            if s is None:
                s = cache[w] = stem(w)
            out.append(s)
        return out

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "lowercase": self.lowercase, "stopwords": self.stopwords,
                "stemmer": self.stemmer}

    @classmethod
    def from_dict(cls, d: dict) -> Analyzer:
        return cls(**{k: d[k] for k in ("pattern", "lowercase", "stopwords", "stemmer") if k in d})
