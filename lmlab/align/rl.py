"""One policy-gradient core for REINFORCE, RLOO, PPO and GRPO, as an objective of the one trainer.

A method is a preset of ``RLConfig``; the loop is the same for all:

1. every ``epochs × minibatches`` optimizer steps, sample a rollout batch — ``group_size``
   completions for each of ``prompts_per_step`` prompts — with the current policy through the
   ``generate`` callable (the inference engine; seeds per row), and score it with the reward;
2. compute, without gradients, what the update compares with: the rollout policy's log-probs (when
   the batch is reused), the frozen reference's (the policy with its LoRA adapter off), the values;
3. the advantage estimator — the one part that differs (with the baseline): GRPO's group-normalised
   outcome or process advantages, RLOO's leave-one-out, REINFORCE's reward-to-go minus a moving or
   learned baseline, PPO's GAE(γ, λ) on a value head;
4. the loss on a minibatch: the clipped surrogate (no clipping = REINFORCE/RLOO), the KL to the
   reference in the loss (GRPO, k3) or in the reward (PPO/REINFORCE/RLOO, k1; fixed or adaptive,
   Ziegler et al. 2019), an entropy bonus, PPO's clipped value loss; aggregated per sequence, per
   token or by a constant (``lmlab.align.surrogate``).

The rollout batch, the moving baseline and the adaptive KL coefficient are the objective's state, so
a run resumed from any checkpoint continues exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.seed import make_generator
from ..core.validate import check_choice, check_keys, check_number
from .advantages import (
    SCALES,
    gae,
    group_advantages,
    process_advantages,
    reward_to_go,
    rloo_advantages,
    whiten,
)
from .logprobs import (
    Reference,
    n_tokens,
    per_row,
    row_counts,
    score_tokens,
    select_rows,
    to_rows,
    token_rows,
)
from .objectives import RunningMeans
from .preferences import Encoded, completion_batch
from .rewards import Reward, Sample, StepReward, checked
from .rollout import Generate, PromptItem, row_seeds, sample_rollouts
from .surrogate import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate,
    clipped_surrogate,
    kl_penalty,
    masked_mean,
    value_loss,
)

METHODS = ("grpo", "rloo", "reinforce", "ppo")
BASELINES = ("none", "moving", "learned")
KL_PLACES = ("loss", "reward")


@dataclass
class RLConfig:
    """Every knob of the policy-gradient core; ``RLConfig.preset(method)`` gives each method's defaults."""

    method: str = "grpo"
    group_size: int = 8
    prompts_per_step: int = 4
    max_new_tokens: int = 16
    temperature: float = 1.0
    epochs: int = 1  # optimisation passes over each rollout batch
    minibatches: int = 1  # optimizer steps per pass
    clip: float | None = 0.2  # ε of the clipped ratio (None: no clipping)
    clip_high: float | None = None  # DAPO's clip-higher (default: = clip)
    kl_coef: float = 0.04
    kl_in: str = "loss"  # "loss" (GRPO, k3 per token) or "reward" (a k1 penalty on each token's reward)
    kl_estimator: str = "k3"
    kl_target: float | None = None  # adaptive KL: aim the rollout KL at this many nats per sequence
    kl_horizon: int = 10_000
    entropy_coef: float = 0.0
    aggregation: str = "sequence"  # sequence (GRPO), token (DAPO), constant (Dr. GRPO)
    scale_rewards: str = "group"  # GRPO's std division: group, batch, none (Dr. GRPO)
    process: bool = False  # GRPO process supervision (needs a step reward)
    baseline: str = "none"  # REINFORCE: none, moving (average of past returns) or learned (value head)
    baseline_momentum: float = 0.9
    gamma: float = 1.0
    lam: float = 0.95
    value_coef: float = 0.1
    value_clip: float | None = 0.2
    whiten_advantages: bool = False

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        for name in ("group_size", "prompts_per_step", "max_new_tokens", "epochs", "minibatches", "kl_horizon"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_number("temperature", self.temperature, low=0.0, low_inclusive=False)
        check_number("kl_coef", self.kl_coef, low=0.0)
        check_choice("kl_in", self.kl_in, KL_PLACES)
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        check_number("entropy_coef", self.entropy_coef, low=0.0)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("scale_rewards", self.scale_rewards, SCALES)
        check_choice("baseline", self.baseline, BASELINES)
        check_number("baseline_momentum", self.baseline_momentum, low=0.0, high=1.0, high_inclusive=False)
        check_number("gamma", self.gamma, low=0.0, high=1.0)
        check_number("lam", self.lam, low=0.0, high=1.0)
        check_number("value_coef", self.value_coef, low=0.0)
        for name in ("clip", "clip_high", "value_clip", "kl_target"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), low=0.0, low_inclusive=False)
        if self.method in ("grpo", "rloo") and self.group_size < 2:
            raise ConfigError(f"{self.method.upper()} compares the completions of one prompt with each other, and a "
                              "group of 1 has nothing to compare with", "use --group-size 2 or more (e.g. 8)")
        if self.process and self.method != "grpo":
            raise ConfigError("process supervision is GRPO's", "use grpo, or leave process supervision off")
        if self.baseline != "none" and self.method != "reinforce":
            raise ConfigError(f"the {self.baseline} baseline is REINFORCE's option; {self.method} has its own",
                              "leave --baseline out")
        rows = self.group_size * self.prompts_per_step
        if self.minibatches > rows:
            raise ConfigError(f"{self.minibatches} minibatches of a rollout batch of {rows} completions",
                              "use fewer minibatches, or more prompts per step")

    @property
    def value_head(self) -> bool:
        """Whether the method trains a value head (PPO's critic, REINFORCE's learned baseline)."""
        return self.method == "ppo" or self.baseline == "learned"

    @property
    def reuses_rollouts(self) -> bool:
        return self.epochs * self.minibatches > 1

    @classmethod
    def preset(cls, method: str, **overrides: Any) -> RLConfig:
        """Each method's usual settings (overridable): GRPO (DeepSeekMath), RLOO, REINFORCE, PPO."""
        check_choice("method", method, METHODS)
        check_keys("RL setting(s)", overrides, {f.name for f in fields(cls)} - {"method"})
        base = {"grpo": dict(group_size=8, clip=0.2, kl_coef=0.04, kl_in="loss", kl_estimator="k3"),
                "rloo": dict(group_size=4, clip=None, kl_coef=0.05, kl_in="reward", kl_estimator="k1"),
                "reinforce": dict(group_size=1, clip=None, kl_coef=0.05, kl_in="reward", kl_estimator="k1",
                                  baseline="moving"),
                "ppo": dict(group_size=1, clip=0.2, kl_coef=0.05, kl_in="reward", kl_estimator="k1", epochs=4,
                            minibatches=2, whiten_advantages=True, lam=0.95, value_clip=0.2)}[method]
        return cls(method=method, **{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PolicyWithValue(nn.Module):
    """The policy LM plus a scalar value head on its last hidden states (PPO's critic shares the backbone)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.d_model, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def state_config(self) -> dict:
        return {**self.lm.state_config(), "value_head": True}


def policy_of(model: nn.Module) -> nn.Module:
    """The language model inside a trained module (itself, or the LM of a ``PolicyWithValue``)."""
    return model.lm if isinstance(model, PolicyWithValue) else model


class RolloutSchedule:
    """The trainer's source: optimizer step i works on rollout i // (epochs × minibatches), pass and
    minibatch from the rest; the prompts of a rollout are a seeded shuffle of the prompt set."""

    def __init__(self, n_prompts: int, config: RLConfig, seed: int = 0) -> None:
        from ..data.loaders import ShuffledRows

        self.config = config
        self.prompts = ShuffledRows(n_prompts, config.prompts_per_step, seed)

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict:
        if world > 1:
            raise ConfigError("RL post-training runs in one process (rollouts are generated in it)",
                              "run without torchrun")
        per_rollout = self.config.epochs * self.config.minibatches
        rollout, inner = divmod(index, per_rollout)
        return {"rollout": rollout, "epoch": inner // self.config.minibatches,
                "minibatch": inner % self.config.minibatches,
                "prompts": torch.tensor(self.prompts.indices(rollout))}


class PolicyGradient:
    """The objective: rollouts, advantages and the policy-gradient loss (see the module notes)."""

    plot_keys = ("reward", "kl", "entropy", "clip_fraction")

    def __init__(self, config: RLConfig, *, prompts: list[PromptItem], generate: Generate, tokenizer: Any,
                 reward: Reward, reference: Reference | None, step_reward: StepReward | None = None,
                 stop_id: int | None = None, seed: int = 0) -> None:
        self.config, self.prompts, self.generate, self.tokenizer = config, prompts, generate, tokenizer
        self.reward, self.step_reward, self.reference = reward, step_reward, reference
        self.stop_id, self.seed = stop_id, seed
        self.pad_id = stop_id if stop_id is not None else 0
        if config.process and step_reward is None:
            raise ConfigError("process supervision needs a step reward", "pass step_reward (e.g. LineSteps())")
        if config.kl_coef > 0 and reference is None:
            raise ConfigError("a KL coefficient above 0 needs the reference model", "pass a Reference, or kl_coef=0")
        self.kl_coef = config.kl_coef
        self.baseline: float | None = None
        self.rollout: dict[str, Any] | None = None
        self.running = RunningMeans()

    # --- state carried through checkpoints ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "kl_coef": self.kl_coef, "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollout, self.kl_coef, self.baseline = state["rollout"], state["kl_coef"], state["baseline"]

    def metrics(self) -> dict[str, float]:
        return self.running.pop()

    # --- rollouts ---------------------------------------------------------------------------------
    def samples(self, rollouts) -> list[Sample]:
        return [Sample(self.prompts[i].messages, text, self.prompts[i].answer)
                for i, text in zip(rollouts.prompt_index, rollouts.texts, strict=True)]

    @torch.no_grad()
    def make_rollout(self, model: nn.Module, prompt_indices: list[int], number: int) -> dict[str, Any]:
        """Sample, score and prepare rollout batch ``number`` (everything the minibatch losses need)."""
        cfg, lm = self.config, policy_of(model)
        rows = len(prompt_indices) * cfg.group_size
        lm.eval()
        try:
            rollouts = sample_rollouts(self.generate, self.tokenizer, self.prompts, prompt_indices, cfg.group_size,
                                       cfg.max_new_tokens, row_seeds(self.seed, number, rows), self.stop_id)
        finally:
            lm.train()
        samples = self.samples(rollouts)
        rewards = torch.tensor(checked(self.reward, samples))
        batch = completion_batch([Encoded(list(self.prompts[i].ids), c)
                               for i, c in zip(rollouts.prompt_index, rollouts.completions, strict=True)],
                              self.pad_id)
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        out: dict[str, Any] = {"number": number, "batch": batch, "rewards": rewards}
        penalised = cfg.kl_in == "reward" and self.kl_coef > 0
        behaviour = cfg.reuses_rollouts or cfg.value_head or penalised  # the rollout policy's log-probs are needed
        old = score_tokens(lm, batch, hidden=cfg.value_head) if behaviour else None
        if old is not None and cfg.reuses_rollouts:
            out["old_logps"] = old.logps
        if old is not None and cfg.value_head:
            out["old_values"] = model.value_head(old.hidden).squeeze(-1).float()
        if self.reference is not None:
            out["ref_logps"] = self.reference.score(batch).logps
        # k1 at the sampled tokens; without a forward of the rollout policy here, the loss step measures it
        kl_per_token = old.logps - out["ref_logps"] if old is not None and "ref_logps" in out else None
        out.update(self.advantages(rewards, samples, rollouts, batch, kl_per_token, out.get("old_values")))
        self.log_rollout(rewards, rollouts, batch, kl_per_token)
        return out

    def advantages(self, rewards: torch.Tensor, samples: list[Sample], rollouts, batch: dict,
                   kl_per_token: torch.Tensor | None, old_values: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-token advantages [N] (and value targets [N]) for the method."""
        cfg = self.config
        device = batch["completion_mask"].device
        rewards = rewards.to(device)
        n = rewards.shape[0]
        rows_of = token_rows(batch)
        kl_penalised = cfg.kl_in == "reward" and self.kl_coef > 0 and kl_per_token is not None
        if cfg.method == "grpo" and cfg.process:
            steps = self.step_reward(samples)
            ends = [self.token_ends(c, [end for end, _ in s]) for c, s in zip(rollouts.completions, steps, strict=True)]
            lengths = row_counts(batch).tolist()
            padded = process_advantages([[r for _, r in s] for s in steps], ends, lengths, cfg.group_size).to(device)
            mask = torch.arange(padded.shape[1], device=device).unsqueeze(0) < row_counts(batch).unsqueeze(1)
            return {"advantages": padded[mask]}
        if cfg.method in ("grpo", "rloo"):
            if kl_penalised:  # RLOO's sequence-level KL penalty on the reward
                rewards = rewards - self.kl_coef * per_row(kl_per_token, rows_of, n)
            per_seq = (group_advantages(rewards, cfg.group_size, cfg.scale_rewards) if cfg.method == "grpo"
                       else rloo_advantages(rewards, cfg.group_size))
            return {"advantages": per_seq[rows_of]}
        # token-level rewards: the outcome on the last token, minus the KL penalty on every token
        token_rewards = torch.zeros(rows_of.shape[0], device=device)
        last = torch.cumsum(row_counts(batch), 0) - 1
        token_rewards[last] = rewards
        if kl_penalised:
            token_rewards = token_rewards - self.kl_coef * kl_per_token
        padded_rewards, mask = to_rows(token_rewards, batch)
        if cfg.method == "ppo" or cfg.baseline == "learned":
            values, _ = to_rows(old_values, batch)
            lam = cfg.lam if cfg.method == "ppo" else 1.0  # λ = 1: returns minus the value, REINFORCE's baseline
            adv, returns = gae(padded_rewards, values, mask, cfg.gamma, lam)
        else:
            returns = reward_to_go(padded_rewards, mask, cfg.gamma)
            adv = returns
            if cfg.baseline == "moving":  # the average return of earlier batches (this one's on the first)
                start = float(returns[:, 0].mean())
                adv = returns - (start if self.baseline is None else self.baseline)
                self.baseline = start if self.baseline is None else (
                    cfg.baseline_momentum * self.baseline + (1 - cfg.baseline_momentum) * start)
        if cfg.whiten_advantages:
            adv = whiten(adv, mask)
        return {"advantages": adv[mask], "returns": returns[mask]}

    def token_ends(self, completion: list[int], char_ends: list[int]) -> list[int]:
        """The token index where each step (ending at a character offset of the decoded text) ends."""
        lengths = [len(self.tokenizer.decode(completion[:k + 1])) for k in range(len(completion))]
        out = []
        for end in char_ends:
            out.append(next((k for k, n in enumerate(lengths) if n >= end), len(completion) - 1))
        return out

    def log_rollout(self, rewards: torch.Tensor, rollouts, batch: dict, kl_per_token: torch.Tensor | None) -> None:
        n = rewards.shape[0]
        values = {"reward": rewards.mean(), "reward_std": rewards.std() if n > 1 else 0.0,
                  "completion_tokens": row_counts(batch).float().mean(),
                  "stopped": sum(rollouts.stopped) / n}
        if kl_per_token is not None:
            values["kl"] = per_row(kl_per_token, token_rows(batch), n).mean()
        if self.config.kl_target is not None and kl_per_token is not None:
            self.adapt_kl(float(values["kl"]), n)
        values["kl_coef"] = self.kl_coef
        self.running.add(**values)

    def adapt_kl(self, kl: float, rows: int) -> None:
        """Ziegler et al. (2019): move β towards the KL target, at most ±20 % × rows / horizon per batch."""
        error = max(-0.2, min(0.2, kl / self.config.kl_target - 1))
        self.kl_coef *= 1 + error * rows / self.config.kl_horizon

    # --- the loss -------------------------------------------------------------------------------
    def minibatch_rows(self, number: int, epoch: int, minibatch: int, rows: int) -> torch.Tensor:
        cfg = self.config
        if cfg.minibatches == 1:
            return torch.arange(rows)
        order = torch.randperm(rows, generator=make_generator(self.seed * 1_000_003 + number * 101 + epoch))
        return order[minibatch::cfg.minibatches].sort().values

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        cfg, lm = self.config, policy_of(model)
        number = int(batch["rollout"])
        if self.rollout is None or self.rollout["number"] != number:
            self.rollout = self.make_rollout(model, batch["prompts"].tolist(), number)
        ro = self.rollout
        full = ro["batch"]
        picked = self.minibatch_rows(number, int(batch["epoch"]), int(batch["minibatch"]),
                                     full["completion_ids"].shape[0]).to(full["completion_ids"].device)
        mb = select_rows(full, picked)
        keep = torch.isin(token_rows(full), picked)

        scored = score_tokens(lm, mb, entropy=True, hidden=cfg.value_head)
        logps, mask = to_rows(scored.logps, mb)
        old = to_rows(ro["old_logps"][keep], mb)[0] if "old_logps" in ro else logps.detach()
        adv = to_rows(ro["advantages"][keep], mb)[0]
        entropy = to_rows(scored.entropy, mb)[0]
        clip_high = cfg.clip_high if cfg.clip_high is not None else cfg.clip
        per_token, clipped = clipped_surrogate(logps, old, adv, clip_low=cfg.clip, clip_high=clip_high)
        values: dict[str, Any] = {}
        if "ref_logps" in ro:
            ref = to_rows(ro["ref_logps"][keep], mb)[0]
            if cfg.kl_in == "loss" and self.kl_coef > 0:
                per_token = per_token + self.kl_coef * kl_penalty(logps, ref, cfg.kl_estimator)
            if not cfg.reuses_rollouts:  # the policy is still the rollout policy: its KL to the reference
                values["kl"] = ((logps.detach() - ref) * mask).sum(-1).mean()
        if cfg.entropy_coef > 0:
            per_token = per_token - cfg.entropy_coef * entropy
        loss = aggregate(per_token, mask, cfg.aggregation, max_tokens=cfg.max_new_tokens)
        values.update(entropy=masked_mean(entropy.detach(), mask), clip_fraction=masked_mean(clipped.float(), mask),
                      policy_loss=loss.detach())
        if cfg.value_head:
            predicted = to_rows(model.value_head(scored.hidden).squeeze(-1).float(), mb)[0]
            old_values = to_rows(ro["old_values"][keep], mb)[0]
            returns = to_rows(ro["returns"][keep], mb)[0]
            v_loss, v_clipped = value_loss(predicted, old_values, returns, mask,
                                           cfg.value_clip if cfg.method == "ppo" else None)
            loss = loss + cfg.value_coef * v_loss
            values.update(value_loss=v_loss.detach(), value_clip_fraction=v_clipped)
        self.running.add(**values)
        return loss, n_tokens(mb)


def with_overrides(config: RLConfig, **overrides: Any) -> RLConfig:
    """``config`` with some settings replaced (validated again)."""
    check_keys("RL setting(s)", overrides, {f.name for f in fields(RLConfig)})
    return replace(config, **overrides)
