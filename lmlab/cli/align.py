"""``lmlab align``: reward models, preference optimisation and RL post-training (``lmlab.align``).

``lmlab align reward|dpo|kto|simpo|orpo`` train on preference pairs (JSONL: prompt/chosen/rejected,
or HH-style transcripts); ``lmlab align grpo|rloo|reinforce|ppo`` on prompts with checkable answers
(JSONL: prompt/answer, or ``arithmetic`` for the built-in single-digit additions) with rollouts from
the inference engine. Each prints the held-out metric before and after (``eval_before``,
``eval_after``) and the training throughput, and leaves the adapter (``--adapter`` for ``lmlab
chat``), ``run/metrics.jsonl``, ``curves.png`` and ``align.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_common, check_outputs, emit, status

PREFERENCE_VERBS = {"dpo": "DPO and its family (--loss sigmoid, cdpo, robust, ipo, hinge)",
                    "simpo": "SimPO: reference-free, length-normalised, with a target margin",
                    "orpo": "ORPO: SFT plus an odds-ratio preference term, no reference model",
                    "kto": "KTO: unpaired desirable / undesirable examples"}
RL_VERBS = {"grpo": "GRPO: group-normalised advantages (outcome or process supervision)",
            "rloo": "RLOO: REINFORCE with a leave-one-out baseline",
            "reinforce": "REINFORCE with reward-to-go and a moving or learned baseline",
            "ppo": "PPO: clipped ratio, value head with GAE, KL penalty"}
DPO_LOSSES = ("sigmoid", "cdpo", "robust", "ipo", "hinge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="reward models, DPO/KTO/SimPO/ORPO, and RL (GRPO, RLOO, REINFORCE, PPO)",
                       description="Post-train a chat model against preferences or rewards.")
    verbs = p.add_subparsers(dest="align_verb", metavar="METHOD", required=True)
    r = verbs.add_parser("reward", help="a Bradley-Terry reward model on preference pairs")
    _preference_args(r, default_lr=5e-4)
    r.add_argument("--margin", type=float, default=None, help="a fixed margin in the Bradley-Terry loss")
    r.add_argument("--center", type=float, default=None, help="reward-centring coefficient (mean (r_c + r_r)²)")
    _common(r)
    r.set_defaults(func=run_reward)
    for verb, text in PREFERENCE_VERBS.items():
        q = verbs.add_parser(verb, help=text)
        _preference_args(q, default_lr=5e-5)
        q.add_argument("--beta", type=float, default={"simpo": 2.0}.get(verb, 0.1),
                       help="β: KL strength (DPO, KTO), reward scale (SimPO), odds-ratio weight (ORPO)")
        if verb == "dpo":
            q.add_argument("--loss", choices=DPO_LOSSES, default="sigmoid")
            q.add_argument("--reference", choices=["adapter-off", "precomputed"], default="adapter-off",
                           help="reference log-probs: the policy with its adapter off each step, or once up front")
        if verb in ("dpo", "simpo"):
            q.add_argument("--label-smoothing", type=float, default=0.0, help="ε of cDPO / robust DPO / SimPO")
        if verb == "simpo":
            q.add_argument("--gamma", type=float, default=1.0, help="SimPO's target reward margin γ")
        if verb == "kto":
            q.add_argument("--desirable-weight", type=float, default=1.0)
            q.add_argument("--undesirable-weight", type=float, default=1.0)
        _common(q)
        q.set_defaults(func=run_preference, verb=verb)
    for verb, text in RL_VERBS.items():
        q = verbs.add_parser(verb, help=text)
        _rl_args(q, verb)
        _common(q)
        q.set_defaults(func=run_rl, verb=verb)


def _preference_args(p: argparse.ArgumentParser, default_lr: float) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="a model directory or built-in name (reward: also minilm)")
    p.add_argument("--data", required=True, help="preference pairs (JSONL: prompt/chosen/rejected or HH transcripts)")
    p.add_argument("--eval-data", help="held-out pairs (default: every --held-out-every-th pair of --data)")
    p.add_argument("--held-out-every", type=int, default=10, help="hold out pairs 10, 20, 30, ... (default 10)")
    p.add_argument("--max-rows", type=int, default=None, help="read at most this many rows of --data")
    p.add_argument("--eval-rows", type=int, default=None, help="evaluate on at most this many held-out pairs")
    p.add_argument("--max-length", type=int, default=256, help="tokens of prompt + completion")
    p.add_argument("--max-prompt-length", type=int, default=192, help="prompt tokens kept (the latest turns)")
    p.set_defaults(default_lr=default_lr)


def _rl_args(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help="a model directory or built-in name")
    p.add_argument("--prompts", required=True,
                   help="prompts with answers (JSONL: prompt/answer), or 'arithmetic' (built-in single-digit sums)")
    p.add_argument("--eval-prompts", help="held-out prompts (default: the last --eval-rows of --prompts)")
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--max-rows", type=int, default=None, help="use at most this many rows of --prompts")
    p.add_argument("--reward", default="number",
                   help="reward spec: names with optional weights, e.g. number,format:0.2 (exact, number, format, "
                        "length, model, judge)")
    p.add_argument("--reward-model", help="a reward-model directory (lmlab align reward --out) for --reward model")
    p.add_argument("--judge-model", help="the judge model for --reward judge (a model directory or built-in name)")
    p.add_argument("--format-regex", default=None, help="the strict format the 'format' reward checks")
    p.add_argument("--target-length", type=int, default=None, help="target words of the 'length' reward")
    p.add_argument("--process", action="store_true",
                   help="GRPO process supervision: each line is a step, rewarded when it states the answer")
    g = p.add_argument_group("rollouts and the policy-gradient core")
    g.add_argument("--group-size", type=int, default=None, help="completions per prompt (GRPO 8, RLOO 4, else 1)")
    g.add_argument("--prompts-per-step", type=int, default=4)
    g.add_argument("--max-new-tokens", type=int, default=16)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--epochs", type=int, default=None, help="passes over each rollout batch (PPO 4, else 1)")
    g.add_argument("--minibatches", type=int, default=None, help="optimizer steps per pass (PPO 2, else 1)")
    g.add_argument("--clip", type=float, default=None, help="ε of the clipped ratio (GRPO/PPO 0.2)")
    g.add_argument("--clip-high", type=float, default=None, help="DAPO's clip-higher ε")
    g.add_argument("--kl-coef", type=float, default=None, help="β of the KL to the reference (GRPO 0.04, else 0.05)")
    g.add_argument("--kl-target", type=float, default=None, help="adaptive KL: target nats per completion")
    g.add_argument("--entropy-coef", type=float, default=0.0)
    g.add_argument("--aggregation", choices=["sequence", "token", "constant"], default=None,
                   help="loss aggregation: GRPO (sequence), DAPO (token), Dr. GRPO (constant)")
    g.add_argument("--scale-rewards", choices=["group", "batch", "none"], default=None,
                   help="GRPO's advantage scale (none: Dr. GRPO)")
    if verb == "reinforce":
        g.add_argument("--baseline", choices=["none", "moving", "learned"], default="moving")
    if verb in ("ppo", "reinforce"):
        g.add_argument("--gamma", type=float, default=1.0)
    if verb == "ppo":
        g.add_argument("--lam", type=float, default=0.95, help="GAE λ")
        g.add_argument("--value-coef", type=float, default=0.1)
    p.set_defaults(default_lr=2e-5)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (adapter, run/, curves.png, align.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--batch-size", type=int, default=4, help="pairs (or examples) per optimizer step")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 10%% of --steps)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    g.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (resumable)")
    g.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (drawn in curves.png)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    m = p.add_argument_group("what trains")
    m.add_argument("--method", choices=["lora", "full"], default="lora")
    m.add_argument("--rank", type=int, default=8)
    m.add_argument("--alpha", type=float, default=16.0)
    m.add_argument("--targets", default=None, help="comma-separated module patterns (default: all block linears)")
    add_common(p)


def _setup(args: argparse.Namespace):
    import torch

    from ..align import Adapter, Schedule
    from ..core.validate import check_number

    check_outputs(args, dirs=("out",))
    for name in ("steps", "batch_size", "rank"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), low=1, integer=True)
    if args.threads is not None:
        torch.set_num_threads(int(check_number("--threads", args.threads, low=1, integer=True)))
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    adapter = Adapter(args.method, rank=args.rank, alpha=args.alpha, targets=targets)
    lr = args.lr if args.lr is not None else (2e-5 if args.method == "full" else args.default_lr)
    schedule = Schedule(steps=args.steps, lr=lr, warmup=args.warmup, batch_size=args.batch_size, seed=args.seed,
                        device=args.device, precision=args.precision, checkpoint_every=args.checkpoint_every,
                        eval_every=args.eval_every)
    return adapter, schedule


def _chat_model(name: str):
    from ..core.errors import ConfigError
    from ..models import load_model
    from ..models.transformer import TransformerLM

    lm, tokenizer = load_model(name)
    if not isinstance(lm, TransformerLM) or tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{name} is not a transformer chat model with a chat template",
                          "use smollm2-135m-instruct or a model directory saved with its chat template")
    return lm, tokenizer


def _pairs(args: argparse.Namespace):
    from ..align import held_out_split, read_preferences
    from ..core.errors import DataError

    pairs = read_preferences(args.data, args.max_rows)
    if args.eval_data:
        train, held = pairs, read_preferences(args.eval_data)
    else:
        train, held = held_out_split(pairs, args.held_out_every)
        if not held:
            raise DataError(f"{args.data} has {len(pairs)} pairs, too few to hold every {args.held_out_every}th out",
                            "pass --eval-data, or more rows")
    return train, held[:args.eval_rows] if args.eval_rows else held


def _kto_rows(args: argparse.Namespace):
    from ..align import held_out_split, read_rows

    rows = read_rows(args.data, args.max_rows)
    return rows if args.eval_data else held_out_split(rows, args.held_out_every)[0]


def _kto_examples(args: argparse.Namespace):
    """KTO's training examples: unpaired rows (prompt/completion/label), or each pair split in two."""
    from ..align import judged

    return [e for where, row in _kto_rows(args) for e in judged(row, where)]


