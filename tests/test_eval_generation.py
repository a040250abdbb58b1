"""Generation metrics: BLEU, chrF/chrF++, ROUGE and SQuAD EM/F1 — hand values and peer parity."""

from __future__ import annotations

import math

import pytest

from lmlab.core.errors import ConfigError, InputError
from lmlab.eval.bleu import bleu_tokenize, corpus_bleu, sentence_bleu
from lmlab.eval.chrf import corpus_chrf, sentence_chrf
from lmlab.eval.qa import exact_match, normalize_answer, token_f1
from lmlab.eval.rouge import corpus_rouge, rouge_scores, rouge_tokenize
from tests.conftest import need_data

EDGE_CASES = [  # (hypotheses, reference streams)
    (["the cat sat on the mat"], [["the cat sat on a mat"]]),
    ([""], [["a reference sentence ."]]),  # empty hypothesis
    (["completely different words"], [["nothing in common here"]]),  # no overlap
    (["a cat is on the mat", "there is a dog"],
     [["the cat is on the mat", "a dog is there"], ["there is a cat on the mat", "there is a dog here"]]),
    (["Hello, world! 3.14 is pi-ish; x-1 & <tags>"], [["Hello , world ! 3.14 is pi-ish ; x - 1 &amp; <tags>"]]),
    (["short"], [["a much longer reference that has many words"], ["short one"]]),
    (["Ünïcödé — «quotes» 10,000 €5"], [["Ünïcödé - « quotes » 10,000 € 5"]]),
]


def multi30k() -> tuple[list[str], list[str]]:
    """Multi30k test 2016: the German source copied as the 'translation' (a simple baseline)."""
    src = need_data("multi30k", "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    ref = need_data("multi30k", "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    return src, ref


# --- BLEU ---------------------------------------------------------------------------------------
def test_bleu_hand_computed():
    # precisions 5/6, 3/5, 2/4, 1/3 and equal lengths: BLEU = 100 * (1/12)^(1/4)
    score = corpus_bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert score.counts == [5, 3, 2, 1] and score.totals == [6, 5, 4, 3]
    assert score.score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-12)
    assert score.bp == 1.0
    assert score.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:lmlab-")


def test_bleu_brevity_penalty_and_empty():
    score = corpus_bleu(["the cat"], [["the cat sat on the mat"]], smooth_method="none", use_effective_order=True)
    assert score.bp == pytest.approx(math.exp(1 - 6 / 2))
    assert score.score == pytest.approx(100 * math.exp(1 - 6 / 2))  # both precisions are 1
    assert corpus_bleu([""], [["anything"]]).score == 0.0


def test_bleu_tokenizers():
    assert bleu_tokenize("Hello, world! 3.14 x-1 &amp;", "13a") == "Hello , world ! 3.14 x-1 &"
    assert bleu_tokenize("«Hi», 10,000€", "intl") == "« Hi » , 10,000 €"
    assert bleu_tokenize("as is ,", "none") == "as is ,"
    from lmlab.eval.bleu import _intl_patterns

    ascii_text = "".join(chr(c) for c in range(32, 127)) + " a.b 1.5 x,y (z) $3 'q' a-b 2-3"
    full, fast = ascii_text, ascii_text  # the ASCII fast path gives what the full Unicode classes give
    for (p_full, r_full), (p_fast, r_fast) in zip(_intl_patterns(False), _intl_patterns(True), strict=True):
        full, fast = p_full.sub(r_full, full), p_fast.sub(r_fast, fast)
    assert full == fast


def test_bleu_bad_arguments():
    with pytest.raises(ConfigError):
        corpus_bleu(["a"], [["a"]], smooth_method="bogus")
    with pytest.raises(ConfigError):
        corpus_bleu(["a"], ["a"])  # a stream, not a list of streams
    with pytest.raises(InputError):
        corpus_bleu(["a", "b"], [["a"]])


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
@pytest.mark.parametrize("tokenize", ["13a", "intl", "none"])
@pytest.mark.parametrize("smooth", ["exp", "floor", "add-k", "none"])
def test_bleu_equals_sacrebleu_on_edge_cases(case, tokenize, smooth):
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps, refs = EDGE_CASES[case]
    for lowercase in (False, True):
        ours = corpus_bleu(hyps, refs, tokenize=tokenize, smooth_method=smooth, lowercase=lowercase)
        theirs = sacrebleu.corpus_bleu(hyps, refs, tokenize=tokenize, smooth_method=smooth, lowercase=lowercase)
        assert ours.score == pytest.approx(theirs.score, abs=1e-9)
        assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
        for i, hyp in enumerate(hyps):
            seg = [r[i] for r in refs]
            ours_s = sentence_bleu(hyp, seg, tokenize=tokenize, smooth_method=smooth)
            theirs_s = sacrebleu.sentence_bleu(hyp, seg, tokenize=tokenize, smooth_method=smooth)
            assert ours_s.score == pytest.approx(theirs_s.score, abs=1e-9)


