"""Hand-computed probabilities for every estimator on a toy corpus, and protocol properties.

Toy corpus: "<s> a b </s>" and "<s> b a b </s>". Predicted tokens: a×2, b×3, </s>×2 (N = 7);
predictable ids V' = {<unk>, </s>, a, b} (|V'| = 4); bigrams: <s> a, a b ×2, b </s> ×2, <s> b, b a.
"""

import math

import numpy as np
import pytest
import torch

from lmlab.core import ConfigError, DataError
from lmlab.data import from_texts
from lmlab.lm import LanguageModel
from lmlab.ngram import SMOOTHINGS, NgramLM, UnigramLM
from lmlab.ngram.smoothing import good_turing_discounts, kn_discount, modified_kn_discounts
from lmlab.tokenizers import WordLevelTokenizer

TOY = ["a b", "b a b"]
TRAIN = ["the cat sat on the mat", "the dog sat on the log", "a cat ran", "the cat", "a dog",
         "the the cat sat", "a b c d e f", "the cat sat on a log", "on the mat sat a dog"]
OPTIONS = {"abs": {"discount": 0.5}, "abs-backoff": {"discount": 0.5}, "kn": {"discount": 0.5},
           "mkn": {"discount": [0.5, 1.0, 1.5]}, "jm": {"lambdas": None}}


@pytest.fixture(scope="module")
def toy():
    tok = WordLevelTokenizer("word").train(TOY)
    return tok


def fit(tok, order, smoothing, texts=TOY, **kw):
    return NgramLM.fit_corpus(from_texts(texts), tok, order=order, smoothing=smoothing, **kw)


def prob(lm, tok, history, word):
    """p(word | <s> history…) through the protocol's next_logprobs."""
    ids = [tok.bos_id] + [tok.token_to_id(w) for w in history]
    lp, _ = lm.next_logprobs(torch.tensor([ids]), lm.initial_state(1))
    target = tok.eos_id if word == "</s>" else tok.unk_id if word == "<unk>" else tok.token_to_id(word)
    return math.exp(lp[0, target].item())


