"""Contrastive decoding equals its formula (on hand-made distributions and through the loop with two
table models), contrastive search equals a cache-free reference, FUDGE reweights as its formula says,
and an lmlab classifier plugs in as FUDGE's prefix scorer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_protocol_and_sampling import Markov  # a first-order model over a hand-made table
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.classify import LogisticRegression
from lmlab.classify.guidance import label_reward, prefix_scorer
from lmlab.core.errors import ModelError
from lmlab.generate.contrastive_search import ContrastiveSearch, degeneration_penalty
from lmlab.generate.engine import Engine, Request
from lmlab.generate.guided import Contrastive, Fudge, contrastive_scores, fudge_scores
from lmlab.generate.settings import DecodingSettings
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.ngram.model import NgramLM
from lmlab.tokenizers import WordLevelTokenizer

NEG_INF = float("-inf")


def tables(vocab: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    expert = torch.rand(vocab, vocab, generator=g, dtype=torch.float64) ** 3
    amateur = torch.rand(vocab, vocab, generator=g, dtype=torch.float64) ** 3
    return expert / expert.sum(1, keepdim=True), amateur / amateur.sum(1, keepdim=True)


def test_contrastive_scores_on_hand_made_distributions():
    expert = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    amateur = torch.tensor([[0.6, 0.1, 0.2, 0.1]]).log()
    got = contrastive_scores(expert, amateur, alpha=0.25)  # plausible: p ≥ 0.25 · 0.5 = 0.125
    want = [math.log(0.5 / 0.6), math.log(0.3 / 0.1), math.log(0.15 / 0.2), NEG_INF]
    assert got[0, :3].tolist() == pytest.approx(want[:3], abs=1e-6) and got[0, 3] == NEG_INF
    assert int(got.argmax()) == 1  # the expert's second choice: the amateur likes it least


def test_contrastive_decoding_follows_its_formula_through_the_loop():
    expert_table, amateur_table = tables()
    expert, amateur = Markov(expert_table), Markov(amateur_table)
    alpha, steps = 0.2, 8
    out = Engine(expert).generate([Request([0], settings=DecodingSettings(
        greedy=True, max_new_tokens=steps, stop_ids=(), method=Contrastive(amateur, alpha=alpha)))])[0]
    last, want = 0, []
    for _ in range(steps):  # by hand: argmax of log e − log a over {x: e(x) ≥ α max e}
        e, a = expert_table[last], amateur_table[last]
        plausible = e >= alpha * e.max()
        last = max((x for x in range(5) if plausible[x]), key=lambda x: math.log(e[x] / a[x]))
        want.append(last)
    assert out.ids == want
    beams = Engine(expert).generate([Request([0], settings=DecodingSettings(
        beam_size=3, n=3, max_new_tokens=steps, stop_ids=(), method=Contrastive(amateur, alpha=alpha)))])
    assert len(beams) == 3 and all(len(b.ids) == steps for b in beams)
    # every beam token is plausible under the expert at its step
    for beam in beams:
        prev = 0
        for x in beam.ids:
            assert expert_table[prev, x] >= alpha * expert_table[prev].max()
            prev = x


def test_an_amateur_with_another_vocabulary_is_refused():
    expert_table, _ = tables()
    with pytest.raises(ModelError, match="do not share a tokenizer"):
        Engine(Markov(expert_table)).generate([Request([0], settings=DecodingSettings(
            greedy=True, method=Contrastive(Markov(tables(4)[1]))))])


def tiny_transformer(vocab: int = 12) -> TransformerLM:
    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=vocab, d_model=32, n_layers=2, n_heads=4,
                                                     n_kv_heads=2, context_length=64)).eval()
    with torch.no_grad():
        lm.head.weight.mul_(3)
    return lm


def reference_contrastive_search(lm: TransformerLM, prompt: list[int], steps: int, alpha: float, k: int) -> list[int]:
    """Su et al.'s rule with a fresh forward pass of the whole sequence for every candidate (no cache)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            hidden, _ = lm.hidden_states(torch.tensor([ids]))
            probs = lm.logits(hidden[0, -1]).softmax(-1)
            top = probs.topk(k)
            best, best_score = None, -math.inf
            for p, c in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                h, _ = lm.hidden_states(torch.tensor([ids + [c]]))
                sims = F.cosine_similarity(h[0, -1:], hidden[0], dim=-1)
                score = (1 - alpha) * p - alpha * float(sims.max())
                if score > best_score:
                    best, best_score = c, score
            ids.append(best)
    return ids[len(prompt):]


