"""lmlab.align: post-training against preferences and rewards, on the one trainer.

Reward models (Bradley-Terry), offline preference optimisation (DPO, cDPO, robust DPO, IPO,
hinge, KTO, SimPO, ORPO), one policy-gradient core (REINFORCE, RLOO, PPO, GRPO) with rollouts from
the inference engine, unlikelihood training, and DQN — the seeds' RLHF chapter (see
``docs/align.md``). Recipes (``reward_model``, ``preference_optimization``, ``kto``,
``policy_optimization``) are what ``lmlab align`` runs.
"""

from .advantages import (
    gae,
    group_advantages,
    process_advantages,
    reward_to_go,
    rloo_advantages,
    whiten,
)
from .logprobs import Reference, kl_to_reference, score_tokens
from .losses import (
    DPO_LOSSES,
    PAIRED_LOSSES,
    bradley_terry_loss,
    dpo_loss,
    kto_loss,
    orpo_loss,
    simpo_loss,
)
from .objectives import KTOObjective, PreferenceObjective
from .preferences import (
    Judged,
    Preference,
    Truncation,
    held_out_split,
    judged,
    parse_transcript,
    preference,
    read_preferences,
    read_rows,
)
from .recipes import (
    Adapter,
    Schedule,
    evaluate_policy,
    kto,
    policy_optimization,
    preference_optimization,
    reward_model,
    write_result,
)
from .reward_model import BradleyTerryObjective, RewardModel, load_reward_model, save_reward_model
from .rewards import (
    ExactAnswer,
    LengthReward,
    LineSteps,
    ModelReward,
    NumberMatch,
    RegexFormat,
    Reward,
    Sample,
    Weighted,
    make_reward,
)
from .rl import METHODS, PolicyGradient, PolicyWithValue, RLConfig, RolloutSchedule
from .rollout import Generate, PromptItem, arithmetic_problems, encode_prompts, read_prompts
from .surrogate import aggregate, clipped_surrogate, kl_penalty, value_loss

__all__ = [
    "DPO_LOSSES", "METHODS", "PAIRED_LOSSES", "Adapter", "BradleyTerryObjective", "ExactAnswer", "Generate",
    "Judged", "KTOObjective", "LengthReward", "LineSteps", "ModelReward", "NumberMatch", "PolicyGradient",
    "PolicyWithValue", "Preference", "PreferenceObjective", "PromptItem", "RLConfig", "Reference", "RegexFormat",
    "Reward", "RewardModel", "RolloutSchedule", "Sample", "Schedule", "Truncation", "Weighted", "aggregate",
    "arithmetic_problems", "bradley_terry_loss", "clipped_surrogate", "dpo_loss", "encode_prompts",
    "evaluate_policy", "gae", "group_advantages", "held_out_split", "judged", "kl_penalty", "kl_to_reference",
    "kto", "kto_loss", "load_reward_model", "make_reward", "orpo_loss", "parse_transcript", "policy_optimization",
    "preference", "preference_optimization", "process_advantages", "read_preferences", "read_prompts",
    "read_rows", "reward_model", "reward_to_go", "rloo_advantages", "save_reward_model", "score_tokens",
    "simpo_loss", "value_loss", "whiten", "write_result",
]