def _kto_held_out(args: argparse.Namespace):
    """Held-out comparisons for KTO's evaluation (the held-out rows of --data must be pairs)."""
    from ..align import held_out_split, preference, read_preferences, read_rows
    from ..core.errors import DataError

    if args.eval_data:
        held = read_preferences(args.eval_data)
    else:
        rows = held_out_split(read_rows(args.data, args.max_rows), args.held_out_every)[1]
        if not rows or any("chosen" not in row for _, row in rows):
            raise DataError("KTO is evaluated on held-out preference pairs, and the held-out rows of --data are not "
                            "pairs", "pass --eval-data with prompt/chosen/rejected rows")
        held = [preference(row, where) for where, row in rows]
    return held[:args.eval_rows] if args.eval_rows else held


def _limits(args: argparse.Namespace):
    from ..align import Truncation

    return Truncation(max_length=args.max_length, max_prompt_length=args.max_prompt_length)


def _shown(result: dict) -> dict:
    """The result as printed: long per-pair lists left to align.json."""
    return {k: v for k, v in result.items() if k not in ("probabilities",)}


def run_reward(args: argparse.Namespace) -> int:
    from .. import align
    from ..eval.calibration import expected_calibration_error, reliability_diagram
    from ..models.backbone import load_backbone

    adapter, schedule = _setup(args)
    train_pairs, held = _pairs(args)
    status(args, f"loading {args.model} ...")
    lm, tokenizer = load_backbone(args.model)
    result = align.reward_model(args.model, lm, tokenizer, train_pairs, held, args.out, adapter=adapter,
                                schedule=schedule, limits=_limits(args), margin=args.margin, center=args.center,
                                resume=args.resume)
    probs = result["probabilities"]
    confidences = [max(p, 1 - p) for p in probs]
    correct = [float(p > 0.5) for p in probs]
    result["calibration"] = {"ece": expected_calibration_error(confidences, correct, n_bins=10)}
    reliability_diagram(confidences, correct, str(Path(args.out) / "calibration.png"), n_bins=10)
    align.write_result(args.out, result)
    base = result["length_baseline"]
    human = (f"reward model on {args.model}: held-out pairwise accuracy {result['eval_before']:.3f} → "
             f"{result['eval_after']:.3f} ({result['pairs']['eval']} pairs; length-only baseline "
             f"'{base['rule']}' {base['pairwise_accuracy']:.3f}), ECE {result['calibration']['ece']:.3f}\n"
             f"{result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s; saved in {args.out}")
    emit(args, _shown(result), human)
    return 0