@pytest.mark.parametrize("smoothing,kw,history,word,expected", [
    ("add-k", {"k": 1.0}, ["a"], "b", 3 / 6),            # (c(a b)+1) / (c(a)+|V'|)
    ("add-k", {"k": 1.0}, [], "a", 2 / 6),               # (c(<s> a)+1) / (c(<s>)+|V'|)
    ("add-k", {"k": 1.0}, ["b"], "</s>", 3 / 7),
    ("add-k", {"k": 0.5}, ["b"], "<unk>", 0.5 / 5),      # unseen word: k / (c(h)+k|V'|)
    ("mle", {}, ["b"], "</s>", 2 / 3),
    ("mle", {}, ["a"], "b", 1.0),
    ("mle", {}, ["b"], "<unk>", 0.0),
    # Witten-Bell: p1(</s>) = (2 + 3·¼)/(7+3) = 0.275; p(</s>|b) = (2 + 2·0.275)/(3+2)
    ("wb", {}, ["b"], "</s>", 2.55 / 5),
    ("wb", {}, ["b"], "<unk>", 2 / 5 * 3 / 4 / 10),
    # Jelinek-Mercer λ=(0.5, 0.8): p1(</s>) = 0.5·2/7 + 0.5/4; p = 0.8·2/3 + 0.2·p1
    ("jm", {"lambdas": [0.5, 0.8]}, ["b"], "</s>", 0.8 * 2 / 3 + 0.2 * (0.5 * 2 / 7 + 0.125)),
    # absolute discounting D=0.5: p1(</s>) = 1.5/7 + (0.5·3/7)/4; p = 1.5/3 + (0.5·2/3)·p1
    ("abs", {"discount": 0.5}, ["b"], "</s>", 0.5 + (1 / 3) * (1.5 / 7 + 1.5 / 28)),
    # backoff: p*(</s>|b) = 0.5, p*(a|b) = 0.5/3; bow(b) = (1/3)/(1 - 1.5/7 - 1.5/7) = 7/12
    ("abs-backoff", {"discount": 0.5}, ["b"], "</s>", 0.5),
    ("abs-backoff", {"discount": 0.5}, ["b"], "b", 7 / 12 * 2.5 / 7),
    ("abs-backoff", {"discount": 0.5}, ["b"], "<unk>", 7 / 12 * 1.5 / 7),
    # Kneser-Ney D=0.5: continuation counts a 2, b 2, </s> 1 (sum 5); γ0 = 0.5·3/5
    # context <s> (top order, raw counts <s> a 1, <s> b 1): (1-0.5)/2 + (0.5·2/2)·p1(a), p1(a) = 1.5/5 + 0.3/4
    ("kn", {"discount": 0.5}, [], "a", 0.25 + 0.5 * (1.5 / 5 + 0.3 / 4)),
    ("kn", {"discount": 0.5}, ["b"], "</s>", 1.5 / 3 + (0.5 * 2 / 3) * (0.5 / 5 + 0.3 / 4)),
    # modified KN D=(0.5, 1, 1.5): p1(</s>) = 0.5/5 + γ0/4 with γ0 = (0.5+1+1)/5; c(b </s>)=2 takes D2
    ("mkn", {"discount": [0.5, 1.0, 1.5]}, ["b"], "</s>", 1 / 3 + (1.5 / 3) * (0.1 + 0.5 / 4)),
    ("stupid", {}, ["b"], "</s>", 2 / 3),
    ("stupid", {}, ["b"], "b", 0.4 * 3 / 7),
])
def test_hand_computed_bigram_probabilities(toy, smoothing, kw, history, word, expected):
    lm = fit(toy, 2, smoothing, **kw)
    assert prob(lm, toy, history, word) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_kneser_ney_uses_continuation_counts_below_the_top_order(toy):
    # trigram KN: the bigram "a b" now counts its distinct left words {<s>, b} = 2, not its raw count 2…
    lm = fit(toy, 3, "kn", discount=0.5)
    # …and "b </s>" has left words {a} = 1 (both occurrences follow a): p2(</s>|b) uses adjusted counts
    # b's extensions (adjusted): </s> 1, a 1 → (1-0.5)/2 + (0.5·2/2)·p1(</s>)
    p1_eos = 0.5 / 5 + 0.3 / 4
    p2 = 0.5 / 2 + 0.5 * p1_eos
    # context "a b" (raw, top order): </s> ×2 → (2-0.5)/2 + (0.5·1/2)·p2
    assert prob(lm, toy, ["a", "b"], "</s>") == pytest.approx(1.5 / 2 + 0.25 * p2, rel=1e-12)


def test_discount_estimates_by_hand():
    counts = np.array([1] * 10 + [2] * 5 + [3] * 3 + [4] * 2 + [5] + [6])
    d = good_turing_discounts(counts)
    # common = 6·n6/n1 = 0.6; d_r = (r*/r − 0.6)/0.4 with r* = (r+1) n_{r+1}/n_r; d5 = 1.5 is unusable → 1
    assert d[1:].tolist() == pytest.approx([1.0, 0.75, (8 / 9 - 0.6) / 0.4, 0.0625, 1.0])
    assert kn_discount(counts, 2) == pytest.approx(10 / 20)
    y = 10 / 20
    assert modified_kn_discounts(counts, 2)[1:].tolist() == pytest.approx(
        [1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3])


def test_order_one_add_k_equals_the_unigram_reference(no_progress):
    tok = WordLevelTokenizer("word").train(TRAIN)
    for smoothing, k in (("add-k", 1.0), ("add-k", 0.25), ("mle", 1.0)):
        ref = UnigramLM.fit_corpus(from_texts(TRAIN), tok, smoothing=smoothing, k=k)
        lm = NgramLM.fit_corpus(from_texts(TRAIN), tok, order=1, smoothing=smoothing, k=k)
        assert np.allclose(lm.logprobs[0], ref.logprobs.numpy(), rtol=1e-13, atol=0)


@pytest.fixture(scope="module")
def train_tok():
    return WordLevelTokenizer("word").train(TRAIN)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 4])
