"""lmlab's preference and policy-gradient losses against TRL's own code on fixed tensors.

TRL computes its losses inside trainer methods; the tests call those methods with a stand-in
``self`` that carries only the settings they read (and a stand-in model that returns the fixed
log-probabilities), so the arithmetic compared is TRL's, line for line.
"""

from __future__ import annotations

import types
from collections import defaultdict

import pytest
import torch

from lmlab.align.advantages import group_advantages, rloo_advantages
from lmlab.align.losses import (
    bradley_terry_loss,
    dpo_loss,
    kto_loss,
    kto_reference_point,
    orpo_loss,
    simpo_loss,
)
from lmlab.align.surrogate import aggregate, clipped_surrogate, kl_penalty

trl = pytest.importorskip("trl")
pytest.importorskip("trl.experimental.cpo")
from trl import DPOTrainer, GRPOTrainer, KTOTrainer, RewardTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

TOL = 1e-6


class _Accelerator:
    device = torch.device("cpu")
    num_processes = 1
    process_index = 0
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def unwrap_model(self, model):
        return model


def _stub(**settings) -> types.SimpleNamespace:
    base = dict(accelerator=_Accelerator(), model=types.SimpleNamespace(training=True), aux_loss_enabled=False,
                _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    return types.SimpleNamespace(**{**base, **settings})


def _fixed(seed: int, pairs: int = 5, width: int = 7):
    """Per-token log-probs of 2×pairs completions (chosen rows first) with ragged completion masks."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width, (2 * pairs,), generator=g)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
    per_token = -torch.rand(2 * pairs, width, generator=g, dtype=torch.float64) * 3 * mask
    ref = -torch.rand(2 * pairs, width, generator=g, dtype=torch.float64) * 3 * mask
    return per_token, ref, mask


class _FixedModel:
    """Returns the given per-token log-probs (and zeros for TRL's logged extras), in call order."""

    def __init__(self, *outputs: torch.Tensor) -> None:
        self.outputs = list(outputs)

    def __call__(self, **kwargs):
        log_probs = self.outputs.pop(0)
        zeros = torch.zeros_like(log_probs)
        return types.SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros,
                                     is_top1=zeros.bool(), aux_loss=None)


def _dpo_inputs(per_token, ref, mask):
    # TRL's log_probs are for positions 1.. (shifted); put the completion mask one to the right
    completion_mask = torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.long), mask], 1)
    ref_sums = ref.sum(1)
    return {"input_ids": torch.zeros_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
            "completion_mask": completion_mask, "ref_chosen_logps": ref_sums.chunk(2)[0],
            "ref_rejected_logps": ref_sums.chunk(2)[1]}


@pytest.mark.parametrize("kind,trl_name,smoothing", [("sigmoid", "sigmoid", 0.0), ("hinge", "hinge", 0.0),
                                                     ("ipo", "ipo", 0.0), ("robust", "robust", 0.2)])
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_dpo_family_equals_trl(kind, trl_name, smoothing, beta):
    per_token, ref, mask = _fixed(1)
    stub = _stub(precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl", loss_types=[trl_name],
                 loss_weights=[1.0], beta=beta, label_smoothing=smoothing, use_weighting=False)
    theirs = DPOTrainer._compute_loss(stub, _FixedModel(per_token), _dpo_inputs(per_token, ref, mask), False)
    logps, ref_logps, counts = per_token.sum(1), ref.sum(1), mask.sum(1)
    ours = dpo_loss(*logps.chunk(2), *ref_logps.chunk(2), beta=beta, kind=kind, label_smoothing=smoothing,
                    chosen_tokens=counts.chunk(2)[0], rejected_tokens=counts.chunk(2)[1])
    assert float(ours.losses.mean()) == pytest.approx(float(theirs), abs=TOL)
    metrics = stub._metrics["train"]
    assert float(ours.chosen_rewards.mean()) == pytest.approx(metrics["rewards/chosen"][-1], abs=TOL)
    assert float(ours.rejected_rewards.mean()) == pytest.approx(metrics["rewards/rejected"][-1], abs=TOL)
    accuracy = float((ours.chosen_rewards > ours.rejected_rewards).float().mean())
    assert accuracy == pytest.approx(metrics["rewards/accuracies"][-1], abs=TOL)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_conservative_dpo_equals_trl_label_smoothed_sigmoid(smoothing):
    # TRL's label-smoothed sigmoid loss lives in its CPO trainer, on policy log-prob differences; fed the
    # log-ratios to the reference it is exactly conservative DPO's loss
    per_token, ref, _ = _fixed(2)
    chosen, rejected = per_token.sum(1).chunk(2)
    ref_chosen, ref_rejected = ref.sum(1).chunk(2)
    stub = _stub(alpha=0.0, loss_type="sigmoid", beta=0.3, label_smoothing=smoothing)
    losses, _, _ = CPOTrainer.cpo_loss(stub, chosen - ref_chosen, rejected - ref_rejected)
    ours = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.3, kind="cdpo", label_smoothing=smoothing)
    torch.testing.assert_close(ours.losses, losses, atol=TOL, rtol=0)


