"""Trainers: hand-computed merges, the same merges as HF tokenizers, and files HF reads identically."""

import json
import math
import random

import numpy as np
import pytest

from lmlab.core import ConfigError
from lmlab.tokenizers import load
from lmlab.tokenizers.bpe_trainer import learn_bpe, learn_wordpiece
from lmlab.tokenizers.models import Unigram
from lmlab.tokenizers.trainers import KINDS, train_tokenizer
from lmlab.tokenizers.unigram_trainer import Lattices, digamma, learn_unigram
from tests.conftest import need_data

SENNRICH = {"low": 5, "lower": 2, "newest": 6, "widest": 3}


def test_bpe_merges_by_hand():
    # pair counts: es 9, st 9 (tie → smaller ids: e < s), then est 9, lo 7 = ow 7 (l < o), low 7, then
    # ne = ew = w·est = 6 → (e, w) has the smallest ids
    vocab, merges = learn_bpe(SENNRICH, 10 + 5, specials=[])
    assert vocab[:10] == list("deilnorstw")
    assert merges == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w"), ("e", "w")]
    assert vocab[10:] == ["es", "est", "lo", "low", "ew"]


def test_bpe_min_frequency_and_specials_first():
    vocab, merges = learn_bpe(SENNRICH, 100, specials=["<unk>"], min_frequency=7)
    assert vocab[0] == "<unk>" and merges == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w")]


def test_wordpiece_merges_by_likelihood_not_count():
    # a:6 ##b:5 ##c:2 c:1; scores: a##b 4/30, a##c 2/12, c##b 1/5 → "cb" first although a##b is most frequent;
    # then ab = 4/(6·4) ties ac = 2/(6·2): the higher pair count wins
    vocab = learn_wordpiece({"ab": 4, "ac": 2, "cb": 1}, 3 + 2 + 3, specials=[])
    assert vocab == ["a", "b", "c", "##b", "##c", "cb", "ab", "ac"]


def test_unigram_viterbi_by_hand():
    model = Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -1.5), ("abc", -5.0), ("c", -1.0)], unk_id=0)
    assert model.tokenize("abc") == [(3, 0, 2), (5, 2, 3)]  # -2.5 beats abc (-5) and a·b·c (-3)
    assert model.tokenize("abdd") == [(3, 0, 2), (0, 2, 4)]  # unknown characters fused into one <unk>


def test_unigram_sampling_follows_the_tempered_distribution():
    model = Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -1.5)], unk_id=0)
    rng = random.Random(0)
    draws = [len(model.sample("ab", alpha=1.0, rng=rng)) for _ in range(3000)]
    p_whole = math.exp(-1.5) / (math.exp(-1.5) + math.exp(-2.0))
    assert abs(draws.count(1) / 3000 - p_whole) < 0.03
    assert all(len(model.sample("ab", alpha=50.0, rng=rng)) == 1 for _ in range(50))  # large alpha → Viterbi


def test_unigram_expected_counts_match_brute_force():
    pieces = [("a", -1.2), ("b", -1.7), ("ab", -2.0), ("ba", -2.5), ("aba", -3.1)]
    words = [("abab", 3), ("ba", 2)]

    def segmentations(w):
        if not w:
            yield []
        for i, (p, _) in enumerate(pieces):
            if w.startswith(p):
                for rest in segmentations(w[len(p):]):
                    yield [i] + rest
    expected = np.zeros(len(pieces))
    loglik = 0.0
    for w, n in words:
        segs = list(segmentations(w))
        weights = np.array([math.exp(sum(pieces[i][1] for i in s)) for s in segs])
        loglik += n * math.log(weights.sum())
        for s, wt in zip(segs, weights / weights.sum(), strict=True):
            for i in s:
                expected[i] += n * wt
    got, got_loglik = Lattices(words, pieces, 3).expected_counts(np.array([s for _, s in pieces]))
    assert np.allclose(got, expected) and got_loglik == pytest.approx(loglik)


def test_digamma_against_scipy():
    import scipy.special as special
    for x in (0.01, 0.5, 1.0, 3.7, 12.0, 1e4):
        assert digamma(x) == pytest.approx(float(special.digamma(x)), rel=1e-10, abs=1e-10)


def test_unigram_keeps_every_character_and_reaches_size():
    words = {"\u2581hello": 5, "\u2581help": 3, "\u2581world": 4, "\u2581word": 2, "\u2581zq": 1}
    pieces = learn_unigram(words, 14, seed_size=100)
    names = {p for p, _ in pieces}
    assert set("".join(words)) <= names and len(pieces) <= max(14, len(set("".join(words))))
    assert pieces == sorted(pieces, key=lambda ps: (-ps[1], ps[0]))


def test_vocab_size_too_small_is_a_clear_error():
    with pytest.raises(ConfigError, match="leaves no room"):
        train_tokenizer("wordpiece", ["a b"], 5)


@pytest.fixture(scope="module")
def wikitext():
    train = need_data("wikitext-2", "train.txt").read_text(encoding="utf-8").splitlines()[:1500]
    valid = need_data("wikitext-2", "valid.txt").read_text(encoding="utf-8").splitlines()
    return train, valid


@pytest.mark.parametrize("kind", ["bpe", "byte-bpe"])
def test_same_merges_as_hf_tokenizers(kind, wikitext):
    hf = pytest.importorskip("tokenizers")
    train, _ = wikitext
    ours = train_tokenizer(kind, train, 700)
    if kind == "byte-bpe":
        ref = hf.Tokenizer(hf.models.BPE())
        ref.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = hf.trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"], show_progress=False,
                                         initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    else:
        ref = hf.Tokenizer(hf.models.BPE(unk_token="<unk>"))
        ref.pre_tokenizer = hf.pre_tokenizers.Metaspace()
        trainer = hf.trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                         show_progress=False)
    ref.train_from_iterator(train, trainer)
    model = json.loads(ref.to_str())["model"]
    theirs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    assert ours.model.merges == theirs
    assert ours.get_vocab() == model["vocab"]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in ("unigram", "wordpiece") else k
                                  for k in KINDS])
