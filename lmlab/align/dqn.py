"""DQN (Mnih et al. 2015): Q-learning with a replay buffer, a target network and ε-greedy exploration.

The RL lecture's bridge from value-based control to policy gradients: the agent learns
Q(s, a) ≈ r + γ max_a' Q_target(s', a') from transitions replayed at random (breaking the correlation
of consecutive steps), with the bootstrap target from a copy of the network refreshed every
``target_update`` environment steps, and acts ε-greedily with ε decaying linearly. The Huber loss
and gradient clipping are the paper's; ``double=True`` takes a' from the online network (van Hasselt
et al. 2016). Environments follow the Gymnasium API (``gymnasium`` is an optional dependency; the
defaults are RL Zoo's tuned CartPole-v1 settings, as stable-baselines3 ships them).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.optional import import_optional
from ..core.validate import check_number


@dataclass
class DQNConfig:
    """The agent's and the schedule's settings (steps are environment steps)."""

    total_steps: int = 50_000
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    batch_size: int = 64
    gamma: float = 0.99
    lr: float = 2.3e-3
    train_freq: int = 256  # environment steps between training rounds
    gradient_steps: int = 128  # gradient steps per round
    target_update: int = 10  # environment steps between target-network copies
    eps_start: float = 1.0
    eps_end: float = 0.04
    exploration_fraction: float = 0.16  # share of total_steps over which ε decays
    hidden: tuple[int, ...] = (256, 256)
    max_grad_norm: float = 10.0
    double: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("total_steps", "buffer_size", "batch_size", "train_freq", "gradient_steps", "target_update"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_number("learning_starts", self.learning_starts, low=0, integer=True)
        check_number("gamma", self.gamma, low=0.0, high=1.0)
        check_number("lr", self.lr, low=0.0, low_inclusive=False)
        for name in ("eps_start", "eps_end", "exploration_fraction"):
            check_number(name, getattr(self, name), low=0.0, high=1.0)


class ReplayBuffer:
    """A ring buffer of (state, action, reward, next state, terminal) transitions, sampled uniformly."""

    def __init__(self, capacity: int, state_dim: int) -> None:
        self.capacity, self.size, self.at = capacity, 0, 0
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=np.float32)

    def add(self, state, action: int, reward: float, next_state, terminal: bool) -> None:
        i = self.at
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.terminal[i] = next_state, float(terminal)
        self.at = (self.at + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        idx = rng.integers(0, self.size, size=batch_size)
        return {"states": torch.from_numpy(self.states[idx]), "actions": torch.from_numpy(self.actions[idx]),
                "rewards": torch.from_numpy(self.rewards[idx]), "next_states": torch.from_numpy(self.next_states[idx]),
                "terminal": torch.from_numpy(self.terminal[idx])}


def q_network(state_dim: int, n_actions: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """An MLP from a state to one Q-value per action."""
    layers: list[nn.Module] = []
    width = state_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_actions))


def epsilon_at(step: int, config: DQNConfig) -> float:
    """ε after ``step`` environment steps: linear from eps_start to eps_end over the exploration share."""
    span = max(config.exploration_fraction * config.total_steps, 1)
    return config.eps_start + min(step / span, 1.0) * (config.eps_end - config.eps_start)


def td_targets(batch: dict[str, torch.Tensor], online: nn.Module, target: nn.Module, gamma: float,
               double: bool = False) -> torch.Tensor:
    """r + γ (1 − terminal) Q_target(s', a*), a* = argmax Q_target(s', ·) (or of Q_online for double DQN)."""
    with torch.no_grad():
        next_q = target(batch["next_states"])
        if double:
            best = online(batch["next_states"]).argmax(1, keepdim=True)
            bootstrap = next_q.gather(1, best).squeeze(1)
        else:
            bootstrap = next_q.max(1).values
        return batch["rewards"] + gamma * (1 - batch["terminal"]) * bootstrap


def greedy_returns(q: nn.Module, make_env: Callable[[], Any], episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of the greedy policy over ``episodes`` evaluation episodes."""
    env = make_env()
    out = []
    for k in range(episodes):
        state, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = int(q(torch.as_tensor(state, dtype=torch.float32).unsqueeze(0)).argmax(1))
            state, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    env.close()
    return out


def cartpole() -> Any:
    """Gymnasium's CartPole-v1 (return threshold 475)."""
    gym = import_optional("gymnasium", "gymnasium", "DQN on CartPole")
    return gym.make("CartPole-v1")


def train_dqn(make_env: Callable[[], Any] = cartpole, config: DQNConfig | None = None, *, eval_every: int = 2_500,
              eval_episodes: int = 10, threshold: float | None = 475.0,
              stop_at_threshold: bool = False) -> dict[str, Any]:
    """Train a DQN agent; greedy evaluations every ``eval_every`` steps; the first step where their mean
    return reaches ``threshold`` is ``steps_to_threshold`` (None if never)."""
    config = config or DQNConfig()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    env = make_env()
    state_dim, n_actions = env.observation_space.shape[0], env.action_space.n
    online = q_network(state_dim, n_actions, tuple(config.hidden))
    target = copy.deepcopy(online).requires_grad_(False)
    optimizer = torch.optim.Adam(online.parameters(), lr=config.lr)
    buffer = ReplayBuffer(config.buffer_size, state_dim)
    state, _ = env.reset(seed=config.seed)
    episode_return, episodes, evaluations, losses = 0.0, [], [], []
    reached, began = None, time.perf_counter()
    for step in range(1, config.total_steps + 1):
        if rng.random() < epsilon_at(step, config):
            action = int(rng.integers(n_actions))
        else:
            with torch.no_grad():
                action = int(online(torch.as_tensor(state, dtype=torch.float32).unsqueeze(0)).argmax(1))
        next_state, reward, terminated, truncated, _ = env.step(action)
        buffer.add(state, action, reward, next_state, terminated)  # a time-limit cut is not a terminal state
        episode_return += float(reward)
        state = next_state
        if terminated or truncated:
            episodes.append(episode_return)
            episode_return = 0.0
            state, _ = env.reset()
        if step > config.learning_starts and step % config.train_freq == 0:
            for _ in range(config.gradient_steps):
                batch = buffer.sample(config.batch_size, rng)
                q = online(batch["states"]).gather(1, batch["actions"].unsqueeze(1)).squeeze(1)
                loss = F.smooth_l1_loss(q, td_targets(batch, online, target, config.gamma, config.double))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(online.parameters(), config.max_grad_norm)
                optimizer.step()
                losses.append(float(loss.detach()))
        if step % config.target_update == 0:
            target.load_state_dict(online.state_dict())
        if eval_every and step % eval_every == 0:
            mean = float(np.mean(greedy_returns(online, make_env, eval_episodes, seed=10_000 + step)))
            evaluations.append({"step": step, "mean_return": mean})
            if threshold is not None and reached is None and mean >= threshold:
                reached = step
                if stop_at_threshold:
                    break
    env.close()
    return {"config": asdict(config), "episodes": len(episodes), "episode_returns": episodes,
            "evaluations": evaluations, "steps_to_threshold": reached, "threshold": threshold,
            "final_loss": losses[-1] if losses else None, "seconds": time.perf_counter() - began,
            "q_network": online}
