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


# --- extensions: words, sliding windows, per-document figures, comparability -------------------------
class _Bigram:
    """A fixed random bigram table behind the protocol, optionally with a bounded context."""

    @staticmethod
    def make(vocab: int, context_length, bos: int, eos: int):
        import torch

        from lmlab.lm import LanguageModel

        table = torch.log_softmax(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64), dim=-1)

        class Bigram(LanguageModel):
            vocab_size = vocab

            def initial_state(self, batch_size):
                return None

            def next_logprobs(self, tokens, state):
                return table[tokens[:, -1]], None

            def select_state(self, state, index):
                return None

        lm = Bigram()
        lm.context_length, lm.bos_id, lm.eos_id = context_length, bos, eos
        return lm


def test_word_perplexity_counts_words_plus_end(no_progress):
    docs = ["a b c", "b  a"]
    tok = WordLevelTokenizer("char").train(docs)
    lm = UnigramLM.fit_corpus(from_texts(docs), tok)
    score = evaluate_lm(lm, tok, from_texts(docs))
    assert score.words == (3 + 1) + (2 + 1)
    assert score.word_perplexity == pytest.approx(math.exp(-score.total_logprob / 7))
    assert "word_perplexity" in score.as_dict()


def test_sliding_windows_cover_every_position_once():
    from lmlab.eval import windows

    for length in range(2, 30):
        for context in range(2, 8):
            for stride in range(1, context):
                counted = []
                for i, (begin, end, first) in enumerate(windows(length, context, stride)):
                    assert end - begin <= context and first > begin
                    if i:  # later windows keep context - stride ids of history before their first counted id
                        assert first - begin == context - stride
                    counted += range(first, end)
                assert counted == list(range(1, length))


def test_sliding_window_evaluation_equals_unbounded_for_a_bigram(no_progress):
    from lmlab.core.errors import ConfigError

    docs = ["a b c a b c a b", "c c a", "b a c b a c b a c b a c"]
    tok = WordLevelTokenizer("word").train(docs)
    full = evaluate_lm(_Bigram.make(tok.vocab_size, None, tok.bos_id, tok.eos_id), tok, from_texts(docs))
    bounded = _Bigram.make(tok.vocab_size, 4, tok.bos_id, tok.eos_id)
    with pytest.raises(ModelError, match="--stride"):
        evaluate_lm(bounded, tok, from_texts(docs))
    for stride in (1, 2, 3):
        windowed = evaluate_lm(bounded, tok, from_texts(docs), stride=stride, batch_size=2)
        assert windowed.tokens == full.tokens
        assert windowed.total_logprob == pytest.approx(full.total_logprob, rel=1e-12)
    with pytest.raises(ConfigError):
        evaluate_lm(bounded, tok, from_texts(docs), stride=4)


def test_per_document_breakdown_sums_to_the_total(no_progress):
    docs = ["a b", "a b c a", "c", "b b b b b b"]
    tok = WordLevelTokenizer("word").train(docs)
    lm = UnigramLM.fit_corpus(from_texts(docs), tok)
    score = evaluate_lm(lm, tok, from_texts(docs), per_document=True, batch_size=3)
    assert [d["tokens"] for d in score.per_document] == [3, 5, 2, 7]
    assert sum(d["logprob"] for d in score.per_document) == pytest.approx(score.total_logprob, rel=1e-12)
    first = score.per_document[0]
    assert first["perplexity"] == pytest.approx(math.exp(-first["logprob"] / 3))


def test_comparability_note_only_for_different_vocabularies():
    from lmlab.eval import comparability_note

    a = WordLevelTokenizer("word").train(["a b c"])
    assert comparability_note(a, WordLevelTokenizer("word").train(["a b c"])) is None
    note = comparability_note(a, WordLevelTokenizer("char").train(["a b c"]))
    assert "not comparable" in note and "bits per byte" in note