def run_preference(args: argparse.Namespace) -> int:
    from .. import align

    adapter, schedule = _setup(args)
    train_pairs, held = _pairs(args) if args.verb != "kto" else (None, _kto_held_out(args))
    status(args, f"loading {args.model} ...")
    lm, tokenizer = _chat_model(args.model)
    if args.verb == "kto":
        examples = _kto_examples(args)
        result = align.kto(lm, tokenizer, examples, held, args.out, beta=args.beta,
                           desirable_weight=args.desirable_weight, undesirable_weight=args.undesirable_weight,
                           adapter=adapter, schedule=schedule, limits=_limits(args), resume=args.resume)
    else:
        loss = args.loss if args.verb == "dpo" else args.verb
        result = align.preference_optimization(
            lm, tokenizer, train_pairs, held, args.out, loss=loss, beta=args.beta,
            label_smoothing=getattr(args, "label_smoothing", 0.0), gamma=getattr(args, "gamma", 1.0),
            adapter=adapter, schedule=schedule, limits=_limits(args),
            precompute_reference=getattr(args, "reference", "") == "precomputed", resume=args.resume)
    before, after = result["before"], result["after"]
    kl = f"; KL to the reference {after['kl_to_reference']:.4f} nats/token" if "kl_to_reference" in after else ""
    name = f"dpo ({result['task']} loss)" if args.verb == "dpo" else args.verb
    human = (f"{name} on {args.model}: held-out implicit-reward accuracy {result['eval_before']:.3f} → "
             f"{result['eval_after']:.3f}, margin {before['reward_margin']:.4f} → {after['reward_margin']:.4f}{kl}\n"
             f"{result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s; adapter in {args.out} "
             f"(lmlab chat --adapter {args.out})")
    emit(args, result, human)
    return 0


