"""lmlab.align's maths by hand and its refusals: GAE, reward-to-go, process advantages, the adapter-off
reference, log-probabilities, preference rows, rewards, and the bad inputs the issue names."""

from __future__ import annotations

import math

import pytest
import torch
from align_tiny import tiny_chat_tokenizer
from sft_tiny import tiny_model
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.align import (
    LineSteps,
    ModelReward,
    NumberMatch,
    PreferenceObjective,
    Reference,
    RegexFormat,
    RLConfig,
    Sample,
    Truncation,
    gae,
    group_advantages,
    make_reward,
    parse_transcript,
    preference,
    process_advantages,
    reward_to_go,
    score_tokens,
    whiten,
)
from lmlab.align.preferences import completion_batch, encode, encode_preferences, pair_batch
from lmlab.align.rewards import checked
from lmlab.align.surrogate import clipped_surrogate
from lmlab.core.errors import ConfigError, DataError, ModelError
from lmlab.peft import FullConfig, LoraConfig, adapters_disabled, apply_full, apply_lora


def test_gae_equals_a_hand_computation():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0, 0.5, 1.0], [2.0, -1.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.3, 9.0]])  # row 2 has 2 real tokens: its 9.0 is padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    # row 1: δ2 = 1 − .6 = .4; δ1 = .5 + .9·.6 − .4 = .64; δ0 = 0 + .9·.4 − .2 = .16
    a2 = 0.4
    a1 = 0.64 + gamma * lam * a2
    a0 = 0.16 + gamma * lam * a1
    # row 2: δ1 = −1 − .3 = −1.3 (V after the last token is 0); δ0 = 2 + .9·.3 − 1 = 1.27
    b1 = -1.3
    b0 = 1.27 + gamma * lam * b1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + .2, a1 + .4, a2 + .6], [b0 + 1.0, b1 + .3, 0.0]]))