def test_trained_tokenizer_read_by_hf_gives_identical_ids_on_wikitext_valid(kind, wikitext, tmp_path):
    hf = pytest.importorskip("tokenizers")
    train, valid = wikitext
    ours = train_tokenizer(kind, train, 600)
    path = ours.save(tmp_path)
    assert load(path).fingerprint() == ours.fingerprint()
    ref = hf.Tokenizer.from_file(str(path))
    theirs = ref.encode_batch(valid, add_special_tokens=False)
    mismatches = [line for line, enc in zip(valid, theirs, strict=True) if ours.encode(line) != enc.ids]
    assert not mismatches, f"{len(mismatches)} lines differ, first: {mismatches[0][:80]!r}"
    for line in valid[:50]:
        ids = ours.encode(line, add_special_tokens=True)
        assert ids == ref.encode(line).ids
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids)


def test_training_is_reproducible(wikitext):
    train, _ = wikitext
    a = train_tokenizer("byte-bpe", train[:300], 400)
    b = train_tokenizer("byte-bpe", list(reversed(train[:300])), 400)
    assert a.fingerprint() == b.fingerprint()


def test_unigram_nbest_and_nbest_sampling():
    model = Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -1.5), ("abc", -5.0), ("c", -1.0)], unk_id=0)
    best = model.nbest("abc", 3)
    assert [round(s, 6) for s, _ in best] == [-2.5, -3.0, -5.0]
    assert [[t[0] for t in p] for _, p in best] == [[3, 5], [1, 2, 5], [4]]
    assert model.nbest("abc", 1)[0][1] == model.tokenize("abc")
    rng = random.Random(1)
    draws = [tuple(t[0] for t in model.sample("abc", alpha=1.0, rng=rng, nbest_size=2)) for _ in range(2000)]
    assert set(draws) == {(3, 5), (1, 2, 5)}
    assert abs(draws.count((3, 5)) / 2000 - 1 / (1 + math.exp(-0.5))) < 0.03


def test_sample_encode_is_reproducible_and_decodes_to_the_text():
    tok = train_tokenizer("unigram", ["the cat sat on the mat", "the dog sat on a log"] * 10, 40)
    a = tok.sample_encode("the cat sat", alpha=0.5, seed=3)
    assert a == tok.sample_encode("the cat sat", alpha=0.5, seed=3)
    assert tok.decode(a) == "the cat sat"
    assert len({tuple(tok.sample_encode("the cat sat", alpha=0.1, seed=s)) for s in range(20)}) > 1


def test_count_wordpiece_learns_hf_tokenizers_vocabulary(wikitext):
    # HF's WordPiece trainer is its BPE trainer with "##": it numbers the ##-symbols in hash-map order, so
    # its ties (and vocabulary) vary between runs; started from HF's initial ids, ours must learn its vocabulary
    hf = pytest.importorskip("tokenizers")
    from lmlab.tokenizers.trainers import PIPELINES, count_words

    train, _ = wikitext
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ref = hf.Tokenizer(hf.models.WordPiece(unk_token="[UNK]"))
    ref.normalizer = hf.normalizers.BertNormalizer(lowercase=True)
    ref.pre_tokenizer = hf.pre_tokenizers.BertPreTokenizer()
    ref.train_from_iterator(train, hf.trainers.WordPieceTrainer(vocab_size=700, special_tokens=specials,
                                                                show_progress=False))
    vocab = json.loads(ref.to_str())["model"]["vocab"]
    theirs = sorted(vocab, key=vocab.get)
    n_initial = next(i for i, t in enumerate(theirs) if t not in specials and len(t.removeprefix("##")) > 1)
    counts = count_words(train, PIPELINES["wordpiece"]["normalizer"], PIPELINES["wordpiece"]["pre_tokenizer"])
    assert learn_wordpiece(counts, 700, specials=theirs[:n_initial], score="count") == theirs
    ours = train_tokenizer("wordpiece", train, 700, wordpiece_score="count")
    assert ours.vocab_size == 700 and set(ours.get_vocab()) != set(learn_wordpiece(counts, 700, specials=specials))


def test_min_frequency_is_refused_where_merges_are_not_count_based():
    with pytest.raises(ConfigError, match="min_frequency"):
        train_tokenizer("wordpiece", ["a b c"], 40, min_frequency=2)
    with pytest.raises(ConfigError, match="min_frequency"):
        train_tokenizer("unigram", ["a b c"], 40, min_frequency=2)
    with pytest.raises(ConfigError, match="wordpiece_score"):
        train_tokenizer("bpe", ["a b c"], 40, wordpiece_score="count")
    tok = train_tokenizer("wordpiece", ["ab ab ab cd"], 20, wordpiece_score="count", min_frequency=2)
    assert "ab" in tok.get_vocab() and "cd" not in tok.get_vocab()


def test_unigram_stops_when_only_characters_are_left():
    # asking for fewer pieces than there are characters ends with every character (it used to loop forever)
    words = {"\u2581abcdef": 3, "\u2581fedcba": 2, "\u2581ghij": 1}
    pieces = learn_unigram(words, 4, seed_size=50)
    assert {p for p, _ in pieces} == set("".join(words))
