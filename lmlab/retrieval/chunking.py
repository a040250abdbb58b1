"""Split documents into passages for retrieval, keeping each chunk's source and character span
(so ``text[start:end] == chunk.text`` and citations can point back into the original file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..core.validate import check_number

TOKEN_SPANS = re.compile(r"\S+")
# a sentence ends at . ! or ? (and closing quotes/brackets) before whitespace and a non-lowercase
# character, unless the word is a common abbreviation; a blank line always ends one
SENTENCE_END = re.compile(r"(\w*)[.!?][\"')\]]*(?=\s+[^\sa-z])|\n\s*\n")
ABBREVIATIONS = frozenset("dr mr mrs ms prof st vs etc fig al eq no vol jr sr inc ltd co e g i".split())


@dataclass(frozen=True)
class Chunk:
    """A passage of ``source`` covering characters ``start:end``."""

    source: str
    start: int
    end: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.source}#{self.start}-{self.end}"


def whitespace_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of whitespace-separated tokens."""
    return [m.span() for m in TOKEN_SPANS.finditer(text)]


def chunk_by_tokens(text: str, source: str, size: int = 200, overlap: int = 40,
                    token_spans: Callable[[str], list[tuple[int, int]]] = whitespace_spans) -> list[Chunk]:
    """Windows of ``size`` tokens, each overlapping the previous by ``overlap`` tokens."""
    check_number("size", size, low=1, integer=True)
    check_number("overlap", overlap, low=0, high=size - 1, integer=True)
    spans = token_spans(text)
    chunks, step = [], size - overlap
    for first in range(0, max(len(spans) - overlap, 1), step):
        window = spans[first:first + size]
        if not window:
            break
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(source, start, end, text[start:end]))
    return chunks


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (trimmed of surrounding whitespace)."""
    spans, start = [], 0
    for m in SENTENCE_END.finditer(text):
        if m.group(1) and m.group(1).lower() in ABBREVIATIONS:
            continue
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        piece = text[s:e]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if e - trail > s + lead:
            out.append((s + lead, e - trail))
    return out


def chunk_by_sentences(text: str, source: str, max_chars: int = 1000, overlap: int = 1) -> list[Chunk]:
    """Group whole sentences into chunks of at most ``max_chars`` characters (a longer sentence is a
    chunk of its own); consecutive chunks share ``overlap`` sentences."""
    check_number("max_chars", max_chars, low=1, integer=True)
    check_number("overlap", overlap, low=0, integer=True)
    sents = sentence_spans(text)
    chunks, i = [], 0
    while i < len(sents):
        j = i + 1
        while j < len(sents) and sents[j][1] - sents[i][0] <= max_chars:
            j += 1
        start, end = sents[i][0], sents[j - 1][1]
        chunks.append(Chunk(source, start, end, text[start:end]))
        if j >= len(sents):
            break
        i = max(j - overlap, i + 1)
    return chunks
