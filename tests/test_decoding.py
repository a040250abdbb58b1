"""Decoding strategies × logits processors, on toy protocol models; processors vs transformers'."""

import itertools
import math

import pytest
import torch

from lmlab.core import ConfigError
from lmlab.generate import (
    Epsilon,
    Eta,
    FrequencyPresencePenalty,
    LogitBias,
    MinP,
    NoRepeatNgram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
    beam_search,
    best_of_n,
    diverse_beam_search,
    sample,
    standard_chain,
    stochastic_beam_search,
)
from tests.test_protocol_and_sampling import Markov, P

PROCESSORS = [Temperature(0.7), TopK(5), TopP(0.8), MinP(0.1), Typical(0.9), Epsilon(0.02), Eta(0.02),
              RepetitionPenalty(1.3), FrequencyPresencePenalty(0.5, 0.3), NoRepeatNgram(2), LogitBias({3: -100.0})]


@pytest.mark.parametrize("proc", PROCESSORS, ids=lambda p: type(p).__name__)
def test_every_processor_leaves_a_valid_distribution(proc):
    torch.manual_seed(0)
    scores = torch.randn(6, 40).log_softmax(-1)
    ids = torch.randint(0, 40, (6, 7))
    out = proc(scores, ids, 3)
    probs = out.softmax(-1)
    assert not torch.isnan(probs).any()
    assert torch.allclose(probs.sum(-1), torch.ones(6), atol=1e-6)
    assert torch.equal(out.argmax(-1), scores.argmax(-1)) or not isinstance(proc, (TopK, TopP, MinP, Epsilon, Eta))


def test_top_p_by_hand():
    scores = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    keep = lambda p: torch.isfinite(TopP(p)(scores, None, 0))[0].tolist()  # noqa: E731
    assert keep(0.8) == [True, True, False, False]
    assert keep(0.81) == [True, True, True, False]
    assert keep(0.4) == [True, False, False, False]
    assert keep(1.0) == [True, True, True, True]


def test_frequency_presence_only_count_generated_tokens():
    scores = torch.zeros(1, 5)
    ids = torch.tensor([[4, 4, 1, 1, 1, 2]])  # prompt = first two tokens
    out = FrequencyPresencePenalty(frequency=0.5, presence=1.0)(scores, ids, 2)
    assert out.tolist() == [[0.0, -2.5, -1.5, 0.0, 0.0]]


def test_no_repeat_ngram_by_hand():
    ids = torch.tensor([[1, 2, 3, 1, 2, 4, 1]])
    out = NoRepeatNgram(2)(torch.zeros(1, 6), ids, 0)
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [2]  # "1 2" seen: 2 is banned after 1


def test_invalid_settings_are_clear():
    with pytest.raises(ConfigError, match="top_p"):
        TopP(1.5)
    with pytest.raises(ConfigError, match="temperature"):
        Temperature(0)
    with pytest.raises(ConfigError, match="top_k"):
        TopK(0)


def _hf_pairs():
    lp = pytest.importorskip("transformers.generation.logits_process")
    return [(TopK(7), lp.TopKLogitsWarper(7)), (TopP(0.7), lp.TopPLogitsWarper(0.7)),
            (MinP(0.05), lp.MinPLogitsWarper(0.05)), (Typical(0.8), lp.TypicalLogitsWarper(0.8)),
            (Epsilon(0.03), lp.EpsilonLogitsWarper(0.03)), (Eta(0.03), lp.EtaLogitsWarper(0.03)),
            (Temperature(0.6), lp.TemperatureLogitsWarper(0.6)),
            (RepetitionPenalty(1.4), lp.RepetitionPenaltyLogitsProcessor(1.4)),
            (NoRepeatNgram(2), lp.NoRepeatNGramLogitsProcessor(2))]


def test_processors_equal_transformers_warpers():
    torch.manual_seed(1)
    for ours, theirs in _hf_pairs():
        for _ in range(5):
            scores = torch.randn(4, 64) * 3
            ids = torch.randint(0, 64, (4, 12))
            a, b = ours(scores.clone(), ids, 0), theirs(ids, scores.clone())
            assert torch.equal(torch.isfinite(a), torch.isfinite(b)), type(ours).__name__
            assert torch.allclose(a[torch.isfinite(a)], b[torch.isfinite(b)]), type(ours).__name__


