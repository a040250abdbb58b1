"""DQN's parts by hand (replay ring, ε schedule, TD targets) and a short CartPole run that learns;
unlikelihood's loss by hand and its repetition measure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.align.dqn import (
    DQNConfig,
    ReplayBuffer,
    epsilon_at,
    greedy_returns,
    td_targets,
    train_dqn,
)
from lmlab.align.unlikelihood import UnlikelihoodObjective, repetition
from lmlab.core.errors import ConfigError


def test_replay_buffer_is_a_ring():
    buf = ReplayBuffer(3, 2)
    for i in range(5):
        buf.add([i, i], i, float(i), [i + 1, i + 1], i == 4)
    assert buf.size == 3 and buf.at == 2
    assert sorted(buf.actions.tolist()) == [2, 3, 4]
    sample = buf.sample(50, np.random.default_rng(0))
    assert set(sample["actions"].tolist()) <= {2, 3, 4}
    torch.testing.assert_close(sample["next_states"][:, 0], sample["states"][:, 0] + 1)


def test_epsilon_decays_linearly_then_stays():
    cfg = DQNConfig(total_steps=1000, exploration_fraction=0.2, eps_start=1.0, eps_end=0.1)
    assert epsilon_at(0, cfg) == 1.0
    assert epsilon_at(100, cfg) == pytest.approx(0.55)
    assert epsilon_at(200, cfg) == pytest.approx(0.1) and epsilon_at(900, cfg) == pytest.approx(0.1)


def test_td_targets_by_hand():
    q_next = torch.tensor([[1.0, 3.0], [2.0, -1.0]])
    q_online = torch.tensor([[5.0, 0.0], [0.0, 4.0]])
    target = lambda s: q_next  # noqa: E731
    online = lambda s: q_online  # noqa: E731
    batch = {"rewards": torch.tensor([1.0, 0.5]), "terminal": torch.tensor([0.0, 1.0]),
             "next_states": torch.zeros(2, 1)}
    torch.testing.assert_close(td_targets(batch, online, target, 0.9), torch.tensor([1 + 0.9 * 3.0, 0.5]))
    # double DQN: a* from the online network (action 0 for row 1), valued by the target network
    torch.testing.assert_close(td_targets(batch, online, target, 0.9, double=True), torch.tensor([1 + 0.9 * 1.0, 0.5]))


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="gamma"):
        DQNConfig(gamma=1.5)


def test_dqn_learns_cartpole_in_a_few_thousand_steps():
    pytest.importorskip("gymnasium")
    from lmlab.align.dqn import cartpole

    config = DQNConfig(total_steps=3000, learning_starts=500, exploration_fraction=0.3, seed=0)
    result = train_dqn(cartpole, config, eval_every=0)
    before = np.mean(greedy_returns(torch.nn.Linear(4, 2).requires_grad_(False), cartpole, 5, seed=1))
    after = np.mean(greedy_returns(result["q_network"], cartpole, 5, seed=1))
    assert result["episodes"] > 10
    assert after > 100 > before  # an untrained net balances ~10 steps; random actions ~20


class _FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, ids, state=None, mask=None):
        return self.logits, None


def test_unlikelihood_loss_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 5)
    inputs, targets = torch.tensor([[1, 2, 1]]), torch.tensor([[2, 1, 3]])
    loss, n = UnlikelihoodObjective(alpha=0.5)(_FixedLogits(logits), {"input": inputs, "target": targets})
    p = logits.softmax(-1)[0]
    mle = -sum(math.log(p[t, targets[0, t]]) for t in range(3)) / 3
    # candidates: tokens seen so far, minus the target: t0 {1}; t1 {1, 2} − {1} = {2}; t2 {1, 2}
    ul = -(math.log(1 - p[0, 1]) + math.log(1 - p[1, 2]) + math.log(1 - p[2, 1]) + math.log(1 - p[2, 2])) / 3
    assert n == 3 and float(loss) == pytest.approx(mle + 0.5 * ul, rel=1e-5)
    given = UnlikelihoodObjective(alpha=1.0, candidates="given", negative_ids=[4, 3])
    loss, _ = given(_FixedLogits(logits), {"input": inputs, "target": targets})
    ul = -(math.log(1 - p[0, 4]) + math.log(1 - p[0, 3]) + math.log(1 - p[1, 4]) + math.log(1 - p[1, 3])
           + math.log(1 - p[2, 4])) / 3  # position 2's target is 3: not a negative there
    assert float(loss) == pytest.approx(mle + ul, rel=1e-5)


def test_repetition_measures():
    out = repetition([[1, 2, 3, 1, 2, 3], [5, 6, 7, 8]], n=3)
    assert out["seq_rep_3"] == pytest.approx((1 - 3 / 4 + 0.0) / 2)
    assert out["distinct_tokens"] == pytest.approx((0.5 + 1.0) / 2)
