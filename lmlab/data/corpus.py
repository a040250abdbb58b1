"""Streaming corpora: documents read lazily from files, directories, JSONL or memory.

A ``Corpus`` is re-iterable (each ``iter()`` reopens its source), so trainers can make
several passes without ever holding the whole text in a Python list. Problems surface as
one clear ``LmlabError``: a missing path, a binary file, bytes that are not UTF-8 (with the
line number, unless ``errors="replace"``), or a corpus with no documents at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataError, InputError
from ..core.validate import check_choice

UNITS = ("lines", "blocks", "file")
ERRORS = ("strict", "replace")
_SNIFF_BYTES = 8192


class Corpus:
    """A named, re-iterable stream of documents (strings).

    ``opener`` returns a fresh iterator of documents each time. Iterating a corpus that
    yields no document raises DataError, so an empty file never trains a silent model.
    """

    def __init__(self, name: str, opener: Callable[[], Iterable[str]], *, lines_of: Path | None = None) -> None:
        self.name = name
        self._opener = opener
        #: the UTF-8 file whose non-blank lines are the documents, when that is all the corpus is (fast readers
        #: may read its bytes directly; anything else leaves it None)
        self.lines_of = lines_of

    def __iter__(self) -> Iterator[str]:
        count = 0
        for doc in self._opener():
            count += 1
            yield doc
        if count == 0:
            raise DataError(f"corpus {self.name} has no documents",
                            "check that the file is not empty and the --format/--field match it")

    def __repr__(self) -> str:
        return f"Corpus({self.name!r})"


def _check_file(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"file not found: {path}", "check the path (and LMLAB_DATA for named data sets)")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a file", "pass a file, or use --format files for a directory")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied", "check the file's permissions")
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise DataError(f"{path} looks like a binary file (it contains NUL bytes), not text",
                        "pass a UTF-8 text file")
    return path


def _decode(raw: bytes, path: Path, lineno: int, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{lineno}: byte {exc.start + 1} of the line is not valid UTF-8",
                        "convert the file to UTF-8, or pass --errors replace to substitute U+FFFD") from None


def _iter_lines(path: Path, errors: str) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = _decode(raw, path, lineno, errors)
            if line.endswith("\n"):
                line = line[:-1]
            if line.endswith("\r"):
                line = line[:-1]
            yield lineno, line


def _documents(path: Path, unit: str, errors: str, keep_blank: bool) -> Iterator[str]:
    if unit == "lines":
        for _, line in _iter_lines(path, errors):
            if keep_blank or line.strip():
                yield line
    elif unit == "blocks":
        block: list[str] = []
        for _, line in _iter_lines(path, errors):
            if line.strip():
                block.append(line)
            elif block:
                yield "\n".join(block)
                block = []
        if block:
            yield "\n".join(block)
    else:  # whole file
        text = "\n".join(line for _, line in _iter_lines(path, errors))
        if text.strip():
            yield text


def text_file(path: str | os.PathLike, *, unit: str = "lines", errors: str = "strict",
              keep_blank: bool = False) -> Corpus:
    """Documents from a UTF-8 text file: one per line, per blank-line block, or the whole file."""
    check_choice("unit", unit, UNITS)
    check_choice("errors", errors, ERRORS)
    p = _check_file(Path(path))
    plain = unit == "lines" and not keep_blank
    return Corpus(str(p), lambda: _documents(p, unit, errors, keep_blank), lines_of=p if plain else None)


def jsonl_records(path: str | os.PathLike, limit: int | None = None) -> list[tuple[str, Any]]:
    """(where, value) for each JSON value of a JSON Lines file, ``where`` = "file:line" for messages
    about that row; blank lines skipped; at most ``limit`` values."""
    p = _check_file(Path(path))
    out: list[tuple[str, Any]] = []
    for lineno, line in _iter_lines(p, "strict"):
        if not line.strip():
            continue
        try:
            out.append((f"{p}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{lineno} is not valid JSON ({exc.msg})", "write one JSON object per line") from None
        if limit is not None and len(out) >= limit:
            break
    return out


def read_jsonl(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The JSON objects of a JSON Lines file (blank lines skipped; at most ``limit``), with one clear
    error for a line that is not a JSON object."""
    records: list[dict] = []
    for where, record in jsonl_records(path, limit):
        if not isinstance(record, dict):
            raise DataError(f"{where}: a {type(record).__name__}, not a JSON object",
                            "each line of a JSONL file must be one JSON object")
        records.append(record)
    return records


