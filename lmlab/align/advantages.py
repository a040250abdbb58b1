"""Advantage estimators of the policy-gradient core: the one thing (with the baseline) that tells
REINFORCE, RLOO, PPO and GRPO apart.

Per-token quantities are [B, T] tensors over the completion tokens (right-padded, ``mask`` marks
real tokens); per-sequence ones are [B]. Rollouts of one prompt are consecutive rows (groups).

* ``reward_to_go`` — REINFORCE's return from each token on (Williams 1992), discounted by γ.
* ``gae`` — generalised advantage estimation (Schulman et al. 2016) from a learned value, PPO's.
* ``group_advantages`` — GRPO's outcome supervision (Shao et al. 2024): (r − mean_group) / std.
* ``rloo_advantages`` — RLOO's leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024).
* ``process_advantages`` — GRPO's process supervision: step rewards normalised over the group,
  each token's advantage the sum of the normalised rewards of the steps at or after it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_number

SCALES = ("group", "batch", "none")
STD_EPS = 1e-4  # as TRL's GRPOTrainer, so a group of equal rewards gives advantages 0, not NaN


def check_group(rewards: torch.Tensor, group_size: int, method: str) -> int:
    """The number of groups; refuses a group of one (no baseline) and a batch that is not whole groups."""
    check_number("group_size", group_size, low=1, integer=True)
    if group_size < 2:
        raise ConfigError(f"{method} compares the completions of one prompt with each other, and a group "
                          "of 1 has nothing to compare with", "use --group-size 2 or more (e.g. 8)")
    if rewards.shape[0] % group_size:
        raise ConfigError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}",
                          "give group_size completions per prompt")
    return rewards.shape[0] // group_size


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """GRPO's advantages [N] of N = prompts × group_size rewards: minus the group mean, divided by the
    group's standard deviation (``scale="group"``), the batch's (``"batch"``) or nothing (``"none"``,
    Dr. GRPO's choice: the division biases towards easy and hard prompts)."""
    check_choice("scale", scale, SCALES)
    groups = check_group(rewards, group_size, "GRPO")
    grouped = rewards.view(groups, group_size)
    advantages = (grouped - grouped.mean(1, keepdim=True)).reshape(-1)
    if scale == "group":
        advantages = advantages / (grouped.std(1).repeat_interleave(group_size) + STD_EPS)
    elif scale == "batch":
        advantages = advantages / (rewards.std() + STD_EPS)
    return advantages


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r_i − mean of the other completions' rewards for the same prompt (an unbiased baseline)."""
    groups = check_group(rewards, group_size, "RLOO")
    grouped = rewards.view(groups, group_size)
    others = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{k ≥ t} γ^{k−t} r_k over each row's real tokens [B, T] (zero on padding)."""
    check_number("gamma", gamma, low=0.0, high=1.0)
    rewards = rewards * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running * mask[:, t]
        out[:, t] = running
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) [B, T] by GAE(γ, λ): δ_t = r_t + γ V_{t+1} − V_t with V = 0 after the last
    real token, A_t = Σ (γλ)^k δ_{t+k}; returns = A + V (the value targets)."""
    check_number("gamma", gamma, low=0.0, high=1.0)
    check_number("lam", lam, low=0.0, high=1.0)
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running * (mask[:, t + 1] if t + 1 < values.shape[1] else 0)) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def process_advantages(step_rewards: Sequence[Sequence[float]], step_ends: Sequence[Sequence[int]],
                       lengths: Sequence[int], group_size: int) -> torch.Tensor:
    """GRPO with process supervision [N, T]: ``step_rewards[i][k]`` rewards the step of completion i that
    ends at token ``step_ends[i][k]`` (inclusive, 0-based); rewards are normalised by the mean and std
    of all step rewards in the completion's group, and token t's advantage is the sum over the steps
    ending at or after t."""
    n = len(step_rewards)
    if not (len(step_ends) == len(lengths) == n):
        raise ConfigError("step_rewards, step_ends and lengths must describe the same completions")
    check_group(torch.zeros(n), group_size, "GRPO")
    width = max(lengths, default=0)
    out = torch.zeros(n, max(width, 1))
    for start in range(0, n, group_size):
        pooled = torch.tensor([r for i in range(start, start + group_size) for r in step_rewards[i]],
                              dtype=torch.float32)
        if pooled.numel() == 0:
            continue
        mean = pooled.mean()
        std = pooled.std() if pooled.numel() > 1 else torch.tensor(0.0)
        for i in range(start, start + group_size):
            if len(step_rewards[i]) != len(step_ends[i]):
                raise ConfigError(f"completion {i} has {len(step_rewards[i])} step rewards but "
                                  f"{len(step_ends[i])} step ends")
            for reward, end in zip(step_rewards[i], step_ends[i], strict=True):
                if not 0 <= end < lengths[i]:
                    raise ConfigError(f"completion {i}: a step ends at token {end}, outside its "
                                      f"{lengths[i]} tokens")
                out[i, :end + 1] += (reward - mean) / (std + STD_EPS)
    return out


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Values scaled to unit variance (and zero mean) over the real tokens: PPO's advantage whitening."""
    mask = mask.to(values.dtype)
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = (((values - mean) * mask) ** 2).sum() / (count - 1).clamp(min=1)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask
