"""Parity with libraries no one here wrote: NLTK (Laplace, Witten-Bell), KenLM's Python module
(it scores an ARPA file lmlab wrote) and, where it is installed, KenLM's ``lmplz`` on PTB."""

import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from lmlab.data import from_texts, open_corpus
from lmlab.ngram import NgramLM, corpus_counts
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.counts import lookup, words_of
from lmlab.tokenizers import WordLevelTokenizer
from tests.conftest import need_data

SMALL = ["the cat sat on the mat", "the dog sat on the log", "a cat ran to the dog", "the cat", "a dog sat",
         "the mat was on the log", "a log and a mat", "the dog ran", "on the mat sat a cat", "a cat sat on a dog"]
LN10 = math.log(10)


def _our_ngrams(tok, texts, order):
    """Every n-gram (orders 1..N) ending at a predicted position, as lmlab counts them."""
    out = []
    for t in texts:
        toks = ["<s>"] + t.split() + ["</s>"]
        out.append([tuple(toks[i - n + 1:i + 1]) for i in range(1, len(toks)) for n in range(1, order + 1)
                    if i - n + 1 >= 0])
    return out


def _prob(lm, tok, context, word):
    ids = np.array([[tok.token_to_id(w) for w in context + (word,)]])
    return math.exp(lm.score_array(ids)[0, -1])


def test_laplace_matches_nltk(no_progress):
    lm_mod = pytest.importorskip("nltk.lm")
    from nltk.lm.preprocessing import padded_everygram_pipeline

    tok = WordLevelTokenizer("word").train(SMALL)
    ours = NgramLM.fit_corpus(from_texts(SMALL), tok, order=2, smoothing="add-k", k=1.0)
    train, vocab = padded_everygram_pipeline(2, [s.split() for s in SMALL])
    ref = lm_mod.Laplace(2)
    ref.fit(train, vocab)
    # NLTK normalises over its vocabulary, which includes <s>; lmlab over the predictable ids (all but <s>):
    # both are (c(h w) + 1) / (c(h) + |V|) with |V| one apart, so the counts must agree exactly.
    v = int(ours.predictable.sum())
    assert len(ref.vocab) == v + 1
    words = [w for w in tok.vocab if w not in ("<s>", "<pad>", "<unk>")]
    for h in ["<s>"] + words:
        c_h = ref.counts[[h]].N()
        for w in words:
            expected = ref.score(w, [h]) * (c_h + v + 1) / (c_h + v)
            assert _prob(ours, tok, (h,), w) == pytest.approx(expected, rel=1e-12)


def test_witten_bell_matches_nltk(no_progress):
    lm_mod = pytest.importorskip("nltk.lm")
    order = 3
    tok = WordLevelTokenizer("word").train(SMALL)
    ours = NgramLM.fit_corpus(from_texts(SMALL), tok, order=order, smoothing="wb")
    ref = lm_mod.WittenBellInterpolated(order)
    ref.fit(_our_ngrams(tok, SMALL, order), [w for s in SMALL for w in s.split()] + ["<s>", "</s>"])
    est = ref.estimator
    checked = 0
    for n in range(2, order + 1):
        grams = words_of(ours.keys, ours.vocab_size, n)
        suffix = ours.suffix_rows()[n - 1]
        prefix = ours.keys[n - 1] // ours.vocab_size
        for i, g in enumerate(grams.tolist()):
            names = tuple(tok.id_to_token(x) for x in g)
            context, word = names[:-1], names[-1]
            alpha, gamma = est.alpha_gamma(word, context)
            # lmlab stores γ(h) as the context's backoff and p(w|h) = α + γ p(w|h') as the n-gram's probability
            assert math.exp(ours.logbows[n - 2][prefix[i]]) == pytest.approx(gamma, rel=1e-12)
            p_lower = math.exp(ours.logprobs[n - 2][suffix[i]])
            assert math.exp(ours.logprobs[n - 1][i]) == pytest.approx(alpha + gamma * p_lower, rel=1e-12)
            checked += 1
    assert checked == sum(ours.sizes()[1:])


