"""Learning BPE merges (count-based, as Sennrich et al. and HF ``tokenizers``) and WordPiece merges
(likelihood-based: count(ab) / (count(a)·count(b))) from word counts.

Both run incrementally in numba kernels (``_merge_kernels``) over the words as integer symbol
arrays: pair counts change only in the words a merge touches (found through a pair → words
list). BPE takes the next merge from a lazy heap (an entry whose count is stale is re-pushed
with the current count when it surfaces); WordPiece keeps every live pair at its exact score
in an indexed heap and re-scores the pairs of the two merged symbols, whose counts fell.

Tie-breaking (documented, deterministic): among pairs with the same count, BPE takes the
pair whose ids are smallest — ids are assigned to the alphabet in code-point order, then to
merged tokens in creation order — which is exactly HF ``tokenizers``' rule, so both learn
the same merges. WordPiece breaks score ties by the higher pair count, then smallest ids.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.progress import progress
from ..core.validate import check_choice

Pair = tuple[int, int]


def code_points(text: str) -> np.ndarray:
    """The code points of ``text`` as an int64 array."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


def compute_alphabet(word_counts: dict[str, int], initial: Iterable[str] = (), limit: int | None = None) -> list[str]:
    """Characters of the corpus (plus ``initial``), the ``limit`` most frequent, in code-point order.

    Ties at the cut go to the character seen first (in ``word_counts``' order), then ``initial``'s."""
    words = list(word_counts)
    chars = code_points("".join(words))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    weights = np.repeat(np.fromiter(word_counts.values(), dtype=np.float64, count=len(words)), lengths)
    uniq, first, inverse = np.unique(chars, return_index=True, return_inverse=True)
    totals = np.bincount(inverse, weights=weights, minlength=len(uniq))
    by_appearance = np.argsort(first, kind="stable")
    freq = dict(zip(map(chr, uniq[by_appearance].tolist()), totals[by_appearance].tolist(), strict=True))
    freq.update({c: float("inf") for c in initial})
    kept = list(freq)
    if limit is not None and len(kept) > limit:
        kept = sorted(kept, key=lambda c: freq[c])[len(kept) - limit:]
    return sorted(kept)


