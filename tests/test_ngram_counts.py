"""Vectorised counting: exact counts, sentence boundaries, packed keys, high orders, bad input."""

import random
from collections import Counter

import numpy as np
import pytest

from lmlab.core import ConfigError, DataError
from lmlab.data import from_texts
from lmlab.ngram import corpus_counts, count_ngrams
from lmlab.ngram.counts import lookup, suffix_rows, words_of
from lmlab.tokenizers import WordLevelTokenizer

TEXTS = ["a b a b c", "b c", "a", "c c c c c c c c"]
# many positions per (n-1)-gram: the counting kernel sorts its large groups another way than its small ones
_RNG = random.Random(5)
MANY = [" ".join(_RNG.choice("abcd") for _ in range(_RNG.randint(1, 30))) for _ in range(300)]


def _reference(texts, order):
    """The same counts with a dict per n-gram (what lmlab avoids), for comparison."""
    out = [Counter() for _ in range(order)]
    for t in texts:
        toks = ["<s>"] + t.split() + ["</s>"]
        for i in range(1, len(toks)):
            for n in range(1, order + 1):
                if i - n + 1 >= 0:
                    out[n - 1][tuple(toks[i - n + 1:i + 1])] += 1
    return out


@pytest.mark.parametrize("texts,order", [(TEXTS, 1), (TEXTS, 2), (TEXTS, 3), (TEXTS, 7), (MANY, 5)])
def test_counts_equal_a_dictionary_count(texts, order, no_progress):
    tok = WordLevelTokenizer("word").train(texts)
    counts = corpus_counts(from_texts(texts), tok, order)
    ref = _reference(texts, order)
    for n in range(1, order + 1):
        grams = words_of(counts.keys, counts.vocab_size, n)
        got = {tuple(tok.id_to_token(i) for i in g): int(c)
               for g, c in zip(grams.tolist(), counts.counts[n - 1].tolist(), strict=True) if c > 0}
        assert got == dict(ref[n - 1])
        if n > 1:
            assert (np.diff(counts.keys[n - 1]) > 0).all()  # sorted, no duplicates


def test_ngrams_never_cross_sentences_and_suffixes_point_one_order_down(no_progress):
    tok = WordLevelTokenizer("word").train(TEXTS)
    counts = corpus_counts(from_texts(TEXTS), tok, 4)
    names = {tuple(tok.id_to_token(i) for i in g) for g in words_of(counts.keys, counts.vocab_size, 3).tolist()}
    assert ("c", "</s>", "b") not in names and ("</s>", "<s>", "b") not in names
    assert ("<s>", "a", "</s>") in names
    for n in range(2, 5):
        grams = words_of(counts.keys, counts.vocab_size, n)
        lower = words_of(counts.keys, counts.vocab_size, n - 1)
        assert (lower[counts.suffix[n - 1]] == grams[:, 1:]).all()
        assert np.array_equal(suffix_rows(counts.keys, counts.vocab_size)[n - 1], counts.suffix[n - 1])


def test_raw_token_arrays_and_lookup():
    # ids: 0 <unk>, 1 <s>, 2 </s>, 3 x, 4 y — two sentences "x y" and "y"
    tokens = np.array([1, 3, 4, 2, 1, 4, 2])
    counts = count_ngrams(tokens, 2, 5, bos_id=1, eos_id=2, unk_id=0)
    assert counts.counts[0].tolist() == [0, 0, 2, 1, 2]
    keys = counts.keys[1]
    # bigram keys are prefix_row * V + word; unigram rows are the ids themselves
    assert (lookup(keys, np.array([1 * 5 + 3, 3 * 5 + 4, 4 * 5 + 2, 1 * 5 + 4])) >= 0).all()
    assert lookup(keys, np.array([3 * 5 + 2, -1])).tolist() == [-1, -1]
    assert counts.counts[1][lookup(keys, np.array([4 * 5 + 2]))].tolist() == [2]
    assert counts.sizes() == [3, 4]


def test_bad_input():
    with pytest.raises(ConfigError, match="order"):
        count_ngrams(np.array([1, 3, 2]), 0, 5, bos_id=1, eos_id=2)
    with pytest.raises(DataError, match="no tokens"):
        count_ngrams(np.array([], dtype=np.int64), 2, 5, bos_id=1, eos_id=2)
    with pytest.raises(DataError, match="begin with <s>"):
        count_ngrams(np.array([3, 1, 3, 2]), 2, 5, bos_id=1, eos_id=2)
    with pytest.raises(DataError, match="ids must lie"):
        count_ngrams(np.array([1, 9, 2]), 2, 5, bos_id=1, eos_id=2)


def test_hashed_index_finds_what_binary_search_finds():
    from lmlab.ngram.counts import KeyIndex

    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 10**9, 5000))
    queries = np.concatenate([rng.choice(keys, 3000), rng.integers(0, 10**9, 3000), [-1, -7]]).reshape(2, -1)
    assert np.array_equal(KeyIndex(keys).find(queries), lookup(keys, queries))
    assert KeyIndex(keys[:0]).find(np.array([3])).tolist() == [-1]


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_counting_split_across_threads_equals_one_pass(workers, monkeypatch, no_progress):
    """Order n is counted in ranges cut at prefix-group boundaries, one per thread: the joined tables
    (keys, counts, suffixes, the rows lmplz flushes last) are those of one pass."""
    import lmlab.ngram.counts as counts_module

    tok = WordLevelTokenizer("word").train(MANY)
    one = corpus_counts(from_texts(MANY), tok, 5)
    monkeypatch.setattr(counts_module, "parallel_workers", lambda size: workers)
    split = corpus_counts(from_texts(MANY), tok, 5)
    for n in range(5):
        assert np.array_equal(one.keys[n], split.keys[n])
        assert np.array_equal(one.counts[n], split.counts[n])
        assert np.array_equal(one.suffix[n], split.suffix[n])
    assert one.kenlm_last == split.kenlm_last
