"""lmlab.data: streaming corpora, the named data sets and the embedded default corpus."""

from .corpus import Corpus, directory, from_texts, jsonl_file, open_corpus, text_file
from .datasets import (
    DATASETS,
    DatasetInfo,
    data_root,
    dataset_corpus,
    dataset_file,
    embedded_corpus,
    list_datasets,
)

__all__ = [
    "DATASETS", "Corpus", "DatasetInfo", "data_root", "dataset_corpus", "dataset_file",
    "directory", "embedded_corpus", "from_texts", "jsonl_file", "list_datasets", "open_corpus",
    "text_file",
]