def symbolize(word_counts: dict[str, int], vocab: list[str], ids: dict[str, int], prefix: str,
              suffix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The words (in sorted order) as symbol ids laid end to end: (symbols, offsets, counts).

    A character becomes ``prefix + c`` after a word's first position and ``c + suffix`` at its
    last; such symbols join the vocabulary in order of first appearance. Characters outside
    the vocabulary's alphabet are dropped, as HF does.
    """
    items = sorted(word_counts.items())
    words = [w for w, _ in items]
    chars = code_points("".join(words))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = np.cumsum(lengths)
    position = np.arange(len(chars)) - np.repeat(ends - lengths, lengths)
    variant = np.zeros(len(chars), dtype=np.int64)
    if prefix:
        variant += 2 * (position > 0)
    if suffix:
        variant += position == np.repeat(lengths - 1, lengths)
    keys, first, inverse = np.unique(chars * 4 + variant, return_index=True, return_inverse=True)
    symbol_of = np.full(len(keys), -1, dtype=np.int64)
    for k in np.argsort(first, kind="stable").tolist():
        code, v = divmod(int(keys[k]), 4)
        ch = chr(code)
        if ch not in ids:
            continue  # outside a limited alphabet
        text = (prefix + ch if v & 2 else ch) + (suffix if v & 1 else "")
        if text not in ids:
            ids[text] = len(vocab)
            vocab.append(text)
        symbol_of[k] = ids[text]
    symbols = symbol_of[inverse.ravel()]
    kept = symbols >= 0
    word_of = np.repeat(np.arange(len(words)), lengths)
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(word_of[kept], minlength=len(words)))
    counts = np.fromiter((n for _, n in items), dtype=np.int64, count=len(items))
    return symbols[kept].astype(np.int64), offsets, counts


def _texts(vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every token's code points laid end to end, and their offsets."""
    lengths = np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))
    offsets = np.zeros(len(vocab) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    return code_points("".join(vocab)), offsets


def _merged_text(vocab: list[str], a: int, b: int, prefix: str) -> str:
    tok_b = vocab[b][len(prefix):] if prefix and vocab[b].startswith(prefix) else vocab[b]
    return vocab[a] + tok_b


def learn_bpe(word_counts: dict[str, int], vocab_size: int, *, specials: Iterable[str] = (),
              initial_alphabet: Iterable[str] = (), limit_alphabet: int | None = None, min_frequency: int = 0,
              prefix: str = "", suffix: str = "") -> tuple[list[str], list[tuple[str, str]]]:
    """BPE vocabulary (specials, alphabet, merged tokens) and merges, most frequent pair first.

    ``prefix`` marks symbols that continue a word (HF's ``continuing_subword_prefix``; ``##``
    gives HF's WordPiece trainer), ``suffix`` ends a word (``</w>``).
    """
    from . import _merge_kernels

    vocab = list(dict.fromkeys(specials))
    for ch in compute_alphabet(word_counts, initial_alphabet, limit_alphabet):
        if ch not in vocab:
            vocab.append(ch)
    ids = {t: i for i, t in enumerate(vocab)}
    syms, offsets, counts = symbolize(word_counts, vocab, ids, prefix, suffix)
    if len(counts) == 0:
        raise DataError("no words to learn BPE merges from", "train on a non-empty corpus")
    cp, cp_off = _texts(vocab)
    bar = progress(total=max(0, vocab_size - len(vocab)), desc="learning BPE merges", unit="merge")
    merges_ids = _merge_kernels.bpe_merges(syms, offsets, counts, cp, cp_off, len(vocab), vocab_size,
                                                 min_frequency, code_points(prefix), max(vocab_size, len(vocab)) + 1)
    merges: list[tuple[str, str]] = []
    for a, b, new in merges_ids.tolist():
        if new == len(vocab):
            vocab.append(_merged_text(vocab, a, b, prefix))
        merges.append((vocab[a], vocab[b]))
    bar.update(len(merges_ids))
    bar.close()
    return vocab, merges


WORDPIECE_SCORES = ("likelihood", "count")


def learn_wordpiece(word_counts: dict[str, int], vocab_size: int, *, specials: Iterable[str] = (),
                    prefix: str = "##", limit_alphabet: int | None = None, score: str = "likelihood",
                    min_frequency: int = 0) -> list[str]:
    """WordPiece vocabulary: repeatedly merge the pair with the best count(ab) / (count(a)·count(b)).

    ``score="count"`` merges the most frequent pair instead — HF ``tokenizers``' WordPiece trainer,
    which is its BPE trainer with the ``##`` continuation prefix (``min_frequency`` applies to it).
    HF numbers the ``##c`` symbols in its hash-map order, so its ties between equally frequent
    pairs vary from run to run; given the same initial ids (pass them as ``specials``) both
    learn the same vocabulary.
    """
    check_choice("score", score, WORDPIECE_SCORES)
    if score == "count":
        vocab, _ = learn_bpe(word_counts, vocab_size, specials=specials, limit_alphabet=limit_alphabet,
                             min_frequency=min_frequency, prefix=prefix)
        return vocab
    if min_frequency:
        raise ConfigError("min_frequency applies to count-based merges only",
                          "drop it, or use score='count' (--wordpiece-score count)")
    from . import _merge_kernels

    vocab = list(dict.fromkeys(specials))
    for ch in compute_alphabet(word_counts, (), limit_alphabet):
        if ch not in vocab:
            vocab.append(ch)
    ids = {t: i for i, t in enumerate(vocab)}
    syms, offsets, counts = symbolize(word_counts, vocab, ids, prefix, "")
    if len(counts) == 0:
        raise DataError("no words to learn WordPiece merges from", "train on a non-empty corpus")
    cp, cp_off = _texts(vocab)
    bar = progress(total=max(0, vocab_size - len(vocab)), desc="learning WordPiece merges", unit="merge")
    merges = _merge_kernels.wordpiece_merges(syms, offsets, counts, cp, cp_off, len(vocab), vocab_size,
                                             code_points(prefix), max(vocab_size, len(vocab)) + 1)
    for a, b, new in merges.tolist():
        if new == len(vocab):
            vocab.append(_merged_text(vocab, a, b, prefix))
    bar.update(len(merges))
    bar.close()
    return vocab
