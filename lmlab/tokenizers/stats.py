"""How a tokenizer treats a corpus: tokens per byte and per word, ``<unk>`` rate, round-trip exactness."""

from __future__ import annotations

from collections.abc import Iterable

from ..core.progress import progress
from .base import Tokenizer
from .wordlevel import split_words


def tokenizer_stats(tokenizer: Tokenizer, texts: Iterable[str]) -> dict:
    """Corpus statistics of ``tokenizer``: fewer tokens per byte means a better compression;
    ``roundtrip`` is the fraction of documents that decode back to exactly the input."""
    docs = tokens = n_bytes = words = unks = exact = 0
    unk = tokenizer.unk_id
    for text in progress(texts, desc="tokenizing", unit="doc"):
        ids = tokenizer.encode(text)
        docs += 1
        tokens += len(ids)
        n_bytes += len(text.encode("utf-8"))
        words += len(split_words(text))
        if unk is not None:
            unks += ids.count(unk)
        exact += tokenizer.decode(ids) == text
    return {"vocab_size": tokenizer.vocab_size, "documents": docs, "tokens": tokens, "bytes": n_bytes,
            "words": words, "tokens_per_byte": tokens / n_bytes if n_bytes else 0.0,
            "tokens_per_word": tokens / words if words else 0.0, "unk_rate": unks / tokens if tokens else 0.0,
            "roundtrip": exact / docs if docs else 1.0}