def jsonl_file(path: str | os.PathLike, field: str = "text", *, errors: str = "strict") -> Corpus:
    """Documents from the string field ``field`` of each JSON object in a JSONL file."""
    check_choice("errors", errors, ERRORS)
    p = _check_file(Path(path))

    def opener() -> Iterator[str]:
        for lineno, line in _iter_lines(p, errors):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: not valid JSON ({exc.msg})",
                                "each line of a JSONL file must be one JSON object") from None
            if not isinstance(record, dict) or field not in record:
                raise DataError(f"{p}:{lineno}: record has no field {field!r}",
                                "pass --field with the name of the text field")
            value = record[field]
            if not isinstance(value, str):
                raise DataError(f"{p}:{lineno}: field {field!r} is {type(value).__name__}, not a string")
            yield value

    return Corpus(str(p), opener)


def directory(path: str | os.PathLike, *, pattern: str = "*.txt", unit: str = "file",
              errors: str = "strict", keep_blank: bool = False) -> Corpus:
    """Documents from every file matching ``pattern`` under a directory (recursively, sorted)."""
    check_choice("unit", unit, UNITS)
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"directory not found: {root}", "check the path")
    files = sorted(f for f in root.rglob(pattern) if f.is_file())
    if not files:
        raise DataError(f"no files matching {pattern!r} under {root}", "pass --pattern to select files")
    for f in files:
        _check_file(f)

    def opener() -> Iterator[str]:
        for f in files:
            yield from _documents(f, unit, errors, keep_blank)

    return Corpus(str(root), opener)


def from_texts(texts: Iterable[str], name: str = "<memory>") -> Corpus:
    """A corpus over an in-memory sequence of documents (tests, small examples)."""
    docs = list(texts)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise ConfigError(f"document {i} of {name} is {type(d).__name__}, not a string")
    return Corpus(name, lambda: iter(docs))


def open_corpus(spec: str | os.PathLike, *, format: str = "auto", field: str = "text",
                errors: str = "strict", pattern: str = "*.txt") -> Corpus:
    """Open a corpus from a path or a name: a file, a directory, ``name:split`` of a registered
    data set (``ptb:test``), or ``embedded`` / ``embedded:train`` / ``embedded:test``.

    ``format``: auto, lines, blocks, file, jsonl or files (a directory of files).
    """
    from .datasets import dataset_corpus, embedded_corpus  # same layer; avoids an import cycle

    check_choice("format", format, ("auto", "lines", "blocks", "file", "jsonl", "files"))
    spec_str = os.fspath(spec)
    path = Path(spec_str)
    if not path.exists():
        if spec_str == "embedded" or spec_str.startswith("embedded:"):
            return embedded_corpus(spec_str.partition(":")[2] or "all")
        if ":" in spec_str and "/" not in spec_str:
            name, _, split = spec_str.partition(":")
            return dataset_corpus(name, split, errors=errors)
        raise InputError(f"file not found: {spec_str}",
                         "check the path, or name a data set as NAME:SPLIT (see `lmlab data list`)")
    if path.is_dir():
        if format not in ("auto", "files"):
            unit = format if format in UNITS else "file"
            return directory(path, pattern=pattern, unit=unit, errors=errors)
        return directory(path, pattern=pattern, errors=errors)
    if format == "jsonl" or (format == "auto" and path.suffix == ".jsonl"):
        return jsonl_file(path, field, errors=errors)
    unit = "lines" if format in ("auto", "files") else format
    return text_file(path, unit=unit, errors=errors)
