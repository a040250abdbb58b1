"""Named data sets (found under ``LMLAB_DATA``) and the embedded default corpus.

The data directory is ``$LMLAB_DATA`` when set, else ``../shared/data`` beside the
repository, else ``../shared/data`` from the working directory. Library code never
hard-codes it beyond this default; tests and benchmarks pass it in via the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError, InputError
from ..core.registry import Registry
from .corpus import Corpus, from_texts, jsonl_file, text_file


@dataclass(frozen=True)
class DatasetInfo:
    """A data set folder: its splits (split → file relative to the folder) and how to read them."""

    name: str
    folder: str
    description: str
    splits: dict[str, str] = field(default_factory=dict)
    unit: str = "lines"  # how a split file is read as a corpus: lines, blocks, file or jsonl
    field: str = "text"  # the text field for jsonl splits

    def path(self, root: Path | None = None) -> Path:
        return (root or data_root()) / self.folder


DATASETS: Registry[DatasetInfo] = Registry("data set")


def _add(info: DatasetInfo) -> None:
    DATASETS.register(info.name, info)


_add(DatasetInfo("ptb", "ptb", "Penn Treebank, Mikolov LM version (10k vocab, <unk>)",
                 {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}))
_add(DatasetInfo("wikitext-2", "wikitext-2", "WikiText-2 v1, tokenized",
                 {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}))
_add(DatasetInfo("tinyshakespeare", "tinyshakespeare", "char-rnn tiny Shakespeare (1.1M chars)",
                 {"all": "input.txt"}, unit="file"))
_add(DatasetInfo("sst2", "sst2", "GLUE SST-2 sentiment (TSV)",
                 {"train": "train.tsv", "dev": "dev.tsv", "test": "test_labeled.tsv"}, unit="tsv"))
_add(DatasetInfo("agnews", "agnews", "AG News 4-class topics (train is a 10k subset)",
                 {"train": "train_subset_10k.tsv", "test": "test.csv"}, unit="table"))
_add(DatasetInfo("scifact", "scifact", "BEIR SciFact retrieval (corpus, queries, qrels)",
                 {"corpus": "corpus.jsonl", "queries": "queries.jsonl"}, unit="jsonl"))
_add(DatasetInfo("multi30k", "multi30k", "Multi30k task 1 English-German pairs",
                 {"train.en": "train.en", "train.de": "train.de", "val.en": "val.en",
                  "val.de": "val.de", "test.en": "test_2016_flickr.en", "test.de": "test_2016_flickr.de"}))
_add(DatasetInfo("conll2003", "conll2003", "CoNLL-2003 English NER (BIO)",
                 {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}, unit="table"))
_add(DatasetInfo("wordsim", "wordsim", "WordSim-353, SimLex-999, Google analogies, Lee corpus",
                 {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt",
                  "analogies": "questions-words.txt"}, unit="table"))
_add(DatasetInfo("instructions", "instructions", "Alpaca 5k sample + Self-Instruct seed tasks",
                 {"alpaca": "alpaca_5000.jsonl", "seed": "self_instruct_seed_tasks.jsonl"},
                 unit="jsonl", field="instruction"))
_add(DatasetInfo("preferences", "preferences", "Anthropic HH-RLHF harmless-base test pairs",
                 {"test": "hh_rlhf_harmless_base_test.jsonl"}, unit="jsonl", field="chosen"))
_add(DatasetInfo("gsm8k", "gsm8k", "GSM8K grade-school maths",
                 {"train": "train.jsonl", "test": "test.jsonl"}, unit="jsonl", field="question"))
_add(DatasetInfo("arc", "arc", "ARC-Easy and ARC-Challenge multiple choice",
                 {f"{s}-{p}": f"ARC-{s.capitalize()}-{p}.jsonl" for s in ("easy", "challenge")
                  for p in ("train", "validation", "test")}, unit="jsonl", field="question"))


def data_root() -> Path:
    """The data directory: $LMLAB_DATA, else ../shared/data beside the repository or the cwd."""
    env = os.environ.get("LMLAB_DATA")
    if env:
        return Path(env)
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if beside_repo.is_dir():
        return beside_repo
    return Path.cwd().parent / "shared" / "data"


def dataset_file(name: str, split: str) -> Path:
    """The path of one split of a registered data set, with a clear error when it is absent."""
    info = DATASETS.get(name)
    if split not in info.splits:
        raise ConfigError(f"data set {name!r} has no split {split!r}",
                          f"choose one of: {', '.join(info.splits)}")
    path = info.path() / info.splits[split]
    if not path.exists():
        raise InputError(f"data set file not found: {path}",
                         "set LMLAB_DATA to the folder that holds the shared data sets")
    return path


def dataset_corpus(name: str, split: str, *, errors: str = "strict") -> Corpus:
    """A registered data set split as a corpus (text splits only)."""
    info = DATASETS.get(name)
    path = dataset_file(name, split)
    if info.unit == "jsonl":
        return jsonl_file(path, info.field, errors=errors)
    if info.unit in ("lines", "blocks", "file"):
        return text_file(path, unit=info.unit, errors=errors)
    raise ConfigError(f"data set {name!r} is tabular ({info.unit}), not a plain text corpus",
                      f"read {path} with the task's own loader")


def list_datasets() -> list[dict]:
    """Every registered data set with whether it is present under the data root."""
    root = data_root()
    rows = []
    for name, info in DATASETS.items():
        folder = info.path(root)
        rows.append({"name": name, "present": folder.is_dir(), "path": str(folder),
                     "splits": list(info.splits), "description": info.description})
    return rows


EMBEDDED_SPLITS = ("all", "train", "test")


def embedded_documents() -> list[str]:
    """Paragraphs of the standard library's ``pydoc_data.topics`` (≈0.5 MB of English), in a fixed order."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    for key in sorted(topics):
        block: list[str] = []
        for line in topics[key].splitlines():
            if line.strip():
                block.append(line.rstrip())
            elif block:
                docs.append("\n".join(block))
                block = []
        if block:
            docs.append("\n".join(block))
    return docs


def embedded_corpus(split: str = "all") -> Corpus:
    """The embedded default corpus; ``train`` is the first 90 % of its paragraphs, ``test`` the rest."""
    if split not in EMBEDDED_SPLITS:
        raise ConfigError(f"the embedded corpus has no split {split!r}",
                          f"choose one of: {', '.join(EMBEDDED_SPLITS)}")
    docs = embedded_documents()
    cut = int(len(docs) * 0.9)
    chosen = {"all": docs, "train": docs[:cut], "test": docs[cut:]}[split]
    return from_texts(chosen, name=f"embedded:{split}")
