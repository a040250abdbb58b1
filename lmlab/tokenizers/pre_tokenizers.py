"""Pre-tokenizers: cut normalized text into pieces the model encodes one at a time.

A pre-tokenizer is a ``split`` (text → character spans of the pieces) and an optional
``transform`` that rewrites each piece into the model's alphabet (GPT-2's byte↔unicode
table, SentencePiece's ``▁`` for spaces). Transforms are character-local, which is what
lets offsets map tokens back to the input. Built from ``tokenizer.json`` objects by
``build_pre_tokenizer``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import regex

from ..core.errors import ModelError
from .normalizers import WHITESPACE

Spans = list[tuple[int, int]]

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
METASPACE = "\u2581"
# GPT2_PATTERN restricted to ASCII text, for the stdlib engine (about 2.5x faster on ASCII lines)
_ASCII_WS = r"\t\n\x0b\x0c\r "
_GPT2_ASCII = re.compile(rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_ASCII_WS}A-Za-z0-9]+"""
                         rf"""|[{_ASCII_WS}]+(?![^{_ASCII_WS}])|[{_ASCII_WS}]+""")

_WS_CLASS = "".join(f"\\u{ord(c):04x}" for c in sorted(WHITESPACE))
_PUNCT_CLASS = r"\p{P}!-/:-@\[-`{-~"
_BERT_RE = regex.compile(f"[^{_WS_CLASS}{_PUNCT_CLASS}]+|[{_PUNCT_CLASS}]")
# the same on ASCII text (\p{P} adds nothing there), for the stdlib engine (about 3x faster)
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
_BERT_ASCII = re.compile(f"[^{_ASCII_WS}{_ASCII_PUNCT}]+|[{_ASCII_PUNCT}]")
_WHITESPACE_RE = regex.compile(r"\w+|[^\w\s]+")
_WHITESPACE_SPLIT_RE = regex.compile(f"[^{_WS_CLASS}]+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: every byte ↦ a printable character, so any byte string is a str."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
# a latin-1 decoded byte string → the byte-level alphabet in one str.translate call
_BYTE_TRANSLATION = {b: c for b, c in BYTE_TO_CHAR.items()}


def to_byte_level(piece: str) -> str:
    """A piece of text as GPT-2 byte-level characters (one per UTF-8 byte)."""
    return piece.encode("utf-8").decode("latin-1").translate(_BYTE_TRANSLATION)


@dataclass(frozen=True)
class PreTokenizer:
    """Cut text into piece spans; optionally rewrite each piece (``first``: the text's first piece).

    ``findall``, where given, returns the same pieces as strings faster than ``split``.
    """

    split: Callable[[str], Spans]
    transform: Callable[[str, bool], str] | None = None
    findall: Callable[[str], list[str]] | None = None

    def pieces(self, text: str) -> list[str]:
        if self.findall is not None:
            return self.findall(text)
        return [text[s:e] for s, e in self.split(text)]


def regex_spans(pattern: regex.Pattern, behavior: str = "Isolated", invert: bool = False) -> Callable[[str], Spans]:
    """A split by a regex with one of HF's delimiter behaviours."""
    def split(text: str) -> Spans:
        marks: list[tuple[int, int, bool]] = []
        prev = 0
        for m in pattern.finditer(text):
            s, e = m.span()
            if s == e:
                continue
            if prev != s:
                marks.append((prev, s, invert))
            marks.append((s, e, not invert))
            prev = e
        if prev != len(text):
            marks.append((prev, len(text), invert))
        return _apply_behavior(marks, behavior)
    return split


def _apply_behavior(marks: list[tuple[int, int, bool]], behavior: str) -> Spans:
    if behavior == "Isolated":
        return [(s, e) for s, e, _ in marks]
    if behavior == "Removed":
        return [(s, e) for s, e, is_match in marks if not is_match]
    out: list[list[int]] = []
    if behavior == "MergedWithPrevious":
        previous_match = False
        for s, e, is_match in marks:
            if is_match and not previous_match and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            previous_match = is_match
        return [(s, e) for s, e in out]
    if behavior == "MergedWithNext":
        previous_match = False
        for s, e, is_match in reversed(marks):
            if is_match and not previous_match and out:
                out[-1][0] = s
            else:
                out.append([s, e])
            previous_match = is_match
        return [(s, e) for s, e in reversed(out)]
    if behavior == "Contiguous":
        previous_match = False
        for s, e, is_match in marks:
            if is_match and previous_match and out:
                out[-1][1] = e
            else:
                out.append([s, e])
            previous_match = is_match
        return [(s, e) for s, e in out]
    raise ModelError(f"split behavior {behavior!r} is not supported")


def byte_level(add_prefix_space: bool = False, use_regex: bool = True,
               pattern: str = GPT2_PATTERN) -> PreTokenizer:
    """GPT-2 byte-level: split by its regex, then spell each piece's UTF-8 bytes as characters."""
    compiled = regex.compile(pattern)
    split = regex_spans(compiled) if use_regex else _whole
    findall = None
    if use_regex and pattern == GPT2_PATTERN:  # its alternatives cover every character: pieces = matches
        def findall(text: str) -> list[str]:
            return _GPT2_ASCII.findall(text) if text.isascii() else compiled.findall(text)

    def transform(piece: str, first: bool) -> str:
        if first and add_prefix_space and not piece.startswith(" "):
            piece = " " + piece
        return to_byte_level(piece)
    return PreTokenizer(split, transform, findall)


def metaspace(replacement: str = METASPACE, prepend_scheme: str = "always", split: bool = True) -> PreTokenizer:
    """SentencePiece-style: spaces become ``▁``, one is prepended, pieces start at each ``▁``."""
    def transform(piece: str, first: bool) -> str:
        piece = piece.replace(" ", replacement)
        if first and prepend_scheme in ("always", "first") and not piece.startswith(replacement):
            piece = replacement + piece
        return piece
    # splitting on spaces and ▁ before the replacement = splitting on ▁ after it (as HF does)
    if not split:
        return PreTokenizer(_whole, transform)
    marks = f"[ {re.escape(replacement)}]"
    cut = regex_spans(regex.compile(marks), "MergedWithNext")
    # MergedWithNext as one regex: a mark with the non-marks after it, or a run before the first mark
    pieces = re.compile(f"{marks}[^ {re.escape(replacement)}]*|[^ {re.escape(replacement)}]+")
    return PreTokenizer(cut, transform, pieces.findall)


def _bert_pieces(text: str) -> list[str]:
    return _BERT_ASCII.findall(text) if text.isascii() else _BERT_RE.findall(text)


def _whole(text: str) -> Spans:
    return [(0, len(text))] if text else []


def sequence(parts: list[PreTokenizer]) -> PreTokenizer:
    """Apply pre-tokenizers in turn, each inside the pieces of the previous one."""
    def split(text: str) -> Spans:
        spans = [(0, len(text))] if text else []
        for part in parts:
            spans = [(s + a, s + b) for s, e in spans for a, b in part.split(text[s:e])]
        return spans
    transforms = [p.transform for p in parts if p.transform is not None]

    def transform(piece: str, first: bool) -> str:
        for t in transforms:
            piece = t(piece, first)
        return piece
    return PreTokenizer(split, transform if transforms else None)


def build_pre_tokenizer(spec: dict | None) -> PreTokenizer | None:
    """A pre-tokenizer from its ``tokenizer.json`` object (None: the whole text is one piece)."""
    if not spec:
        return None
    kind = spec.get("type")
    if kind == "ByteLevel":
        return byte_level(spec.get("add_prefix_space", False), spec.get("use_regex", True))
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme") or ("always" if spec.get("add_prefix_space", True) else "never")
        return metaspace(spec.get("replacement", METASPACE), scheme, spec.get("split", True))
    # keeping only the (non-empty) matches of a pattern: pieces = findall
    if kind == "BertPreTokenizer":
        return PreTokenizer(regex_spans(_BERT_RE, "Removed", invert=True), findall=_bert_pieces)
    if kind == "Whitespace":
        return PreTokenizer(regex_spans(_WHITESPACE_RE, "Removed", invert=True), findall=_WHITESPACE_RE.findall)
    if kind == "WhitespaceSplit":
        return PreTokenizer(regex_spans(_WHITESPACE_SPLIT_RE, "Removed", invert=True),
                            findall=_WHITESPACE_SPLIT_RE.findall)
    if kind == "Punctuation":
        return PreTokenizer(regex_spans(regex.compile(f"[{_PUNCT_CLASS}]"), spec.get("behavior", "Isolated")))
    if kind == "Digits":
        digit = r"\p{N}" if spec.get("individual_digits") else r"\p{N}+"
        return PreTokenizer(regex_spans(regex.compile(digit), "Isolated"))
    if kind == "Split":
        pattern = spec.get("pattern") or {}
        source = pattern["Regex"] if "Regex" in pattern else regex.escape(pattern.get("String", ""))
        return PreTokenizer(regex_spans(regex.compile(source), spec.get("behavior", "Isolated"),
                                        spec.get("invert", False)))
    if kind == "Sequence":
        return sequence([p for p in (build_pre_tokenizer(s) for s in spec.get("pretokenizers", []))
                         if p is not None])
    raise ModelError(f"pre-tokenizer {kind!r} is not supported",
                     "supported: ByteLevel, Metaspace, BertPreTokenizer, Whitespace, WhitespaceSplit, "
                     "Punctuation, Digits, Split, Sequence")
