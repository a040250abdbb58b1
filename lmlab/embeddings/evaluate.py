"""Intrinsic evaluation of word vectors: Spearman ρ on similarity pairs, analogy accuracy.

Both follow gensim's conventions so numbers are comparable: words are matched case-insensitively
(upper-cased; among case variants the most frequent word wins), pairs or questions with a word
outside the vocabulary are skipped and counted as out-of-vocabulary, and analogies are answered
within the ``restrict_vocab`` most frequent words (30 000 is customary).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import DataError, InputError
from ..core.validate import check_choice, check_number
from .vectors import ANALOGY_METHODS, WordVectors


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's r of the (tie-averaged) ranks."""
    rx, ry = rank(x), rank(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def _upper_index(wv: WordVectors, restrict_vocab: int | None) -> dict[str, int]:
    words = wv.words[:restrict_vocab]
    return {w.upper(): i for i, w in reversed(list(enumerate(words)))}


def _open(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"evaluation file not found: {path}", "check the path (and LMLAB_DATA)")
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


@dataclass
class SimilarityResult:
    spearman: float
    pairs: int
    oov_pairs: int

    @property
    def oov_ratio(self) -> float:
        total = self.pairs + self.oov_pairs
        return self.oov_pairs / total if total else 0.0


def evaluate_similarity(wv: WordVectors, path: str | os.PathLike, restrict_vocab: int = 300_000) -> SimilarityResult:
    """Spearman ρ between cosine similarity and human scores on a ``word1<TAB>word2<TAB>score`` file."""
    index = _upper_index(wv, restrict_vocab)
    ours, gold, oov = [], [], 0
    for lineno, line in enumerate(_open(path), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 3:
            raise DataError(f"{path}:{lineno}: expected word1<TAB>word2<TAB>score")
        a, b = parts[0].upper(), parts[1].upper()
        if a not in index or b not in index:
            oov += 1
            continue
        ours.append(float(wv.unit[index[a]] @ wv.unit[index[b]]))
        gold.append(float(parts[2]))
    if len(ours) < 2:
        raise DataError(f"fewer than two pairs of {path} are in the vocabulary", "train on more text")
    return SimilarityResult(spearman(np.array(ours), np.array(gold)), len(ours), oov)


@dataclass
class AnalogyResult:
    accuracy: float
    correct: int
    questions: int
    oov_questions: int
    sections: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (correct, asked)


def evaluate_analogies(wv: WordVectors, path: str | os.PathLike, restrict_vocab: int = 30_000,
                       method: str = "3cosadd", batch: int = 512) -> AnalogyResult:
    """Accuracy on ``a b c d`` questions (``: section`` headers): is d the nearest word to b − a + c?"""
    check_choice("method", method, ANALOGY_METHODS)
    check_number("restrict_vocab", restrict_vocab, low=1, integer=True)
    index = _upper_index(wv, restrict_vocab)
    questions: list[tuple[int, int, int, int]] = []
    section_of: list[str] = []
    section, oov = "", 0
    for lineno, line in enumerate(_open(path), 1):
        if line.startswith(":"):
            section = line[1:].strip()
            continue
        parts = line.upper().split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: an analogy line needs four words, got {len(parts)}")
        if not all(p in index for p in parts):
            oov += 1
            continue
        questions.append(tuple(index[p] for p in parts))
        section_of.append(section)
    if not questions:
        raise DataError(f"no question of {path} has all four words in the vocabulary", "train on more text")
    unit = wv.unit[:restrict_vocab]
    upper = [w.upper() for w in wv.words[:restrict_vocab]]
    q = np.array(questions, dtype=np.int64)
    hits = np.zeros(len(q), dtype=bool)
    for lo in range(0, len(q), batch):
        a, b, c, d = q[lo:lo + batch].T
        if method == "3cosadd":
            query = unit[b] - unit[a] + unit[c]
            scores = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ unit.T
        else:
            cos = [(1 + unit[x] @ unit.T) / 2 for x in (a, b, c)]
            scores = cos[1] * cos[2] / (cos[0] + 1e-6)
        rows = np.arange(len(a))
        for x in (a, b, c):
            scores[rows, x] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :4] if scores.shape[1] <= 8 else \
            _top_k(scores, 4)
        for r in range(len(a)):
            ignore = {upper[a[r]], upper[b[r]], upper[c[r]]}
            for cand in top[r]:
                if upper[cand] not in ignore:
                    hits[lo + r] = cand == d[r] or upper[cand] == upper[d[r]]
                    break
    sections: dict[str, tuple[int, int]] = {}
    for s, h in zip(section_of, hits, strict=True):
        c, n = sections.get(s, (0, 0))
        sections[s] = (c + int(h), n + 1)
    return AnalogyResult(float(hits.mean()), int(hits.sum()), len(q), oov, sections)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