@pytest.fixture(scope="module")
def ptb_slice():
    path = need_data("ptb", "ptb.train.txt")
    with open(path, encoding="utf-8") as fh:
        lines = [next(fh).strip() for _ in range(3000)]
    return lines[:2700], lines[2700:]


def test_kenlm_module_scores_lmlab_arpa_like_lmlab(tmp_path, ptb_slice, no_progress):
    kenlm = pytest.importorskip("kenlm")
    train, test = ptb_slice
    tok = WordLevelTokenizer("word").train(train)
    for smoothing in ("mkn", "katz", "wb"):
        lm = NgramLM.fit_corpus(from_texts(train), tok, order=3, smoothing=smoothing)
        path = write_arpa(lm, tok, tmp_path / f"{smoothing}.arpa")
        ref = kenlm.Model(str(path))
        for sentence in test[:150]:
            ids = np.array([[tok.bos_id] + tok.encode(sentence) + [tok.eos_id]])
            ours = lm.score_array(ids)[0] / LN10
            theirs = np.array([s[0] for s in ref.full_scores(sentence, bos=True, eos=True)])
            assert np.allclose(ours, theirs, atol=2e-5), (smoothing, sentence)


def test_arpa_round_trip_keeps_every_number(tmp_path, ptb_slice, no_progress):
    train, test = ptb_slice
    tok = WordLevelTokenizer("word").train(train)
    lm = NgramLM.fit_corpus(from_texts(train), tok, order=4, smoothing="kn")
    back, tok2 = read_arpa(write_arpa(lm, tok, tmp_path / "m.arpa"))
    assert back.sizes() == lm.sizes()
    mapping = np.array([tok2.token_to_id(tok.id_to_token(i)) or 0 for i in range(tok.vocab_size)])
    for sentence in test[:100]:
        ids = np.array([[tok.bos_id] + tok.encode(sentence) + [tok.eos_id]])
        assert np.allclose(lm.score_array(ids), back.score_array(mapping[ids]), atol=1e-6 * LN10)


def _lmplz() -> str | None:
    return os.environ.get("LMPLZ") or shutil.which("lmplz")


@pytest.mark.slow
@pytest.mark.skipif(_lmplz() is None, reason=os.environ.get("LMLAB_LMPLZ_MISSING")
                    or "lmplz is not installed (set LMPLZ or put it on PATH; .ci/run builds it)")
