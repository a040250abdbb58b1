"""The word2vec vocabulary: counts from a streamed corpus, min_count and a size cap, Huffman codes.

Words are ordered by descending count (ties keep first-seen order, as gensim does), so id 0 is
the most frequent word and "top-N vocabulary" means ids below N.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError
from ..core.progress import progress
from ..core.validate import check_number
from ..tokenizers.wordlevel import split_words

MAX_SENTENCE = 10_000  # longer documents are cut into pieces of this many words, as in the C tool


@dataclass
class Vocab:
    """Words (most frequent first) and their corpus counts."""

    words: list[str]
    counts: np.ndarray  # int64, aligned with words

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def sentences(corpus: Iterable[str]) -> Iterator[list[str]]:
    """Documents split into whitespace words; empty documents are skipped."""
    for doc in corpus:
        words = split_words(doc)
        if words:
            yield words


def build_vocab(corpus: Iterable[str], *, min_count: int = 5, max_vocab: int | None = None) -> Vocab:
    """Count the words of a streamed corpus; keep those seen ``min_count`` times, at most ``max_vocab``."""
    check_number("min_count", min_count, low=1, integer=True)
    if max_vocab is not None:
        check_number("max_vocab", max_vocab, low=1, integer=True)
    counts: Counter[str] = Counter()
    for words in progress(sentences(corpus), desc="counting words", unit="doc"):
        counts.update(words)
    kept = [(w, c) for w, c in counts.items() if c >= min_count]  # Counter keeps first-seen order
    kept.sort(key=lambda wc: -wc[1])  # stable: ties stay in first-seen order
    if max_vocab is not None:
        kept = kept[:max_vocab]
    if not kept:
        raise DataError(f"no word occurs at least min_count={min_count} times in the corpus",
                        "lower --min-count or train on more text")
    return Vocab([w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64))


def encode(corpus: Iterable[str], vocab: Vocab, max_sentence: int = MAX_SENTENCE) -> tuple[np.ndarray, np.ndarray]:
    """The corpus as one int32 id array plus sentence start offsets (length n+1); unknown words dropped.

    This is the token-shard form the training kernels read: 4 bytes a word, no Python lists kept.
    """
    index = vocab.index
    chunks: list[np.ndarray] = []
    starts = [0]
    for words in sentences(corpus):
        ids = np.fromiter((index[w] for w in words if w in index), dtype=np.int32)
        for lo in range(0, len(ids), max_sentence):
            piece = ids[lo:lo + max_sentence]
            if len(piece):
                chunks.append(piece)
                starts.append(starts[-1] + len(piece))
    if not chunks:
        raise DataError("no word of the corpus is in the vocabulary", "check the corpus and --min-count")
    return np.concatenate(chunks), np.array(starts, dtype=np.int64)


def huffman_codes(counts: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Huffman tree over ``counts`` for hierarchical softmax: per word its code bits and inner nodes.

    Inner nodes are numbered 0..V-2 (the root is V-2); ``points[w][k]`` is the node whose
    output vector decides bit ``codes[w][k]`` on the path from the root to word ``w``.
    """
    n = len(counts)
    if n < 2:
        return [[] for _ in range(n)], [[] for _ in range(n)]
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    bit = np.zeros(2 * n - 1, dtype=np.int8)
    for k in range(n - 1):
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        node = n + k
        parent[a], parent[b] = node, node
        bit[b] = 1
        heapq.heappush(heap, (c1 + c2, node))
    root = 2 * n - 2
    codes, points = [], []
    for w in range(n):
        code, path, node = [], [], w
        while node != root:
            code.append(int(bit[node]))
            node = int(parent[node])
            path.append(node - n)
        codes.append(code[::-1])
        points.append(path[::-1])
    return codes, points