def test_greedy_equals_top_k_1_and_beam_1():
    lm = Markov(P)
    greedy = sample(lm, [1], greedy=True, max_new_tokens=8, stop_ids=[])[0]
    topk1 = sample(lm, [1], processors=[TopK(1)], max_new_tokens=8, seed=4, stop_ids=[])[0]
    beam1 = beam_search(lm, [1], beam_size=1, max_new_tokens=8, stop_ids=[])[0]
    assert greedy.ids == topk1.ids == beam1.ids
    assert beam1.logprobs == pytest.approx(greedy.logprobs)


def _trap_model():
    # from 1: token 2 looks best (0.6) but leads to a flat row; token 0 (0.4) leads to a sure thing
    table = torch.tensor([[0.98, 0.01, 0.01], [0.4, 0.0, 0.6], [0.34, 0.33, 0.33]], dtype=torch.float64)
    return Markov(table.clamp_min(1e-12) / table.clamp_min(1e-12).sum(1, keepdim=True))


def test_beam_search_finds_what_greedy_misses():
    lm = _trap_model()
    greedy = sample(lm, [1], greedy=True, max_new_tokens=2, stop_ids=[])[0]
    beam = beam_search(lm, [1], beam_size=2, max_new_tokens=2, length_penalty=0.0, stop_ids=[])[0]
    assert greedy.ids[0] == 2 and beam.ids == [0, 0]
    assert sum(beam.logprobs) > sum(greedy.logprobs)


def test_beam_search_is_exact_with_a_wide_beam():
    lm = Markov(P)
    best = max(itertools.product(range(3), repeat=3),
               key=lambda seq: sum(math.log(P[a, b]) for a, b in zip((1,) + seq[:-1], seq, strict=True)))
    beams = beam_search(lm, [1], beam_size=27, max_new_tokens=3, length_penalty=0.0, stop_ids=[], num_return=27)
    assert tuple(beams[0].ids) == best
    assert len({tuple(b.ids) for b in beams}) == 27


def test_beam_stop_token_ends_hypotheses():
    lm = Markov(P)  # eos_id = 0
    beams = beam_search(lm, [2], beam_size=3, max_new_tokens=6, num_return=3)
    assert all(0 not in b.ids for b in beams)
    assert any(b.finish_reason == "stop" for b in beams)
    assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)


def test_diverse_beam_groups_differ():
    lm = Markov(P)
    plain = beam_search(lm, [1], beam_size=2, max_new_tokens=3, stop_ids=[], num_return=2)
    diverse = diverse_beam_search(lm, [1], beam_size=2, groups=2, diversity_penalty=10.0, max_new_tokens=3,
                                  stop_ids=[], num_return=2)
    assert diverse[0].ids[0] != diverse[1].ids[0]
    assert plain[0].ids == diverse[0].ids
    with pytest.raises(ConfigError, match="does not divide"):
        diverse_beam_search(lm, [1], beam_size=3, groups=2)


def test_stochastic_beam_samples_without_replacement():
    lm = Markov(P)
    out = stochastic_beam_search(lm, [1], beam_size=9, max_new_tokens=2, seed=0, stop_ids=[])
    assert sorted(tuple(g.ids) for g in out) == sorted(itertools.product(range(3), repeat=2))
    for g in out:
        assert g.score == pytest.approx(sum(g.logprobs))


def test_stochastic_beam_first_key_is_a_sample_of_the_model():
    lm = Markov(P)
    counts = torch.zeros(3)
    trials = 500  # fixed seeds: deterministic; 3 standard errors ≈ 0.07
    for seed in range(trials):
        counts[stochastic_beam_search(lm, [1], beam_size=2, max_new_tokens=1, seed=seed, stop_ids=[])[0].ids[0]] += 1
    assert torch.allclose(counts / trials, P[1].float(), atol=0.07)


def test_best_of_n_keeps_the_highest_mean_logprob():
    lm = Markov(P)
    pool = sample(lm, [1], max_new_tokens=5, num_samples=8, seed=3, stop_ids=[])
    best = best_of_n(lm, [1], 8, max_new_tokens=5, seed=3, stop_ids=[])[0]
    assert best.score == pytest.approx(max(g.mean_logprob for g in pool))


def test_standard_chain_order_and_logit_bias_ban():
    chain = standard_chain(temperature=0.5, top_k=3, repetition_penalty=1.2, logit_bias={2: -100.0})
    assert [type(p).__name__ for p in chain] == ["RepetitionPenalty", "LogitBias", "Temperature", "TopK"]
    lm = Markov(P)
    gens = sample(lm, [1], processors=[LogitBias({2: -100.0})], max_new_tokens=30, seed=0, stop_ids=[])
    assert 2 not in gens[0].ids