def test_contrastive_search_equals_a_cache_free_reference():
    lm = tiny_transformer()
    engine = Engine(lm, decode_layout=False)
    for prompt, alpha, k in (([1, 2, 3], 0.6, 4), ([5, 5, 7, 1, 2], 0.3, 3)):
        want = reference_contrastive_search(lm, prompt, 10, alpha, k)
        method = ContrastiveSearch(penalty_alpha=alpha, top_k=k)
        outs = engine.generate([Request(prompt, settings=DecodingSettings(greedy=True, max_new_tokens=10,
                                                                          stop_ids=(), method=method)),
                                Request([4, 4], settings=DecodingSettings(greedy=True, max_new_tokens=6))])
        assert outs[0].ids == want
    assert degeneration_penalty(torch.eye(2), torch.eye(2)).tolist() == [1.0, 1.0]


def test_contrastive_search_needs_hidden_states():
    with pytest.raises(ModelError, match="hidden states"):
        Engine(Markov(tables()[0])).generate([Request([0], settings=DecodingSettings(
            greedy=True, method=ContrastiveSearch()))])


def test_fudge_scores_and_steering():
    logprobs = torch.tensor([[0.6, 0.3, 0.1]]).log()
    got = fudge_scores(logprobs, torch.tensor([[0, 1]]), torch.tensor([[math.log(0.1), math.log(0.9)]]), 2.0)
    assert got[0].tolist()[:2] == pytest.approx([math.log(0.6 * 0.1 ** 2), math.log(0.3 * 0.9 ** 2)])
    assert got[0, 2] == NEG_INF
    lm = tiny_transformer()
    engine = Engine(lm, decode_layout=False)

    def even(prefixes, prompt_length):  # the attribute: the last token is even
        return torch.tensor([0.0 if p[-1] % 2 == 0 else math.log(0.01) for p in prefixes])

    plain = engine.generate([Request([1, 2, 3], settings=DecodingSettings(greedy=True, max_new_tokens=12,
                                                                          stop_ids=()))])[0]
    settings = DecodingSettings(greedy=True, max_new_tokens=12, stop_ids=())
    weak = engine.generate([Request([1, 2, 3], settings=settings.with_(method=Fudge(even, strength=0.0)))])[0]
    strong = engine.generate([Request([1, 2, 3], settings=settings.with_(method=Fudge(even, 10.0, top_k=12)))])[0]
    assert weak.ids == plain.ids
    assert all(t % 2 == 0 for t in strong.ids) and any(t % 2 for t in plain.ids)
    ids = [1, 2, 3]  # by hand: each step's argmax of log p(x) + λ log p(even | x) over all x
    for _ in range(12):
        lp = lm.next_logprobs(torch.tensor([ids]), lm.initial_state(1))[0][0]
        ids.append(int((lp + 10.0 * even([[x] for x in range(12)], 0)).argmax()))
    assert strong.ids == ids[3:]


def test_an_lmlab_classifier_scores_prefixes_and_rewards():
    texts = ["good great fine", "great good", "bad awful", "awful bad poor", "good", "bad"]
    clf = LogisticRegression(max_iter=100).fit(texts, ["pos", "pos", "neg", "neg", "pos", "neg"])
    tok = WordLevelTokenizer("word").train(texts)
    prompt = tok.encode("good")
    scorer = prefix_scorer(clf, tok, "pos")
    prefixes = [prompt + tok.encode("great"), prompt + tok.encode("awful bad"), prompt + [tok.eos_id]]
    got = scorer(prefixes, len(prompt)).tolist()
    want = clf.predict_proba(["great", "awful bad"])[:, clf.classes.index("pos")]
    assert got[:2] == pytest.approx([math.log(p) for p in want], rel=1e-5)
    assert got[2] == pytest.approx(math.log(0.5))  # nothing to classify: the uniform probability
    assert label_reward(clf, "neg")(["awful"]) == pytest.approx(clf.predict_proba(["awful"])[:, 0].tolist())
    with pytest.raises(Exception, match="no label 'meh'"):
        prefix_scorer(clf, tok, "meh")


def test_an_ngram_amateur_runs_beside_a_transformer_expert():
    words = WordLevelTokenizer("char").train(["abcdefghijk"])
    lm = tiny_transformer(words.vocab_size)
    amateur = NgramLM.fit_corpus(["abcabc", "cabbage"], words, order=2, smoothing="wb")
    out = Engine(lm, decode_layout=False).generate([Request([1, 5, 6], settings=DecodingSettings(
        greedy=True, max_new_tokens=6, stop_ids=(), method=Contrastive(amateur, alpha=0.1)))])[0]
    assert len(out.ids) == 6