@pytest.mark.parametrize("gamma,smoothing", [(0.5, 0.0), (1.4, 0.1)])
def test_simpo_equals_trl(gamma, smoothing):
    per_token, _, mask = _fixed(3)
    means = per_token.sum(1) / mask.sum(1)
    stub = _stub(alpha=0.0, loss_type="simpo", beta=2.0, simpo_gamma=gamma, label_smoothing=smoothing)
    losses, chosen_rewards, rejected_rewards = CPOTrainer.cpo_loss(stub, *means.chunk(2))
    ours = simpo_loss(*means.chunk(2), beta=2.0, gamma=gamma, label_smoothing=smoothing)
    torch.testing.assert_close(ours.losses, losses, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.chosen_rewards, chosen_rewards, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.rejected_rewards, rejected_rewards, atol=TOL, rtol=0)


def test_orpo_equals_trl():
    per_token, _, mask = _fixed(4)
    means = per_token.sum(1) / mask.sum(1)
    nll = torch.tensor(1.234, dtype=torch.float64)
    stub = _stub(beta=0.25)
    losses, chosen_rewards, rejected_rewards, _, _ = ORPOTrainer.odds_ratio_loss(stub, *means.chunk(2))
    total, pair = orpo_loss(nll, *means.chunk(2), beta=0.25)
    assert float(total) == pytest.approx(float(nll - losses.mean()), abs=TOL)  # TRL: nll − mean(β · ratio)
    torch.testing.assert_close(pair.chosen_rewards, chosen_rewards.double(), atol=TOL, rtol=0)
    torch.testing.assert_close(pair.rejected_rewards, rejected_rewards.double(), atol=TOL, rtol=0)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.3, 0.7)])
def test_kto_equals_trl(weights):
    g = torch.Generator().manual_seed(5)
    n, width = 6, 6
    labels = torch.tensor([True, False, True, True, False, False])
    mask = torch.ones(n, width, dtype=torch.long)
    policy = -torch.rand(n, width - 1, generator=g, dtype=torch.float64)
    kl_policy = -torch.rand(n, width - 1, generator=g, dtype=torch.float64)
    ref_logps = -torch.rand(n, generator=g, dtype=torch.float64) * (width - 1)
    ref_kl = -torch.rand(n, generator=g, dtype=torch.float64) * (width - 1)
    batch = {"label": labels, "input_ids": torch.zeros(n, width, dtype=torch.long), "attention_mask": mask,
             "completion_mask": mask, "KL_input_ids": torch.zeros(n, width, dtype=torch.long),
             "KL_attention_mask": mask, "KL_completion_mask": mask, "ref_logps": ref_logps, "ref_KL_logps": ref_kl}
    stub = _stub(calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=0.2,
                 desirable_weight=weights[0], undesirable_weight=weights[1])
    stub._compute_kl_logps = types.MethodType(KTOTrainer._compute_kl_logps, stub)
    theirs = KTOTrainer._compute_loss(stub, _FixedModel(kl_policy, policy), batch, False)
    sums = policy.sum(1)
    kl = kto_reference_point(kl_policy.sum(1), ref_kl)
    ours = kto_loss(sums[labels], sums[~labels], ref_logps[labels], ref_logps[~labels], kl, beta=0.2,
                    desirable_weight=weights[0], undesirable_weight=weights[1])
    assert float(ours.losses.mean()) == pytest.approx(float(theirs), abs=TOL)
    assert float(kl) == pytest.approx(stub._metrics["train"]["kl"][-1], abs=TOL)