def test_lmplz_parity_on_ptb_order5_modified_kneser_ney(tmp_path, no_progress):
    """Every n-gram's log10 probability and backoff within 1e-4 of lmplz's; test perplexity within 0.1 %."""
    train_file = need_data("ptb", "ptb.train.txt")
    test_file = need_data("ptb", "ptb.test.txt")
    # lmplz refuses a literal <unk> in its input: score PTB's <unk> as an ordinary word, for both tools
    text = train_file.read_text(encoding="utf-8").replace("<unk>", "UNKWORD")
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    with open(tmp_path / "train.txt", "rb") as src, open(tmp_path / "lmplz.arpa", "wb") as dst:
        run = subprocess.run([_lmplz(), "-o", "5", "-S", "20%", "-T", str(tmp_path)], stdin=src, stdout=dst,
                             stderr=subprocess.PIPE, check=True)
    lmplz_discounts = [[float(x) for x in m] for m in
                       re.findall(r"D1=(\S+) D2=(\S+) D3\+=(\S+)", run.stderr.decode())]
    ref, ref_tok = read_arpa(tmp_path / "lmplz.arpa")
    train = open_corpus(tmp_path / "train.txt")
    tok = WordLevelTokenizer("word").train(train)
    counts = corpus_counts(train, tok, 5)
    ours = NgramLM.fit_counts(counts, "mkn")
    ours_d = [np.round(d, 5) for d in ours.params["discounts"]]
    # every discount agrees to the digits lmplz prints (order 1's D3+ only because lmlab reproduces
    # lmplz's raw count for the last flushed n-gram: see counts.kenlm_last_position)
    assert np.allclose(ours_d, lmplz_discounts, atol=1e-5)
    with_lmplz_discounts = NgramLM.fit_counts(counts, "mkn", discount=lmplz_discounts)
    mapping = np.array([ref_tok.token_to_id(tok.id_to_token(i)) if ref_tok.token_to_id(tok.id_to_token(i))
                        is not None else -1 for i in range(tok.vocab_size)])
    for lm in (with_lmplz_discounts, ours):
        for n in range(1, 6):
            grams = mapping[words_of(lm.keys, lm.vocab_size, n)]
            row = grams[:, 0]
            for j in range(1, n):
                row = lookup(ref.keys[j], np.where(row >= 0, row * ref.vocab_size + grams[:, j], -1))
            listed = np.isfinite(lm.logprobs[n - 1])
            assert (row[listed] >= 0).all()
            assert ref.sizes()[n - 1] == int(listed.sum())
            dp = np.abs(lm.logprobs[n - 1][listed] - ref.logprobs[n - 1][row[listed]]) / LN10
            assert dp.max() < 1e-4, n
            if n < 5:
                db = np.abs(lm.logbows[n - 1][listed] - ref.logbows[n - 1][row[listed]]) / LN10
                assert db.max() < 1e-4, n
    test = [line for line in test_file.read_text(encoding="utf-8").replace("<unk>", "UNKWORD").splitlines()
            if line.strip()]
    ids = [[tok.bos_id] + tok.encode(s) + [tok.eos_id] for s in test]
    ref_ids = [[ref_tok.bos_id] + ref_tok.encode(s) + [ref_tok.eos_id] for s in test]
    total = sum(float(ours.score_array(np.array([r]))[0].sum()) for r in ids)
    ref_total = sum(float(ref.score_array(np.array([r]))[0].sum()) for r in ref_ids)
    tokens = sum(len(r) - 1 for r in ids)
    ppl, ref_ppl = math.exp(-total / tokens), math.exp(-ref_total / tokens)
    assert ppl == pytest.approx(ref_ppl, rel=1e-3)  # the issue asks for 0.1 %
    assert ref_ppl == pytest.approx(141.2, abs=0.1)


HAND_ARPA = """\\data\\
ngram 1=6
ngram 2=5
ngram 3=2

\\1-grams:
-1.2\t<unk>\t0
-99\t<s>\t-0.4
-0.9\t</s>\t0
-0.7\tthe\t-0.25
-0.8\tcat\t-0.15
-1.0\tsat\t-0.05

\\2-grams:
-0.3\t<s> the\t-0.1
-0.2\tthe cat\t-0.2
-0.5\tcat sat\t-0.02
-0.6\tsat </s>
-0.9\tcat </s>

\\3-grams:
-0.1\t<s> the cat
-0.15\tthe cat sat

\\end\\
"""


def test_reading_a_foreign_arpa_gives_kenlm_scores(tmp_path):
    """An ARPA file written by hand (not by lmlab): lmlab's reading scores every token as KenLM does."""
    kenlm = pytest.importorskip("kenlm")
    path = tmp_path / "hand.arpa"
    path.write_text(HAND_ARPA, encoding="utf-8")
    ours, tok = read_arpa(path)
    ref = kenlm.Model(str(path))
    for sentence in ["the cat sat", "the cat", "cat the sat sat", "a dog sat on the cat", "the the the", "sat"]:
        ids = np.array([[tok.bos_id] + tok.encode(sentence) + [tok.eos_id]])
        theirs = [s[0] for s in ref.full_scores(sentence, bos=True, eos=True)]
        assert (ours.score_array(ids)[0] / LN10).tolist() == pytest.approx(theirs, abs=1e-6), sentence