def test_distributions_sum_to_one_and_fast_score_matches_protocol(train_tok, smoothing, order):
    tok = train_tok
    kw = dict(OPTIONS.get(smoothing, {}))
    if smoothing == "jm":
        kw["lambdas"] = [0.3, 0.6, 0.7, 0.8][:order]
    lm = fit(tok, order, smoothing, texts=TRAIN, **kw)
    rng = np.random.default_rng(order)
    words = [tok.token_to_id(w) for w in "the cat sat on a mat log dog".split()]
    for _ in range(6):
        history = [tok.bos_id] + list(rng.choice(words + [tok.unk_id], size=rng.integers(0, 5)))
        lp, _ = lm.next_logprobs(torch.tensor([history]), lm.initial_state(1))
        assert lp[0, tok.bos_id].item() == -math.inf and lp[0, tok.pad_id].item() == -math.inf
        if lm.normalized:
            assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        # stupid backoff gives scores, not probabilities: its rows need not sum to one
    ids = torch.tensor([[tok.bos_id] + tok.encode("the cat sat on the log zebra") + [tok.eos_id],
                        [tok.bos_id] + tok.encode("a dog ran on the mat cat") + [tok.eos_id]])
    fast, slow = lm.score(ids), LanguageModel.score(lm, ids)
    assert torch.equal(torch.isneginf(fast), torch.isneginf(slow))
    finite = torch.isfinite(slow)
    assert torch.allclose(fast[finite], slow[finite], rtol=1e-12, atol=1e-12)
    assert lm.normalized == (smoothing != "stupid")


def test_state_is_the_last_n_minus_one_ids(train_tok):
    lm = fit(train_tok, 3, "kn", texts=TRAIN)
    ids = torch.tensor([[1, 5, 6, 7]])
    _, state = lm.next_logprobs(ids, lm.initial_state(1))
    assert state.tolist() == [[6, 7]]
    again = lm.select_state(torch.cat([state, state + 1]), torch.tensor([1, 1, 0]))
    assert again.tolist() == [[7, 8], [7, 8], [6, 7]]


def test_high_orders_up_to_seven(train_tok):
    lm = fit(train_tok, 7, "mkn", texts=TRAIN * 3, discount=[0.5, 1.0, 1.5])
    assert lm.order == 7 and lm.sizes()[6] > 0
    lp, _ = lm.next_logprobs(torch.tensor([[1] + train_tok.encode("the cat sat on the")]), lm.initial_state(1))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_bad_settings(train_tok):
    with pytest.raises(ConfigError, match="order"):
        fit(train_tok, 0, "kn", texts=TRAIN)
    with pytest.raises(ConfigError, match="not supported"):
        fit(train_tok, 2, "good-luck", texts=TRAIN)
    with pytest.raises(ConfigError, match="three discounts"):
        fit(train_tok, 2, "mkn", texts=TRAIN, discount=[0.5])
    with pytest.raises(DataError, match="counts-of-counts|out of range"):
        fit(train_tok, 3, "mkn", texts=TRAIN)  # too little data for Chen & Goodman's estimates
    with pytest.raises(DataError, match="no documents"):
        fit(train_tok, 2, "kn", texts=[])
    with pytest.raises(DataError, match="no tokens"):
        fit(train_tok, 2, "kn", texts=["", " "])


def test_jelinek_mercer_weights_maximise_heldout_likelihood(train_tok):
    from lmlab.ngram import fit_jm_lambdas

    held = ["the cat sat on the log", "a dog sat", "cat dog on mat the"]
    lambdas = fit_jm_lambdas(from_texts(TRAIN), train_tok, 2, from_texts(held))
    assert all(0 < x < 1 for x in lambdas)
    rows = [[1] + train_tok.encode(h) + [2] for h in held]

    def loglik(lams):
        lm = fit(train_tok, 2, "jm", texts=TRAIN, lambdas=lams)
        return sum(float(lm.score(torch.tensor([r])).sum()) for r in rows)

    best = loglik(lambdas)
    for delta in (-0.05, 0.05):
        assert best >= loglik([lambdas[0], min(0.999, max(0.001, lambdas[1] + delta))])


def test_katz_reserves_a_count_where_good_turing_leaves_nothing():
    texts = ["a b"] * 6
    tok = WordLevelTokenizer("word").train(texts)
    lm = fit(tok, 2, "katz", texts=texts)
    # every continuation of "a" occurs 6 > 5 times, so Good-Turing leaves no mass: p*(b|a) = 6 / (6 + 1)
    assert prob(lm, tok, ["a"], "b") == pytest.approx(6 / 7, rel=1e-12)
    lp, _ = lm.next_logprobs(torch.tensor([[tok.bos_id, tok.token_to_id("a")]]), lm.initial_state(1))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(lp[0, tok.unk_id].item())