def _prompt_rows(args: argparse.Namespace):
    from ..align import arithmetic_problems, read_prompts
    from ..core.errors import DataError

    if args.prompts == "arithmetic":
        rows = arithmetic_problems(args.max_rows or 2000, seed=0)
    else:
        rows = read_prompts(args.prompts, args.max_rows)
    if args.eval_prompts:
        return rows, read_prompts(args.eval_prompts)
    if len(rows) <= args.eval_rows:
        raise DataError(f"{args.prompts} has {len(rows)} prompts, too few to hold out {args.eval_rows}",
                        "pass --eval-prompts, or a smaller --eval-rows")
    return rows[:-args.eval_rows], rows[-args.eval_rows:]


def _reward(args: argparse.Namespace, tokenizer: Any):
    from ..align import ModelReward, load_reward_model, make_reward
    from ..core.errors import ConfigError

    extra: dict[str, Any] = {}
    names = {p.strip().partition(":")[0] for p in args.reward.split(",")}
    if "model" in names:
        if not args.reward_model:
            raise ConfigError("--reward model needs the reward model", "pass --reward-model DIR (lmlab align reward --out)")
        model, reward_tokenizer = load_reward_model(args.reward_model)
        extra["model"] = ModelReward(model, reward_tokenizer, name="model")
    if "judge" in names:
        if not args.judge_model:
            raise ConfigError("--reward judge needs a judge model", "pass --judge-model NAME_OR_DIR")
        from ..eval.judge_reward import JudgeReward
        from ..eval.requests import RequestRunner
        from ..models import load_model

        judge_lm, judge_tokenizer = load_model(args.judge_model)
        extra["judge"] = JudgeReward(RequestRunner(judge_lm, judge_tokenizer))
    return make_reward(args.reward, format_regex=args.format_regex, target_length=args.target_length, extra=extra)


def rl_config(args: argparse.Namespace):
    """The ``RLConfig`` the flags ask for (the method's preset, with the given flags over it)."""
    from ..align import RLConfig

    flags = {"group_size": args.group_size, "epochs": args.epochs, "minibatches": args.minibatches,
             "clip": args.clip, "clip_high": args.clip_high, "kl_coef": args.kl_coef, "kl_target": args.kl_target,
             "aggregation": args.aggregation, "scale_rewards": args.scale_rewards,
             "baseline": getattr(args, "baseline", None), "gamma": getattr(args, "gamma", None),
             "lam": getattr(args, "lam", None), "value_coef": getattr(args, "value_coef", None)}
    given = {k: v for k, v in flags.items() if v is not None}
    return RLConfig.preset(args.verb, prompts_per_step=args.prompts_per_step, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, entropy_coef=args.entropy_coef, process=args.process,
                           **given)


def run_rl(args: argparse.Namespace) -> int:
    from .. import align
    from ..generate.engine import rollout_generate

    adapter, schedule = _setup(args)
    config = rl_config(args)
    train_rows, eval_rows = _prompt_rows(args)
    status(args, f"loading {args.model} ...")
    lm, tokenizer = _chat_model(args.model)
    reward = _reward(args, tokenizer)
    result = align.policy_optimization(
        lm, tokenizer, align.encode_prompts(tokenizer, train_rows), align.encode_prompts(tokenizer, eval_rows),
        rollout_generate(lm, tokenizer, config.temperature), reward, args.out, config=config, adapter=adapter,
        schedule=schedule, step_reward=align.LineSteps() if config.process else None, resume=args.resume)
    human = (f"{config.method} on {args.model}: {result['metric']} {result['eval_before']:.3f} → "
             f"{result['eval_after']:.3f} ({result['prompts']['eval']} prompts)\n"
             f"{result['steps']} steps, {sum(result['ms_per_step']) / max(len(result['ms_per_step']), 1) / 1000:.1f} "
             f"s/step, {result['tokens_per_s']:,.0f} tokens/s; adapter in {args.out} (lmlab chat --adapter {args.out})")
    emit(args, result, human)
    return 0
