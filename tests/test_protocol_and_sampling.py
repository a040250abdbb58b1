"""The protocol's generic parts (score, sampling) on a toy first-order Markov model."""

import math

import pytest
import torch

from lmlab.core import ConfigError, ModelError
from lmlab.generate import ancestral_sample
from lmlab.lm import LanguageModel, as_id_tensor


class Markov(LanguageModel):
    """p(next | last) from a fixed row-stochastic matrix; state = last token per row."""

    eos_id = 0

    def __init__(self, probs: torch.Tensor) -> None:
        self.table = probs.log()

    @property
    def vocab_size(self) -> int:
        return self.table.shape[0]

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, dtype=torch.long)

    def next_logprobs(self, tokens, state):
        last = tokens[:, -1]
        return self.table[last], last

    def select_state(self, state, index):
        return state[index]


P = torch.tensor([[0.1, 0.3, 0.6], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]], dtype=torch.float64)


def test_generic_score_gathers_each_next_token():
    lm = Markov(P)
    scores = lm.score(torch.tensor([[1, 2, 2, 0], [2, 1, 0, 1]]))
    expected = torch.tensor([[P[1, 2], P[2, 2], P[2, 0]], [P[2, 1], P[1, 0], P[0, 1]]]).log()
    assert torch.allclose(scores, expected)


def test_id_range_checked():
    with pytest.raises(ModelError, match="outside the model's vocabulary"):
        as_id_tensor([[0, 3]], 3)


def test_sampling_is_reproducible_and_follows_the_model():
    lm = Markov(P)
    a = ancestral_sample(lm, [1], max_new_tokens=20, num_samples=5, seed=11, stop_ids=[])
    b = ancestral_sample(lm, [1], max_new_tokens=20, num_samples=5, seed=11, stop_ids=[])
    assert [g.ids for g in a] == [g.ids for g in b]
    assert all(len(g.ids) == 20 and g.finish_reason == "length" for g in a)
    for g in a:  # reported log-probs are the model's transition log-probs
        prev = [1] + g.ids[:-1]
        assert g.logprobs == pytest.approx([math.log(P[p, t]) for p, t in zip(prev, g.ids, strict=True)])


def test_sampling_frequencies_match_distribution():
    lm = Markov(P)
    gens = ancestral_sample(lm, [1], max_new_tokens=1, num_samples=20000, seed=0, stop_ids=[])
    first = torch.bincount(torch.tensor([g.ids[0] for g in gens]), minlength=3).double() / 20000
    assert torch.allclose(first, P[1], atol=0.015)


def test_stop_ids_end_rows_independently():
    lm = Markov(P)
    gens = ancestral_sample(lm, [2], max_new_tokens=50, num_samples=30, seed=5)
    assert any(g.finish_reason == "stop" for g in gens)
    assert all(0 not in g.ids for g in gens)
    assert all(g.finish_reason == "stop" or len(g.ids) == 50 for g in gens)


def test_greedy_and_bad_arguments():
    lm = Markov(P)
    assert ancestral_sample(lm, [1], max_new_tokens=3, temperature=0, stop_ids=[])[0].ids == [0, 2, 2]
    with pytest.raises(ConfigError, match="temperature"):
        ancestral_sample(lm, [1], temperature=-1)
    with pytest.raises(ConfigError, match="no tokens"):
        ancestral_sample(lm, [])
