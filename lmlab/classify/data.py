"""Labelled text sets for classification: SST-2, AG News, or any ``text<TAB>label`` file."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..core.errors import ConfigError, DataError, InputError
from ..data import data_root, text_file

# name → split → (file, reader)
LABELED = {
    "sst2": {"train": "sst2/train.tsv", "dev": "sst2/dev.tsv", "test": "sst2/test_labeled.tsv"},
    "agnews": {"train": "agnews/train_subset_10k.tsv", "test": "agnews/test.csv"},
}


def read_tsv(path: str | os.PathLike, header: bool | None = None) -> tuple[list[str], list[str]]:
    """Rows ``text<TAB>label``; a first row ``sentence<TAB>label`` / ``text<TAB>label`` is a header."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}", "pass a text<TAB>label file or NAME:SPLIT (sst2:train, agnews:test)")
    texts, labels = [], []
    for lineno, line in enumerate(text_file(path, keep_blank=True), 1):
        if lineno == 1 and (header or (header is None and line.lower().split("\t")[-1] == "label")):
            continue
        if not line.strip():
            continue
        text, tab, label = line.rpartition("\t")
        if not tab:
            raise DataError(f"{path}:{lineno}: no tab between text and label", "each line must be text<TAB>label")
        texts.append(text)
        labels.append(label.strip())
    if not texts:
        raise DataError(f"{path} has no labelled rows")
    return texts, labels


def _agnews_test(path: Path) -> tuple[list[str], list[str]]:
    classes = (path.parent / "classes.txt").read_text(encoding="utf-8").split("\n")
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["description"])
            labels.append(classes[int(row["label"]) - 1])
    return texts, labels


def load_labeled(spec: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(texts, labels) from ``NAME:SPLIT`` (sst2:train|dev|test, agnews:train|test) or a TSV path.

    AG News is read as description → class name in both splits (its train file has no titles).
    """
    text = os.fspath(spec)
    if not Path(text).exists() and ":" in text and "/" not in text:
        name, _, split = text.partition(":")
        if name not in LABELED:
            raise ConfigError(f"unknown labelled data set {name!r}", f"choose one of: {', '.join(LABELED)}")
        if split not in LABELED[name]:
            raise ConfigError(f"{name} has no split {split!r}", f"choose one of: {', '.join(LABELED[name])}")
        path = data_root() / LABELED[name][split]
        if not path.exists():
            raise InputError(f"data set file not found: {path}", "set LMLAB_DATA to the shared data folder")
        if path.suffix == ".csv":
            return _agnews_test(path)
        return read_tsv(path, header=name == "sst2")
    return read_tsv(text)
