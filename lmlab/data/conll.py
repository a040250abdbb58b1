"""CoNLL column files: one token per line (``word POS chunk NER`` in CoNLL-2003), sentences
separated by blank lines, ``-DOCSTART-`` lines skipped. ``read_conll`` gives (words, tags) per
sentence for one column, named (``ner``, ``pos``, ``chunk``) or by number."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ConfigError, DataError, InputError
from .corpus import text_file

#: CoNLL-2003's columns after the word
CONLL2003_COLUMNS = {"pos": 1, "chunk": 2, "ner": 3}


def conll_path(spec: str | os.PathLike) -> Path:
    """A CoNLL file from a path or ``NAME:SPLIT`` of a registered data set (``conll2003:test``)."""
    from .datasets import dataset_file

    text = os.fspath(spec)
    if not Path(text).exists() and ":" in text and "/" not in text:
        name, _, split = text.partition(":")
        return dataset_file(name, split)
    path = Path(text)
    if not path.is_file():
        raise InputError(f"CoNLL file not found: {text}", "pass a file of 'word ... tag' lines or NAME:SPLIT "
                         "(conll2003:train|valid|test)")
    return path


def column_index(column: str | int) -> int:
    """The column number of a named CoNLL-2003 column (or a number given as such)."""
    if isinstance(column, int) or str(column).lstrip("-").isdigit():
        return int(column)
    if column not in CONLL2003_COLUMNS:
        raise ConfigError(f"unknown CoNLL column {column!r}", f"choose one of: {', '.join(CONLL2003_COLUMNS)}, "
                          "or a column number")
    return CONLL2003_COLUMNS[column]


def read_conll(spec: str | os.PathLike, column: str | int = "ner") -> list[tuple[list[str], list[str]]]:
    """(words, tags) of every sentence of a CoNLL file, the tags taken from ``column``."""
    path, index = conll_path(spec), column_index(column)
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    width = None
    for lineno, line in enumerate(text_file(path, keep_blank=True), 1):  # UTF-8 text, or one clear error
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        width = width or len(fields)
        if len(fields) != width or not -width < index < width or index == 0:
            raise DataError(f"{path}:{lineno}: {len(fields)} columns where the file has {width} "
                            f"(tag column {index})", "every token line needs the same columns: word ... tag")
        words.append(fields[0])
        tags.append(fields[index])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise DataError(f"{path} holds no sentences", "pass a CoNLL file: one 'word ... tag' line per token")
    return sentences
