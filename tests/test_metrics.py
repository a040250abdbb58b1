import math

import pytest

from lmlab.core import ModelError
from lmlab.data import from_texts
from lmlab.eval import LMScore, bits_per_unit, evaluate_lm, perplexity
from lmlab.ngram import UnigramLM
from lmlab.tokenizers import WordLevelTokenizer


def test_bits_per_byte_from_known_logprobs():
    # 40 tokens each with probability 1/4 → 80 bits; over 20 bytes → 4 bits per byte
    total = 40 * math.log(0.25)
    score = LMScore(total_logprob=total, tokens=40, documents=1, characters=10, bytes=20, unk_tokens=0)
    assert score.cross_entropy_bits == pytest.approx(2.0, abs=1e-12)
    assert score.perplexity == pytest.approx(4.0, abs=1e-12)
    assert score.bits_per_byte == pytest.approx(4.0, abs=1e-12)
    assert score.bits_per_char == pytest.approx(8.0, abs=1e-12)
    assert perplexity(total, 40) == pytest.approx(4.0)
    assert bits_per_unit(-math.log(2) * 3, 3) == pytest.approx(1.0)


def test_bytes_count_utf8_not_characters(no_progress):
    tok = WordLevelTokenizer("char").train(["héé"])
    lm = UnigramLM.fit_corpus(from_texts(["héé"]), tok)
    score = evaluate_lm(lm, tok, from_texts(["éh"]))
    assert (score.characters, score.bytes, score.tokens) == (3, 4, 3)


def test_mismatched_tokenizer_is_refused(no_progress):
    tok = WordLevelTokenizer("word").train(["a b c"])
    other = WordLevelTokenizer("word").train(["a b c d e"])
    lm = UnigramLM.fit_corpus(from_texts(["a b c"]), tok)
    with pytest.raises(ModelError, match="do not belong together"):
        evaluate_lm(lm, other, from_texts(["a"]))


def test_zero_probability_is_a_clear_error(no_progress):
    tok = WordLevelTokenizer("word").train(["a b c"])
    lm = UnigramLM.fit_corpus(from_texts(["a b c"]), tok, smoothing="mle")
    with pytest.raises(ModelError, match="probability 0"):
        evaluate_lm(lm, tok, from_texts(["zzz"]))


def test_batching_does_not_change_totals(no_progress):
    docs = ["a b", "a b c a", "c", "b b b b b b"]
    tok = WordLevelTokenizer("word").train(docs)
    lm = UnigramLM.fit_corpus(from_texts(docs), tok)
    one = evaluate_lm(lm, tok, from_texts(docs), batch_size=1)
    many = evaluate_lm(lm, tok, from_texts(docs), batch_size=3)
    assert one.total_logprob == pytest.approx(many.total_logprob, rel=1e-12)
    assert one.tokens == many.tokens == 2 + 4 + 1 + 6 + 4