def test_gae_with_lambda_one_is_reward_to_go_minus_the_value():
    rewards = torch.tensor([[0.1, -0.2, 1.0, 0.0]])
    values = torch.tensor([[0.3, 0.1, -0.4, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, _ = gae(rewards, values, mask, 0.95, 1.0)
    togo = reward_to_go(rewards, mask, 0.95)
    torch.testing.assert_close(adv, (togo - values) * mask)
    torch.testing.assert_close(togo, torch.tensor([[0.1 - 0.95 * 0.2 + 0.95**2, -0.2 + 0.95, 1.0, 0.0]]))


def test_process_advantages_by_hand():
    # group of 2: completion 0 has steps ending at tokens 1 and 3 (rewards 1, 0); completion 1 one step (1)
    adv = process_advantages([[1.0, 0.0], [1.0]], [[1, 3], [2]], [4, 3], group_size=2)
    pooled = torch.tensor([1.0, 0.0, 1.0])
    norm = (pooled - pooled.mean()) / (pooled.std() + 1e-4)
    expected = torch.tensor([[norm[0] + norm[1]] * 2 + [norm[1]] * 2, [norm[2]] * 3 + [0.0]])
    torch.testing.assert_close(adv, expected)


def test_whiten_gives_zero_mean_unit_variance_over_real_tokens():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = whiten(values, mask)
    real = out[mask.bool()]
    assert abs(float(real.mean())) < 1e-6 and float(real.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(out[1, 1]) == 0.0


def test_unclipped_surrogate_gradient_is_reinforce():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss, _ = clipped_surrogate(logps, logps.detach(), adv, clip_low=None)
    loss.sum().backward()
    torch.testing.assert_close(logps.grad, -adv.unsqueeze(1).expand(2, 2))  # −A ∇log π


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_a_group_of_one_is_refused(method):
    with pytest.raises(ConfigError, match="group of 1"):
        RLConfig.preset(method, group_size=1)
    with pytest.raises(ConfigError, match="group of 1"):
        group_advantages(torch.ones(4), 1)


def test_a_negative_kl_coefficient_is_refused():
    with pytest.raises(ConfigError, match="kl_coef"):
        RLConfig.preset("ppo", kl_coef=-0.1)


def test_a_preference_row_without_chosen_or_rejected_is_refused():
    with pytest.raises(DataError, match="'rejected'"):
        preference({"prompt": "hi", "chosen": "hello"}, "data.jsonl:3")
    with pytest.raises(DataError, match="data.jsonl:4 has no 'chosen' or 'rejected'"):
        preference({"prompt": "hi"}, "data.jsonl:4")


def test_hh_transcripts_split_at_the_shared_turns():
    head = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?"
    pair = preference({"chosen": head + "\n\nAssistant: yes", "rejected": head + "\n\nAssistant: no"})
    assert pair.prompt == parse_transcript(head)
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user"]
    assert pair.chosen == [{"role": "assistant", "content": "yes"}]
    assert pair.rejected == [{"role": "assistant", "content": "no"}]


def test_completion_ids_follow_the_prompt_ids_of_generation():
    tok = tiny_chat_tokenizer()
    ex = encode(tok, [{"role": "user", "content": "what is 2+3?"}], [{"role": "assistant", "content": "5"}],
                Truncation(64, 32))
    assert tok.decode(ex.prompt) == "<u>what is 2+3?|<a>"
    assert tok.decode(ex.completion) == "5|"
    cut = Truncation(8, 4)
    short = encode(tok, [{"role": "user", "content": "what is 2+3?"}], [{"role": "assistant", "content": "12345"}], cut)
    assert len(short.prompt) == 4 and len(short.prompt) + len(short.completion) == 8
    assert (cut.prompts_cut, cut.completions_cut) == (1, 1)


def _tiny_lora(seed: int = 0):
    tok = tiny_chat_tokenizer()
    lm = tiny_model(tok, seed)
    apply_lora(lm, LoraConfig(r=4, targets=["q_proj", "v_proj", "down"]))
    return lm, tok


def test_adapters_disabled_gives_the_base_model_and_restores_the_adapter():
    tok = tiny_chat_tokenizer()
    base = tiny_model(tok, 3)
    lm = tiny_model(tok, 3)
    apply_lora(lm, LoraConfig(r=4, targets=["q_proj", "v_proj", "down"]))
    torch.manual_seed(1)
    for name, p in lm.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    ids = torch.tensor([tok.encode("<u>hello|<a>")])
    adapted = lm(ids)[0]
    with adapters_disabled(lm):
        torch.testing.assert_close(lm(ids)[0], base(ids)[0], atol=0, rtol=0)
    torch.testing.assert_close(lm(ids)[0], adapted, atol=0, rtol=0)
    assert not torch.allclose(adapted, base(ids)[0])


def test_full_fine_tuning_has_no_adapter_to_switch_off():
    tok = tiny_chat_tokenizer()
    lm = apply_full(tiny_model(tok), FullConfig())
    with pytest.raises(ConfigError, match="full method"), adapters_disabled(lm):
        pass
    with pytest.raises(ConfigError, match="reference"):
        Reference(lm)


def test_scored_log_probs_equal_a_full_forward():
    lm, tok = _tiny_lora()
    pairs = encode_preferences(tok, [preference({"prompt": "what is 1+1?", "chosen": "2", "rejected": "no idea"})],
                               Truncation(64, 32))
    batch = pair_batch(pairs, pad_id=0)
    sums = score_tokens(lm, batch).sums(2)
    for row, ex in enumerate([pairs[0].chosen, pairs[0].rejected]):
        ids = torch.tensor([ex.prompt + ex.completion])
        with torch.no_grad():
            logp = lm(ids)[0].float().log_softmax(-1)[0]
        start = len(ex.prompt) - 1
        manual = sum(float(logp[start + k, t]) for k, t in enumerate(ex.completion))
        assert float(sums[row].detach()) == pytest.approx(manual, abs=1e-5)


def test_shared_prompt_forward_equals_full_forwards_in_value_and_gradient():
    lm, tok = _tiny_lora()
    for name, p in lm.named_parameters():  # a non-zero LoRA update, so its gradient path is exercised
        if "lora_B" in name:
            p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    long = [{"role": "user", "content": "what is the sum of 12 and 30?"}]
    short = [{"role": "user", "content": "hi?"}]
    limits = Truncation(96, 64)
    examples = [encode(tok, m, [{"role": "assistant", "content": a}], limits)
                for m, a in ((long, "42"), (short, "hello there"), (long, "no"), (short, "x"))]
    batch = completion_batch(examples, pad_id=0)
    assert batch["prompt_ids"].shape[0] == 2 and batch["prompt_of"].tolist() == [0, 1, 0, 1]
    shared = score_tokens(lm, batch).sums(4)
    shared.sum().backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.requires_grad}
    lm.zero_grad()
    total = 0
    for row, ex in enumerate(examples):
        ids = torch.tensor([ex.prompt + ex.completion])
        logp = lm(ids)[0].float().log_softmax(-1)[0]
        start = len(ex.prompt) - 1
        full = sum(logp[start + k, t] for k, t in enumerate(ex.completion))
        assert float(shared[row].detach()) == pytest.approx(float(full.detach()), abs=1e-5)
        total = total + full
    total.backward()
    for n, p in lm.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[n], atol=1e-5, rtol=1e-4)


def test_dpo_starts_at_log_2_with_the_reference_as_policy():
    lm, tok = _tiny_lora()  # LoRA's B starts at zero: policy == reference
    pairs = encode_preferences(tok, [preference({"prompt": f"what is {i}?", "chosen": "x", "rejected": "yy"})
                                     for i in range(3)], Truncation(64, 32))
    objective = PreferenceObjective("sigmoid", beta=0.1, reference=Reference(lm))
    loss, _ = objective(lm, pair_batch(pairs, 0))
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
    metrics = objective.metrics()
    assert metrics["reward_accuracy"] == 0.0 and metrics["reward_margin"] == 0.0  # ties: no pair is ahead yet


def test_rewards_check_answers_and_formats():
    samples = [Sample([], "The answer is 12.", "12"), Sample([], "12", "#### 12"), Sample([], "1,234", "1234"),
               Sample([], "maybe 3", "4")]
    assert NumberMatch()(samples) == [1.0, 1.0, 1.0, 0.0]
    assert RegexFormat()(samples) == [0.0, 1.0, 0.0, 0.0]
    both = make_reward("number,format:0.5")
    assert both(samples) == [1.0, 1.5, 1.0, 0.0]
    assert both.name == "number+0.5*format"
    steps = LineSteps()([Sample([], "3 + 9 = 11\nso 12\n", "12")])
    assert steps == [[(11, 0.0), (17, 1.0)]]
    with pytest.raises(ConfigError, match="unknown reward 'accuracy'"):
        make_reward("accuracy")


def test_a_reward_that_returns_nan_is_refused_by_name():
    class Broken:
        name = "broken"

        def __call__(self, samples):
            return [1.0, float("nan")]

    with pytest.raises(ModelError, match="reward 'broken' returned nan for completion 1"):
        checked(Broken(), [Sample([], "a"), Sample([], "b")])


def test_a_reward_model_with_another_tokenizer_is_refused():
    from lmlab.tokenizers import WordLevelTokenizer

    other = WordLevelTokenizer("char").train(["xyz"])
    reward = ModelReward(model=None, tokenizer=other)
    with pytest.raises(ModelError, match=r"policy's tokenizer \(\w+\) differs from the reward model's \(\w+\)"):
        reward.check_tokenizer(tiny_chat_tokenizer())


def test_judge_reward_is_the_log_odds_of_yes():
    from lmlab.eval.judge_reward import JudgeReward

    class Runner:
        def __init__(self):
            self.requests = []

        def loglikelihood(self, requests):
            self.requests += requests
            return [-0.5 if cont == " Yes" else -2.0 for _, cont in requests]

    runner = Runner()
    samples = [Sample([{"role": "user", "content": "2+2?"}], " 4 "), Sample([{"role": "user", "content": "3+3?"}], "6")]
    assert JudgeReward(runner)(samples) == [1.5, 1.5]
    assert "Question: 2+2?" in runner.requests[0][0] and "Answer: 4\n" in runner.requests[0][0]
    assert [c for _, c in runner.requests] == [" Yes", " No", " Yes", " No"]


def test_adaptive_kl_moves_the_coefficient_towards_the_target():
    from lmlab.align import PolicyGradient

    config = RLConfig.preset("ppo", kl_target=1.0, kl_horizon=100, kl_coef=0.1)
    pg = PolicyGradient(config, prompts=[], generate=None, tokenizer=None, reward=NumberMatch(), reference=object())
    pg.adapt_kl(3.0, rows=10)  # far above the target: +20 % × 10/100
    assert pg.kl_coef == pytest.approx(0.1 * 1.02)
    pg.adapt_kl(0.9, rows=10)  # 10 % below: −10 % × 10/100
    assert pg.kl_coef == pytest.approx(0.1 * 1.02 * 0.99)