@pytest.mark.parametrize("margin,center", [(None, None), (0.5, None), (None, 0.01), (0.3, 0.05)])
def test_bradley_terry_equals_trl_reward_loss(margin, center):
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(8, 1, generator=g, dtype=torch.float64)
    inputs = {"input_ids": torch.zeros(8, 3, dtype=torch.long), "attention_mask": torch.ones(8, 3, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = torch.full((4,), margin, dtype=torch.float64)
    stub = _stub(args=types.SimpleNamespace(center_rewards_coefficient=center))
    model = lambda **kw: types.SimpleNamespace(logits=scores)  # noqa: E731
    theirs = RewardTrainer.compute_loss(stub, model, inputs)
    chosen, rejected = scores.squeeze(-1).chunk(2)
    ours = bradley_terry_loss(chosen, rejected, margin=inputs.get("margin"), center=center)
    assert float(ours) == pytest.approx(float(theirs), abs=TOL)


def _grpo_group(seed: int, rows: int = 8, width: int = 6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
    logps = -torch.rand(rows, width, generator=g, dtype=torch.float64) * 2
    old = logps + 0.3 * torch.randn(rows, width, generator=g, dtype=torch.float64)  # ratios inside and out of the clip range
    ref = logps + 0.2 * torch.randn(rows, width, generator=g, dtype=torch.float64)
    advantages = torch.randn(rows, generator=g, dtype=torch.float64)
    return logps, old, ref, advantages, mask


@pytest.mark.parametrize("loss_type,aggregation", [("grpo", "sequence"), ("bnpo", "token"), ("dapo", "token"),
                                                   ("dr_grpo", "constant")])
@pytest.mark.parametrize("beta,clip_high", [(0.0, 0.2), (0.04, 0.28)])
def test_grpo_loss_equals_trl(loss_type, aggregation, beta, clip_high):
    logps, old, ref, advantages, mask = _grpo_group(7)
    rows, width = logps.shape
    inputs = {"prompt_ids": torch.zeros(rows, 2, dtype=torch.long), "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
              "completion_ids": torch.zeros(rows, width, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    stub = _stub(top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
                 beta=beta, args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
                 loss_type=loss_type, epsilon_low=0.2, epsilon_high=clip_high, use_vllm=False,
                 vllm_importance_sampling_correction=False, current_gradient_accumulation_steps=1,
                 max_completion_length=width, _entropy_bonus_enabled=False)
    stub._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    theirs = GRPOTrainer._compute_loss(stub, None, inputs)
    per_token, clipped = clipped_surrogate(logps, old, advantages, clip_low=0.2, clip_high=clip_high)
    if beta:
        per_token = per_token + beta * kl_penalty(logps, ref, "k3")
    ours = aggregate(per_token, mask, aggregation, max_tokens=width)
    assert float(ours) == pytest.approx(float(theirs), abs=TOL)
    region = stub._metrics["train"]["clip_ratio/region_mean"][-1]
    assert float((clipped * mask).sum() / mask.sum()) == pytest.approx(region, abs=TOL)


@pytest.fixture(scope="module")
def tiny_trl(tmp_path_factory):
    """A GRPOTrainer and an RLOOTrainer on a 5-word tokenizer and a one-layer Llama (built once)."""
    datasets = pytest.importorskip("datasets")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import GRPOConfig, RLOOConfig, RLOOTrainer

    words = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "a": 2, "b": 3, "c": 4}, unk_token="a"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="<eos>")
    config = LlamaConfig(vocab_size=5, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=32)
    rewards: list[float] = []
    data = datasets.Dataset.from_dict({"prompt": ["a b"] * 3})
    common = dict(num_generations=4, per_device_train_batch_size=12, max_completion_length=4, report_to=[],
                  use_cpu=True, beta=0.0)
    grpo = GRPOTrainer(model=LlamaForCausalLM(config), reward_funcs=lambda prompts, completions, **kw: list(rewards),
                       args=GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), **common),
                       train_dataset=data, processing_class=tokenizer)
    rloo = RLOOTrainer(model=LlamaForCausalLM(config), reward_funcs=lambda prompts, completions, **kw: list(rewards),
                       args=RLOOConfig(output_dir=str(tmp_path_factory.mktemp("rloo")), normalize_advantages=False,
                                       **common),
                       train_dataset=data, processing_class=tokenizer)
    n = 12
    grpo._generate = lambda prompts: ([[2, 3]] * n, [[4, 1]] * n, None, ["c"] * n, None, {}, None, None)
    rloo._generate = lambda prompts: ([[2, 3]] * n, [[4, 1]] * n, ["c"] * n)
    return grpo, rloo, rewards


REWARDS = [1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 3.0]  # three groups of 4, one all-equal


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_advantages_equal_trl(tiny_trl, scale):
    grpo, _, rewards = tiny_trl
    rewards[:] = REWARDS
    grpo.scale_rewards = scale
    theirs = grpo._generate_and_score_completions([{"prompt": "a b"}] * len(REWARDS))["advantages"]
    ours = group_advantages(torch.tensor(REWARDS), 4, scale=scale)
    torch.testing.assert_close(ours, theirs.float(), atol=TOL, rtol=0)


def test_rloo_advantages_equal_trl(tiny_trl):
    _, rloo, rewards = tiny_trl
    rewards[:] = REWARDS
    theirs = rloo._generate_and_score_completions([{"prompt": "a b"}] * len(REWARDS))["advantages"]
    torch.testing.assert_close(rloo_advantages(torch.tensor(REWARDS), 4), theirs.float(), atol=TOL, rtol=0)
