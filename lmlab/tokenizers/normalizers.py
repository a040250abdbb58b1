"""Normalizers: text → text before splitting (Unicode forms, lowercase, accents, BERT cleaning).

Each normalizer is described by its Hugging Face ``tokenizer.json`` object and built into a
plain function with ``build_normalizer(spec)``. ``normalize_aligned`` also says, for every
character of the output, which span of the input it came from (used for offsets).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from ..core.errors import ModelError

Normalizer = Callable[[str], str]

# Unicode White_Space (Rust char::is_whitespace), as HF tokenizers uses it
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                       "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


class _CharTable(dict):
    """A ``str.translate`` table filled on demand: ``rule(c)`` says what character c becomes
    (a string, or None to drop it), computed once per distinct character."""

    def __init__(self, rule: Callable[[str], str | None]) -> None:
        super().__init__()
        self.rule = rule

    def __missing__(self, code: int) -> str | None:
        value = self[code] = self.rule(chr(code))
        return value


_DROP_MARKS = _CharTable(lambda c: None if unicodedata.category(c) == "Mn" else c)


def strip_accents(text: str) -> str:
    """Decompose (NFD) and drop nonspacing marks (category Mn), as HF ``StripAccents``."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFD", text).translate(_DROP_MARKS)


def _bert_drops(c: str) -> bool:
    """BERT drops NUL, U+FFFD and 'other' characters (Cc, Cf, Co, Cs) except tab, newline, return."""
    return c == "\ufffd" or (c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs"))


# ASCII: \t \n \r and space → space, every other control character dropped
_ASCII_CLEAN = {i: (" " if chr(i) in "\t\n\r" else None) for i in [*range(32), 127]}


_BERT_CLEAN = _CharTable(lambda c: None if _bert_drops(c) else " " if c in WHITESPACE else c)


def bert_clean(text: str) -> str:
    """Drop control and format characters, then map whitespace to a space (in that order, as BERT)."""
    if text.isascii():
        return text.translate(_ASCII_CLEAN)
    return text.translate(_BERT_CLEAN)


_CJK_RE = re.compile("([" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _CJK_RANGES) + "])")


def pad_cjk(text: str) -> str:
    """Put spaces around every CJK ideograph."""
    return text if text.isascii() else _CJK_RE.sub(r" \1 ", text)


def bert_normalizer(clean_text: bool = True, handle_chinese_chars: bool = True,
                    strip_accents_: bool | None = None, lowercase: bool = True) -> Normalizer:
    """BERT's basic normalisation; accents are stripped when lowercasing unless told otherwise."""
    steps: list[Normalizer] = []
    if clean_text:
        steps.append(bert_clean)
    if handle_chinese_chars:
        steps.append(pad_cjk)
    if strip_accents_ or (strip_accents_ is None and lowercase):
        steps.append(strip_accents)
    if lowercase:
        steps.append(str.lower)
    return _chain(steps)


def _chain(steps: list[Normalizer]) -> Normalizer:
    if len(steps) == 1:
        return steps[0]

    def run(text: str) -> str:
        for step in steps:
            text = step(text)
        return text
    return run


def build_normalizer(spec: dict | None) -> Normalizer | None:
    """A normalizer function from its ``tokenizer.json`` object (None: no normalisation)."""
    if not spec:
        return None
    kind = spec.get("type")
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda text: unicodedata.normalize(kind, text)
    if kind == "Lowercase":
        return str.lower
    if kind == "StripAccents":
        return strip_accents
    if kind == "BertNormalizer":
        return bert_normalizer(spec.get("clean_text", True), spec.get("handle_chinese_chars", True),
                               spec.get("strip_accents"), spec.get("lowercase", True))
    if kind == "Replace":
        pattern = spec.get("pattern") or {}
        if "String" not in pattern:
            raise ModelError("Replace normalizer with a regex pattern is not supported")
        old, new = pattern["String"], spec.get("content", "")
        return lambda text: text.replace(old, new)
    if kind == "Prepend":
        prefix = spec.get("prepend", "")
        return lambda text: prefix + text if text else text
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        ws = "".join(WHITESPACE)
        return lambda text: (text.lstrip(ws) if left else text).rstrip(ws) if right else \
            (text.lstrip(ws) if left else text)
    if kind == "Sequence":
        steps = [n for n in (build_normalizer(s) for s in spec.get("normalizers", [])) if n is not None]
        return _chain(steps) if steps else None
    raise ModelError(f"normalizer {kind!r} is not supported",
                     "supported: NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, BertNormalizer, "
                     "Replace, Prepend, Strip, Sequence")


def _clusters(text: str) -> list[tuple[int, int]]:
    """Spans of a base character with the combining marks that follow it."""
    spans: list[tuple[int, int]] = []
    for i, c in enumerate(text):
        if spans and unicodedata.combining(c):
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def normalize_aligned(normalizer: Normalizer | None, text: str) -> tuple[str, list[tuple[int, int]]]:
    """The normalized text and, per output character, the input span it came from.

    Each cluster (a character and its combining marks) is normalized on its own; when that
    differs from normalizing the whole text, every output character maps to the whole input.
    """
    if normalizer is None:
        return text, [(i, i + 1) for i in range(len(text))]
    whole = normalizer(text)
    pieces, align = [], []
    for start, end in _clusters(text):
        part = normalizer(text[start:end])
        pieces.append(part)
        align.extend([(start, end)] * len(part))
    if "".join(pieces) != whole:
        return whole, [(0, len(text))] * len(whole)
    return whole, align