@pytest.mark.parametrize("tokenize", ["13a", "intl"])
def test_bleu_equals_sacrebleu_on_multi30k(tokenize):
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps, refs = multi30k()
    second = refs[1:] + refs[:1]  # a second (wrong) reference stream exercises multi-reference code
    for streams in ([refs], [refs, second]):
        for smooth in ("exp", "add-k"):
            ours = corpus_bleu(hyps, streams, tokenize=tokenize, smooth_method=smooth)
            theirs = sacrebleu.corpus_bleu(hyps, streams, tokenize=tokenize, smooth_method=smooth)
            assert ours.score == pytest.approx(theirs.score, abs=1e-9)
            assert ours.counts == theirs.counts and ours.totals == theirs.totals
    assert corpus_bleu(hyps, [refs], tokenize=tokenize).signature.split("|version")[0] == \
        f"nrefs:1|case:mixed|eff:no|tok:{tokenize}|smooth:exp"


# --- chrF ---------------------------------------------------------------------------------------
def test_chrf_hand_computed():
    assert sentence_chrf("ab", ["ab"]).score == pytest.approx(100.0)
    # unigrams P = R = 1/2, bigrams 0/1: averaged P = R = 1/4 so F = 25
    assert sentence_chrf("ab", ["ac"]).score == pytest.approx(25.0)
    assert sentence_chrf("", ["abc"]).score == 0.0
    plus = corpus_chrf(["ab"], [["ab"]], word_order=2)
    assert plus.name == "chrF2++" and "nw:2" in plus.signature


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_equals_sacrebleu_on_edge_cases(case, word_order):
    metrics = pytest.importorskip("sacrebleu.metrics")
    hyps, refs = EDGE_CASES[case]
    for eps in (False, True):
        ours = corpus_chrf(hyps, refs, word_order=word_order, eps_smoothing=eps)
        theirs = metrics.CHRF(word_order=word_order, eps_smoothing=eps).corpus_score(hyps, refs)
        assert ours.score == pytest.approx(theirs.score, abs=1e-9)


def test_chrf_equals_sacrebleu_on_multi30k():
    metrics = pytest.importorskip("sacrebleu.metrics")
    hyps, refs = multi30k()
    for word_order in (0, 2):
        ours = corpus_chrf(hyps, [refs], word_order=word_order)
        peer = metrics.CHRF(word_order=word_order)
        assert ours.score == pytest.approx(peer.corpus_score(hyps, [refs]).score, abs=1e-9)
        assert ours.signature.split("|version")[0] == peer.get_signature().format().split("|version")[0]


# --- ROUGE --------------------------------------------------------------------------------------
def test_rouge_hand_computed():
    s = rouge_scores("the cat was found under the bed", "the cat was under the bed")
    assert s["rouge1"].precision == 1.0 and s["rouge1"].recall == pytest.approx(6 / 7)
    assert s["rouge2"].precision == pytest.approx(4 / 5) and s["rouge2"].recall == pytest.approx(4 / 6)
    assert s["rougeL"].fmeasure == pytest.approx(2 * 1 * (6 / 7) / (1 + 6 / 7))
    assert rouge_tokenize("Running dogs, quickly!", stem=True) == ["run", "dog", "quickli"]
    assert rouge_scores("", "anything")["rougeL"].fmeasure == 0.0
    with pytest.raises(ConfigError):
        rouge_scores("a", "b", ["rougeX"])


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_equals_rouge_score(stem):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    hyps, refs = multi30k()
    hyps, refs = hyps[:150], refs[:150]
    pairs = list(zip(refs, hyps, strict=True))
    pairs += [("\n".join(refs[i:i + 3]), "\n".join(refs[i + 1:i + 4][::-1])) for i in range(0, 60, 3)]
    pairs += [("", ""), ("", "x"), ("The cats were running.\nDogs barked", "a cat runs\n\nthe dogs bark")]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=stem)
    for ref, hyp in pairs:
        ours, theirs = rouge_scores(ref, hyp, stem=stem), scorer.score(ref, hyp)
        for kind, prf in theirs.items():
            assert (ours[kind].precision, ours[kind].recall, ours[kind].fmeasure) == pytest.approx(tuple(prf),
                                                                                                   abs=1e-12)
    means = corpus_rouge(hyps, [refs], stem=stem)
    expected = sum(scorer.score(r, h)["rouge1"].fmeasure for r, h in zip(refs, hyps, strict=True)) / len(hyps)
    assert means["rouge1"] == pytest.approx(expected, abs=1e-12)
    assert ("stem:porter" in means["signature"]) == stem


# --- SQuAD EM / F1 --------------------------------------------------------------------------------
def test_squad_normalisation_em_and_f1():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the eiffel tower", "Eiffel Tower.") == 1.0
    assert exact_match("Paris", ["London", "paris"]) == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    # pred {paris, france}, gold {paris}: P = 1/2, R = 1 → F1 = 2/3
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert token_f1("London", ["Paris", "in London"]) == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("a", "") == 1.0  # 'a' is an article: both normalise to empty
    assert token_f1("x", "") == 0.0
