"""Word vectors: lookup, cosine neighbours, analogies, and the word2vec text/binary file formats.

The formats are the C tool's: a header line ``<count> <dim>``, then per word either
``word v1 … vd`` (text) or ``word<space>`` followed by d little-endian float32s (binary,
with an optional newline after each vector). gensim's ``KeyedVectors.load_word2vec_format``
reads what ``save_word2vec`` writes, and ``load_word2vec`` reads gensim's files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError, InputError
from ..core.io import atomic_write
from ..core.validate import check_number

ANALOGY_METHODS = ("3cosadd", "3cosmul")


class WordVectors:
    """A vocabulary (most frequent first, when known) and one float32 vector per word."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray, counts: np.ndarray | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise DataError(f"{len(words)} words but vectors of shape {tuple(vectors.shape)}",
                            "pass one row per word")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise DataError("the vocabulary has duplicate words")
        self.vectors = vectors
        self.counts = counts
        self._unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self._id(word)]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def unit(self) -> np.ndarray:
        """Rows scaled to unit length (zero rows stay zero)."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.where(norms == 0, 1, norms)
        return self._unit

    def _id(self, word: str) -> int:
        try:
            return self.index[word]
        except KeyError:
            raise ConfigError(f"word {word!r} is not in the vocabulary ({len(self)} words)",
                              "check the spelling and case, or train with a lower min_count") from None

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        return float(self.unit[self._id(a)] @ self.unit[self._id(b)])

    def most_similar(self, positive: Sequence[str] | str = (), negative: Sequence[str] = (), topn: int = 10,
                     restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """Nearest words by cosine to the mean of unit ``positive`` minus ``negative`` vectors
        (3CosAdd for an analogy); the query words themselves are left out."""
        if isinstance(positive, str):
            positive = [positive]
        if not positive and not negative:
            raise ConfigError("most_similar needs at least one word")
        query = np.zeros(self.dim, dtype=np.float64)
        for w in positive:
            query += self.unit[self._id(w)]
        for w in negative:
            query -= self.unit[self._id(w)]
        query /= np.linalg.norm(query) or 1.0
        scores = self.unit[:restrict_vocab] @ query.astype(np.float32)
        return self._top(scores, set(positive) | set(negative), topn)

    def most_similar_cosmul(self, positive: Sequence[str], negative: Sequence[str] = (), topn: int = 10,
                            restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """3CosMul (Levy & Goldberg, 2014): Π cos'(x, pos) / (Π cos'(x, neg) + ε), cos' = (cos + 1) / 2."""
        unit = self.unit[:restrict_vocab]
        pos = [(1 + unit @ self.unit[self._id(w)]) / 2 for w in positive]
        neg = [(1 + unit @ self.unit[self._id(w)]) / 2 for w in negative]
        scores = np.prod(pos, axis=0) / (np.prod(neg, axis=0) + 1e-6) if neg else np.prod(pos, axis=0)
        return self._top(scores, set(positive) | set(negative), topn)

    def analogy(self, a: str, b: str, c: str, method: str = "3cosadd", topn: int = 1,
                restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to …? (king − man + woman with a=man, b=king, c=woman)."""
        if method not in ANALOGY_METHODS:
            raise ConfigError(f"analogy method {method!r} is not supported", f"choose one of: {', '.join(ANALOGY_METHODS)}")
        fn = self.most_similar if method == "3cosadd" else self.most_similar_cosmul
        return fn(positive=[b, c], negative=[a], topn=topn, restrict_vocab=restrict_vocab)

    def _top(self, scores: np.ndarray, exclude: set[str], topn: int) -> list[tuple[str, float]]:
        check_number("topn", topn, low=1, integer=True)
        k = min(len(scores), topn + len(exclude))
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        out = [(self.words[i], float(scores[i])) for i in best if self.words[i] not in exclude]
        return out[:topn]

    # --- files --------------------------------------------------------------------------
    def save_word2vec(self, path: str | os.PathLike, binary: bool = False) -> None:
        """Write the C tool's text or binary format, atomically."""
        with atomic_write(path, "wb") as fh:
            fh.write(f"{len(self)} {self.dim}\n".encode())
            if binary:
                rows = self.vectors.astype("<f4")
                for w, row in zip(self.words, rows, strict=True):
                    fh.write(w.encode("utf-8") + b" " + row.tobytes() + b"\n")
            else:
                for w, row in zip(self.words, self.vectors, strict=True):
                    fh.write((w + " " + " ".join(f"{x:.6g}" for x in row) + "\n").encode("utf-8"))


def _header(line: bytes, path: Path) -> tuple[int, int]:
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise DataError(f"{path}: the first line must be '<word count> <dimension>', got {line[:60]!r}",
                        "is this a word2vec-format file?")
    count, dim = int(parts[0]), int(parts[1])
    if dim == 0:
        raise DataError(f"{path}: the header gives dimension 0")
    return count, dim


def load_word2vec(path: str | os.PathLike, binary: bool | None = None, limit: int | None = None) -> WordVectors:
    """Read a word2vec text or binary file (``binary=None`` guesses from the contents).

    ``limit`` reads only the first words (the most frequent, in files sorted by count).
    Rows whose dimension differs from the header's are an error naming the word.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"vectors file not found: {path}", "check the path")
    with open(path, "rb") as fh:
        count, dim = _header(fh.readline(), path)
        n = count if limit is None else min(count, limit)
        body_start = fh.tell()
        if binary is None:
            head = fh.read(4096)
            binary = b"\x00" in head or _undecodable(head)
            fh.seek(body_start)
        words: list[str] = []
        vectors = np.empty((n, dim), dtype=np.float32)
        for i in range(n):
            if binary:
                word, row = _binary_row(fh, dim, path, i)
            else:
                word, row = _text_row(fh.readline(), dim, path, i)
            words.append(word)
            vectors[i] = row
    return WordVectors(words, vectors)


def _undecodable(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(data) - 4  # a cut multi-byte character at the end is fine
    return False


def _text_row(line: bytes, dim: int, path: Path, i: int) -> tuple[str, np.ndarray]:
    if not line:
        raise DataError(f"{path}: the header promises more words than the file holds (ends at word {i + 1})",
                        "the file may be truncated")
    parts = line.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r").split(" ")
    parts = [p for p in parts if p != ""]
    if len(parts) - 1 != dim:
        raise DataError(f"{path}: word {i + 1} ({parts[0] if parts else ''!r}) has {len(parts) - 1} values, "
                        f"but the header says dimension {dim}", "all vectors must have the header's dimension")
    try:
        return parts[0], np.array(parts[1:], dtype=np.float32)
    except ValueError:
        raise DataError(f"{path}: word {i + 1} ({parts[0]!r}) has a value that is not a number") from None


def _binary_row(fh, dim: int, path: Path, i: int) -> tuple[str, np.ndarray]:
    raw = bytearray()
    while True:
        ch = fh.read(1)
        if not ch:
            raise DataError(f"{path}: the file ends inside word {i + 1}", "the file may be truncated")
        if ch == b" ":
            break
        if ch != b"\n" or raw:  # skip the newline the C tool writes after each vector
            raw += ch
    data = fh.read(4 * dim)
    if len(data) != 4 * dim:
        raise DataError(f"{path}: the vector of word {i + 1} has {len(data) // 4} of {dim} values",
                        "the file is truncated or its header's dimension is wrong")
    return raw.decode("utf-8", errors="replace"), np.frombuffer(data, dtype="<f4")
