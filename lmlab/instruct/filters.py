"""The filters Self-Instruct keeps a generated instruction through (Wang et al. 2022, §2.3).

An instruction is kept when it passes the paper's heuristics — 4 to 150 words; none of the words
a text-only model cannot act on (image, graph, picture, file, map, draw, plot, go to); not the
"Write a program" rewrites the paper found the model adds to existing tasks; not starting with
punctuation or a non-ASCII character — and when its ROUGE-L F-measure against every instruction
already in the pool (seeds and kept ones) is below 0.7. ROUGE-L is lmlab's ``rouge-score``
reimplementation (``lmlab.eval.rouge``), on its tokens (lowercase alphanumeric runs, no stemming).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core.validate import check_number
from ..eval.rouge import rouge_l, rouge_tokenize

BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_BLACKLIST = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
MIN_WORDS, MAX_WORDS = 4, 150
NOVELTY_THRESHOLD = 0.7


def heuristic_reason(instruction: str, *, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str | None:
    """Why the paper's heuristics reject ``instruction`` ('too_short', 'too_long', 'unsuitable_keyword',
    'write_a_program', 'starts_with_punctuation', 'non_english'), or None when it passes."""
    text = instruction.strip()
    words = len(text.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if _BLACKLIST.search(text):
        return "unsuitable_keyword"
    if text.startswith("Write a program"):
        return "write_a_program"
    if text[0] in string.punctuation:
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "non_english"
    return None


@dataclass
class NoveltyPool:
    """Instructions kept so far, tokenised once; ``nearest`` is the ROUGE-L F-measure to the closest one."""

    threshold: float = NOVELTY_THRESHOLD
    texts: list[str] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_number("novelty threshold", self.threshold, low=0.0, high=1.0)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.tokens.append(rouge_tokenize(text))

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    def nearest(self, text: str) -> tuple[float, str | None]:
        """(highest ROUGE-L F-measure against the pool, the instruction that reaches it)."""
        mine = rouge_tokenize(text)
        best, match = 0.0, None
        for other, tokens in zip(self.texts, self.tokens, strict=True):
            if best and 2 * min(len(tokens), len(mine)) / (len(tokens) + len(mine)) <= best:
                continue  # an LCS's F-measure is at most 2·min(m, n)/(m + n): this one cannot beat the best
            score = rouge_l(tokens, mine).fmeasure
            if score > best:
                best, match = score, other
        return best, match

    def is_novel(self, score: float) -> bool:
        return score < self.threshold
