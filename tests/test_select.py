"""Sample-then-select: MBR picks the highest expected utility (by hand on a toy set, and with chrF/BLEU
equal to sacrebleu's), self-consistency votes with GSM8K's answer rules, a reward reranks, and all of
them rank best-of-n samples and beam hypotheses inside the decoding loop."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.eval.utility import task_answer, utility
from lmlab.generate.engine import Engine, Request
from lmlab.generate.output import Completion
from lmlab.generate.select import MBR, MajorityVote, Reward, expected_utilities, rerank
from lmlab.generate.settings import DecodingSettings, SettingError
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer

TOY = ["the cat sat", "the cat sat down", "a cat sat", "dogs run"]


def jaccard(hyps, refs):
    return [len(set(h.split()) & set(r.split())) / len(set(h.split()) | set(r.split())) for h, r in zip(hyps, refs, strict=True)]


def test_mbr_picks_the_highest_expected_utility_computed_by_hand():
    # word-set Jaccard between the four hypotheses, by hand (rows: hypothesis, columns: evidence)
    table = [[1, Fraction(3, 4), Fraction(2, 4), 0],
             [Fraction(3, 4), 1, Fraction(2, 5), 0],
             [Fraction(2, 4), Fraction(2, 5), 1, 0],
             [0, 0, 0, 1]]
    want = [float(sum(row) / 4) for row in table]  # 9/16, 43/80, 19/40, 1/4
    assert expected_utilities(TOY, jaccard) == pytest.approx(want)
    ranked = rerank([Completion(text=t) for t in TOY], MBR(jaccard))
    assert [c.text for c in ranked] == ["the cat sat", "the cat sat down", "a cat sat", "dogs run"]
    assert ranked[0].score == pytest.approx(9 / 16)


def test_metric_utilities_equal_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps, refs = TOY, TOY[::-1]
    chrf = sacrebleu.metrics.CHRF()
    bleu = sacrebleu.metrics.BLEU(effective_order=True)
    assert utility("chrf")(hyps, refs) == pytest.approx([chrf.sentence_score(h, [r]).score for h, r in zip(hyps, refs, strict=True)])
    assert utility("bleu")(hyps, refs) == pytest.approx([bleu.sentence_score(h, [r]).score for h, r in zip(hyps, refs, strict=True)])
    rouge = utility("rouge")(["the cat sat"], ["the cat sat down"])[0]
    assert rouge == pytest.approx(2 * 1.0 * 0.75 / 1.75)  # LCS 3: precision 3/3, recall 3/4
    chrf_mbr = expected_utilities(TOY, utility("chrf"))
    assert chrf_mbr[3] == min(chrf_mbr)


def test_self_consistency_votes_with_gsm8k_answer_rules():
    answer = task_answer("gsm8k")
    assert answer("So she pays $1,250.") == "1250"
    assert answer("3 apples and 4 pears make 7") == "7"
    assert answer("no number here") == "[invalid]"
    texts = ["She has 3 + 4 = 7 apples.", "The answer is 12", "so 7", "I cannot tell", "Total: 7.0"]
    ranked = rerank([Completion(text=t) for t in texts], MajorityVote(answer))
    assert ranked[0].text == texts[0] and ranked[0].info == {"answer": "7", "votes": 2, "hypotheses": 5}
    assert ranked[0].score == pytest.approx(2 / 5)  # "7.0" is another answer string for GSM8K's exact match
    assert [c.info["answer"] for c in ranked[-1:]] == ["[invalid]"] and ranked[-1].score == 0.0


@pytest.fixture(scope="module")
def lm_and_tok():
    tok = WordLevelTokenizer("char").train(["the cat sat on the mat and the dog ran far away"])
    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                                                     n_heads=4, n_kv_heads=2, context_length=64),
                       special_ids={"bos_id": tok.bos_id, "eos_id": tok.eos_id}).eval()
    return lm, tok


def test_selectors_rank_samples_and_beams_inside_the_loop(lm_and_tok):
    lm, tok = lm_and_tok
    engine = Engine(lm, tok, decode_layout=False)
    prompt = [tok.bos_id, *tok.encode("the ")]
    for search in ({"best_of": 6, "seed": 5}, {"beam_size": 4}):
        n = search.get("best_of", search.get("beam_size"))
        settings = DecodingSettings(max_new_tokens=8, n=n, select=MBR(utility("chrf"), "chrf"), **search)
        outs = engine.generate([Request(prompt, settings=settings)])
        texts = [o.text for o in outs]
        eu = expected_utilities(texts, utility("chrf"))
        assert [o.score for o in outs] == pytest.approx(eu) and eu == sorted(eu, reverse=True)
    settings = DecodingSettings(max_new_tokens=8, best_of=5, n=5, seed=1, select=Reward(lambda ts: [t.count("a")
                                                                                                      for t in ts]))
    outs = engine.generate([Request(prompt, settings=settings)])
    assert [o.score for o in outs] == sorted([float(o.text.count("a")) for o in outs], reverse=True)


def test_a_selector_needs_several_hypotheses_and_must_be_one():
    with pytest.raises(SettingError, match="best_of"):
        DecodingSettings(select=MBR(jaccard))
    for field in ("select", "method"):
        with pytest.raises(SettingError, match=f"{field} must be a"):
            DecodingSettings(best_of=2, **{field: "mbr"})
