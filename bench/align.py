"""Alignment and RL post-training on SmolLM2-135M-Instruct (LoRA, CPU), with TRL and stable-baselines3
as peers measured in the same run. Last line of stdout: one JSON object.

    python bench/align.py                          # every section at the default (CPU-sized) budget
    python bench/align.py --only grpo --steps 30 --seeds 0 1 2
    python bench/align.py --only dqn
    python bench/align.py --smoke                  # a tiny random model through every section (a minute)

Sections (``--only``):

* ``reward`` — a Bradley-Terry reward model (LoRA + scalar head) on the shared HH-RLHF pairs, split by a
  fixed rule (every 10th pair held out); held-out pairwise accuracy before/after against the
  length-only baseline, and its calibration (ECE).
* ``dpo`` — lmlab's DPO and TRL's ``DPOTrainer`` on the same exported weights, pairs, LoRA, steps, batch
  and learning rate: held-out implicit-reward accuracy and margin before/after, seconds per step.
  Pairs are those whose prompt + completion fit ``--max-length`` tokens (no truncation on either side).
* ``grpo`` — the verifiable task: single-digit addition ("What is 3 + 5? Answer with the number only."),
  reward 1 when the last number of the answer is the sum (GSM8K's flexible extraction). SmolLM2 gets
  about a third right greedily, so there is room both ways and every check is exact. lmlab's GRPO
  (several seeds: the seed-to-seed spread) and TRL's ``GRPOTrainer`` (rollouts by
  ``transformers.generate``) with the same group size, prompts per step, completion length,
  temperature, β, ε, loss aggregation, LoRA, learning rate and steps; held-out accuracy (greedy)
  before/after, the training-reward curves and seconds per step.
* ``ppo`` — lmlab's PPO (value head, GAE, 2 epochs × 2 minibatches per rollout) on the same task.
* ``unlikelihood`` — LoRA on WikiText-2 windows, likelihood alone vs likelihood + token-level
  unlikelihood (context candidates, α = 1): seq-rep-4 and distinct tokens of greedy continuations of
  held-out prefixes (and held-out loss), against the untrained model.
* ``dqn`` — lmlab's DQN and stable-baselines3's DQN on CartPole-v1, RL Zoo's settings for both: the
  first step at which the greedy policy's mean return over 10 episodes reaches 475.

Timing: both systems run in this process, one after the other, on ``--threads`` threads; the machine
load (``os.getloadavg``) is printed next to every figure. Compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("LMLAB_DATA", ROOT.parent / "shared" / "data"))
PREFERENCES = DATA / "preferences" / "hh_rlhf_harmless_base_test.jsonl"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

from lmlab import align  # noqa: E402
from lmlab.align.preferences import Truncation, encode  # noqa: E402
from lmlab.generate.engine import rollout_generate  # noqa: E402
from lmlab.models import load_model  # noqa: E402


def load() -> float:
    return round(os.getloadavg()[0], 2)


def log(**item) -> None:
    print(json.dumps(item), file=sys.stderr, flush=True)


# --- the model both systems train -------------------------------------------------------------------
def export_model(args: argparse.Namespace, work: Path) -> Path:
    """SmolLM2 (or, with --smoke, a tiny random llama with SmolLM2's tokenizer) as a Hugging Face directory
    that lmlab and transformers both load: the very same weights on both sides."""
    from lmlab.models.hf_import import export_hf_dir

    lm, tok = load_model("smollm2-135m-instruct")
    if args.smoke:
        from lmlab.models.config import TransformerConfig
        from lmlab.models.transformer import TransformerLM

        torch.manual_seed(0)
        cfg = TransformerConfig.from_preset("llama", vocab_size=lm.vocab_size, d_model=64, n_layers=2, n_heads=4,
                                            n_kv_heads=2, d_ff=128, context_length=512, tie_embeddings=True)
        special = {r: getattr(lm, r) for r in ("bos_id", "eos_id", "pad_id", "unk_id")}
        lm = TransformerLM(cfg, special)
    return export_hf_dir(lm, work / "hf", tok)


def hf_model(model_dir: Path):
    """(transformers model, its tokenizer with the chat template and lmlab's special tokens)."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    lm, tok = load_model(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"),
                                     eos_token=tok.id_to_token(lm.eos_id), pad_token=tok.id_to_token(lm.pad_id),
                                     chat_template=tok.chat_template, padding_side="left")
    model.generation_config.eos_token_id = lm.eos_id
    model.generation_config.pad_token_id = lm.pad_id
    return model, hf_tok


def peft_config(args: argparse.Namespace):
    from peft import LoraConfig

    return LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS,
                      task_type="CAUSAL_LM")


def schedule(args: argparse.Namespace, steps: int, lr: float, seed: int, batch_size: int = 4) -> align.Schedule:
    """lmlab's settings matched to TRL's defaults: constant learning rate, AdamW betas (0.9, 0.999)."""
    return align.Schedule(steps=steps, lr=lr, warmup=0, batch_size=batch_size, seed=seed,
                          extra={"schedule": "constant", "beta2": 0.999, "clip": 1.0})


class StepTimer:
    """A TRL callback recording each optimizer step's wall time and this process's CPU time (with one
    thread, CPU seconds measure the work done whatever the machine's load)."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self
        self.times: list[float] = []

        self.cpu: list[float] = []

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                outer.start, outer.cpu_start = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kw):
                outer.times.append(time.perf_counter() - outer.start)
                outer.cpu.append(time.process_time() - outer.cpu_start)

        self.callback = _Callback()


def cpu_per_step(out: Path) -> list[float]:
    """CPU seconds of each optimizer step of an lmlab run (its metrics.jsonl)."""
    records = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [x["cpu_ms_per_step"] / 1000 for x in records if "cpu_ms_per_step" in x]


def trl_common(args: argparse.Namespace, out: Path, steps: int, lr: float, seed: int) -> dict:
    return dict(output_dir=str(out), max_steps=steps, learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0,
                weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                seed=seed, data_seed=seed, bf16=False, disable_tqdm=True, dataloader_num_workers=0)


# --- preference sections ---------------------------------------------------------------------------------
def preference_split(args: argparse.Namespace, tok, max_length: int):
    """Train / held-out HH pairs (every 10th held out) that fit ``max_length`` tokens untruncated."""
    pairs = align.read_preferences(PREFERENCES)
    train, held = align.held_out_split(pairs, 10)
    limits = Truncation(max_length=10**6, max_prompt_length=10**6 - 1)

    def fits(p) -> bool:
        return all(len(e.prompt) + len(e.completion) <= max_length
                   for e in (encode(tok, p.prompt, p.chosen, limits), encode(tok, p.prompt, p.rejected, limits)))

    return [p for p in train if fits(p)][:args.train_pairs], [p for p in held if fits(p)][:args.eval_pairs]


def reward_section(args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    lm, tok = load_model(model_dir)
    train, held = preference_split(args, tok, args.max_length)
    began = time.perf_counter()
    r = align.reward_model(str(model_dir), lm, tok, train, held, work / "reward", adapter=align.Adapter(rank=args.rank),
                           schedule=schedule(args, args.reward_steps, args.reward_lr, 0, args.batch_size),
                           limits=Truncation(args.max_length, args.max_length - 1))
    from lmlab.eval.calibration import expected_calibration_error

    probs = r["probabilities"]
    ece = expected_calibration_error([max(p, 1 - p) for p in probs], [float(p > 0.5) for p in probs], n_bins=10)
    out = {"pairs": r["pairs"], "steps": r["steps"], "batch_size": args.batch_size, "lr": args.reward_lr,
           "accuracy_before": r["eval_before"], "accuracy_after": r["eval_after"],
           "length_baseline": r["length_baseline"], "ece_after": ece, "tokens_per_s": r["tokens_per_s"],
           "train_s_per_step": r["seconds"] / max(r["steps"], 1), "wall_s": time.perf_counter() - began, "load": load()}
    log(reward=out)
    return out


def dpo_lmlab(args, model_dir, train, held, work) -> dict:
    lm, tok = load_model(model_dir)
    r = align.preference_optimization(lm, tok, train, held, work / "dpo-lmlab", loss="sigmoid", beta=args.beta,
                                      adapter=align.Adapter(rank=args.rank, alpha=2.0 * args.rank, targets=None),
                                      schedule=schedule(args, args.dpo_steps, args.dpo_lr, 0, args.batch_size),
                                      limits=Truncation(args.max_length, args.max_length - 1))
    records = [json.loads(x) for x in (work / "dpo-lmlab" / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"accuracy_before": r["before"]["reward_accuracy"], "accuracy_after": r["after"]["reward_accuracy"],
            "margin_before": r["before"]["reward_margin"], "margin_after": r["after"]["reward_margin"],
            "kl_to_reference_after": r["after"]["kl_to_reference"],
            "s_per_step": [x["ms_per_step"] / 1000 for x in records if "ms_per_step" in x],
            "cpu_s_per_step": cpu_per_step(work / "dpo-lmlab"),
            "train_reward_accuracy": [x.get("reward_accuracy") for x in records], "load": load()}


def dpo_trl(args, model_dir, train, held, work) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tok = hf_model(model_dir)
    rows = lambda pairs: Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}  # noqa: E731
                                            for p in pairs])
    timer = StepTimer()
    config = DPOConfig(**trl_common(args, work / "dpo-trl", args.dpo_steps, args.dpo_lr, 0), beta=args.beta,
                       loss_type=["sigmoid"], per_device_train_batch_size=args.batch_size,
                       per_device_eval_batch_size=args.batch_size, max_length=None)
    trainer = DPOTrainer(model=model, args=config, train_dataset=rows(train), eval_dataset=rows(held),
                         processing_class=tok, peft_config=peft_config(args), callbacks=[timer.callback])
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    return {"accuracy_before": before["eval_rewards/accuracies"], "accuracy_after": after["eval_rewards/accuracies"],
            "margin_before": before["eval_rewards/margins"], "margin_after": after["eval_rewards/margins"],
            "s_per_step": timer.times, "cpu_s_per_step": timer.cpu, "load": load(),
            "note": "TRL counts a tie (every pair before training) as a miss; lmlab counts it half"}


def dpo_section(args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    _, tok = load_model(model_dir)
    train, held = preference_split(args, tok, args.max_length)
    out = {"pairs": {"train": len(train), "eval": len(held)}, "steps": args.dpo_steps, "batch_size": args.batch_size,
           "lr": args.dpo_lr, "beta": args.beta, "max_length": args.max_length}
    out["lmlab"] = dpo_lmlab(args, model_dir, train, held, work)
    log(dpo_lmlab=out["lmlab"])
    out["trl"] = dpo_trl(args, model_dir, train, held, work)
    log(dpo_trl=out["trl"])
    out["trl_over_lmlab_s_per_step"] = (statistics.median(out["trl"]["s_per_step"])
                                        / statistics.median(out["lmlab"]["s_per_step"]))
    out["trl_over_lmlab_cpu_s_per_step"] = (statistics.median(out["trl"]["cpu_s_per_step"])
                                            / statistics.median(out["lmlab"]["cpu_s_per_step"]))
    return out


# --- the verifiable task ----------------------------------------------------------------------------------
def task(args: argparse.Namespace):
    rows = align.arithmetic_problems(args.train_prompts + args.eval_prompts, seed=0)
    return rows[:args.train_prompts], rows[args.train_prompts:]


def grpo_config(args: argparse.Namespace, method: str = "grpo", **extra) -> align.RLConfig:
    return align.RLConfig.preset(method, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                                 max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 kl_coef=args.kl_coef, **extra)


def rl_lmlab(args, model_dir, work, seed: int, method: str = "grpo") -> dict:
    lm, tok = load_model(model_dir)
    train, held = task(args)
    extra = {} if method == "grpo" else {"group_size": 1 if method == "ppo" else args.group_size,
                                         "prompts_per_step": args.group_size * args.prompts_per_step
                                         if method == "ppo" else args.prompts_per_step,
                                         "epochs": 2, "minibatches": 2}
    config = grpo_config(args, method, clip=0.2, **({"aggregation": "sequence", "scale_rewards": "group"}
                                                    if method == "grpo" else {}))
    config = align.rl.with_overrides(config, **{k: v for k, v in extra.items()}) if extra else config
    r = align.policy_optimization(lm, tok, align.encode_prompts(tok, train), align.encode_prompts(tok, held),
                                  rollout_generate(lm, tok, args.temperature), align.NumberMatch(),
                                  work / f"{method}-lmlab-{seed}", config=config,
                                  adapter=align.Adapter(rank=args.rank, alpha=2.0 * args.rank),
                                  schedule=schedule(args, args.steps, args.lr, seed))
    return {"seed": seed, "accuracy_before": r["eval_before"], "accuracy_after": r["eval_after"],
            "train_reward": r["train_reward_curve"], "s_per_step": [m / 1000 for m in r["ms_per_step"]],
            "cpu_s_per_step": cpu_per_step(work / f"{method}-lmlab-{seed}"),
            "examples_after": r["after"]["examples"], "load": load()}


def hf_accuracy(model, tok, held, max_new_tokens: int, batch_size: int = 32) -> float:
    """Greedy answers by ``transformers.generate``, scored by the same reward."""
    model.eval()
    rewards = []
    for start in range(0, len(held), batch_size):
        chunk = held[start:start + batch_size]
        texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        answers = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        rewards += align.NumberMatch()([align.Sample(m, a, ans) for (m, ans), a in zip(chunk, answers, strict=True)])
    model.train()
    return sum(rewards) / len(rewards)


def grpo_trl(args, model_dir, work, seed: int) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tok = hf_model(model_dir)
    train, held = task(args)

    def number(prompts, completions, answer, **kw):
        return align.NumberMatch()([align.Sample(p, c[0]["content"], a)
                                    for p, c, a in zip(prompts, completions, answer, strict=True)])

    timer = StepTimer()
    config = GRPOConfig(**trl_common(args, work / f"grpo-trl-{seed}", args.steps, args.lr, seed),
                        per_device_train_batch_size=args.group_size * args.prompts_per_step,
                        num_generations=args.group_size, max_completion_length=args.max_new_tokens,
                        temperature=args.temperature, top_p=1.0, top_k=0, beta=args.kl_coef, epsilon=0.2,
                        loss_type="grpo", scale_rewards="group", num_iterations=1)
    data = Dataset.from_list([{"prompt": m, "answer": a} for m, a in train])
    trainer = GRPOTrainer(model=model, reward_funcs=number, args=config, train_dataset=data, processing_class=tok,
                          peft_config=peft_config(args), callbacks=[timer.callback])
    before = hf_accuracy(trainer.model, tok, held, args.max_new_tokens)
    trainer.train()
    after = hf_accuracy(trainer.model, tok, held, args.max_new_tokens)
    curve = [x["reward"] for x in trainer.state.log_history if "reward" in x]
    return {"seed": seed, "accuracy_before": before, "accuracy_after": after, "train_reward": curve,
            "s_per_step": timer.times, "cpu_s_per_step": timer.cpu, "load": load()}


def grpo_section(args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    out = {"task": "single-digit addition, reward = last number equals the sum", "steps": args.steps, "lr": args.lr,
           "group_size": args.group_size, "prompts_per_step": args.prompts_per_step,
           "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "kl_coef": args.kl_coef,
           "eval_prompts": args.eval_prompts, "lmlab": [], "trl": []}
    for i, seed in enumerate(args.seeds):
        out["lmlab"].append(rl_lmlab(args, model_dir, work, seed))
        log(grpo_lmlab=out["lmlab"][-1])
        if i < args.trl_seeds:  # interleaved with lmlab's, so both see the same load
            out["trl"].append(grpo_trl(args, model_dir, work, seed))
            log(grpo_trl=out["trl"][-1])
    gains = [r["accuracy_after"] - r["accuracy_before"] for r in out["lmlab"]]
    finals = [r["accuracy_after"] for r in out["lmlab"]]
    out["lmlab_gain_mean"] = statistics.mean(gains)
    out["lmlab_after_spread"] = (max(finals) - min(finals)) if len(finals) > 1 else None
    out["lmlab_after_std"] = statistics.stdev(finals) if len(finals) > 1 else None
    if out["trl"]:
        lm_step = statistics.median(s for r in out["lmlab"][:len(out["trl"])] for s in r["s_per_step"])
        trl_step = statistics.median(s for r in out["trl"] for s in r["s_per_step"])
        out["s_per_step_median"] = {"lmlab": lm_step, "trl": trl_step}
        out["trl_over_lmlab_s_per_step"] = trl_step / lm_step
        lm_cpu = statistics.median(s for r in out["lmlab"][:len(out["trl"])] for s in r["cpu_s_per_step"])
        trl_cpu = statistics.median(s for r in out["trl"] for s in r["cpu_s_per_step"])
        out["cpu_s_per_step_median"] = {"lmlab": lm_cpu, "trl": trl_cpu}
        out["trl_over_lmlab_cpu_s_per_step"] = trl_cpu / lm_cpu
    return out


def ppo_section(args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    r = rl_lmlab(args, model_dir, work, args.seeds[0], method="ppo")
    log(ppo=r)
    return {"rollouts_per_batch": args.group_size * args.prompts_per_step, "epochs": 2, "minibatches": 2, **r}


def unlikelihood_section(args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    """LoRA on WikiText-2 windows with the likelihood alone and with token-level unlikelihood (context
    candidates, α = 1); repetition of greedy continuations of held-out prefixes, and held-out loss."""
    from lmlab.align.preferences import ItemBatches
    from lmlab.align.unlikelihood import UnlikelihoodObjective, repetition
    from lmlab.train import CausalLM, train

    text = (DATA / "wikitext-2" / "train.txt").read_text(encoding="utf-8")[:200_000]
    valid = (DATA / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:60_000]
    window, n_new = args.ul_window, args.ul_new_tokens

    def windows(source: str, tok) -> list[list[int]]:
        ids = tok.encode(source)
        return [ids[i:i + window + 1] for i in range(0, len(ids) - window - 1, window)]

    def batch(rows):
        t = torch.tensor(rows)
        return {"input": t[:, :-1], "target": t[:, 1:]}

    out = {"steps": args.ul_steps, "window": window, "new_tokens": n_new, "prefixes": args.ul_prefixes}
    for variant in ("base", "mle", "unlikelihood"):
        lm, tok = load_model(model_dir)
        held = windows(valid, tok)
        align.Adapter(rank=args.rank, alpha=2.0 * args.rank).apply(lm)
        if variant != "base":
            objective = CausalLM() if variant == "mle" else UnlikelihoodObjective(alpha=1.0)
            config = schedule(args, args.ul_steps, args.ul_lr, 0, args.batch_size).train_config()
            train(lm, objective, ItemBatches(windows(text, tok), args.batch_size, batch, seed=0), config,
                  work / f"ul-{variant}")
        lm.eval()
        generate = rollout_generate(lm, tok)
        prefixes = [w[:32] for w in held[:args.ul_prefixes]]
        continuations = generate(prefixes, n_new, list(range(len(prefixes))), True)
        with torch.no_grad():
            losses = [float(CausalLM()(lm, batch(held[i:i + 4]))[0]) for i in range(0, 16, 4)]
        out[variant] = {**repetition(continuations, 4), "held_out_loss": statistics.mean(losses), "load": load(),
                        "example": tok.decode(continuations[0])}
        log(unlikelihood={variant: out[variant]})
    return out


def dqn_section(args: argparse.Namespace) -> dict:
    import numpy as np
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    from lmlab.align.dqn import DQNConfig, cartpole, train_dqn

    steps = 2000 if args.smoke else args.dqn_steps
    config = DQNConfig(total_steps=steps, seed=0)
    ours = train_dqn(cartpole, config, eval_every=args.dqn_eval_every, eval_episodes=10)
    ours.pop("q_network")
    env = cartpole()
    peer = DQN("MlpPolicy", env, learning_rate=config.lr, batch_size=config.batch_size, buffer_size=config.buffer_size,
               learning_starts=config.learning_starts, gamma=config.gamma, target_update_interval=config.target_update,
               train_freq=config.train_freq, gradient_steps=config.gradient_steps,
               exploration_fraction=config.exploration_fraction, exploration_final_eps=config.eps_end,
               policy_kwargs={"net_arch": list(config.hidden)}, seed=0, device="cpu")
    peer_evals, reached, began = [], None, time.perf_counter()
    for done in range(args.dqn_eval_every, steps + 1, args.dqn_eval_every):
        peer.learn(args.dqn_eval_every, reset_num_timesteps=False)
        mean, _ = evaluate_policy(peer, cartpole(), n_eval_episodes=10, deterministic=True)
        peer_evals.append({"step": done, "mean_return": float(mean)})
        if reached is None and mean >= 475:
            reached = done
    return {"env": "CartPole-v1", "threshold": 475, "budget_steps": steps,
            "lmlab": {"steps_to_threshold": ours["steps_to_threshold"], "evaluations": ours["evaluations"],
                      "seconds": ours["seconds"]},
            "stable_baselines3": {"steps_to_threshold": reached, "evaluations": peer_evals,
                                  "seconds": time.perf_counter() - began},
            "lmlab_final_mean_return": float(np.mean([e["mean_return"] for e in ours["evaluations"][-1:]])),
            "load": load()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=["reward", "dpo", "grpo", "ppo", "dqn"])
    p.add_argument("--smoke", action="store_true", help="a tiny random model and budget: checks the script runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=160, help="preference pairs: tokens of prompt + completion")
    p.add_argument("--train-pairs", type=int, default=400)
    p.add_argument("--eval-pairs", type=int, default=64)
    p.add_argument("--reward-steps", type=int, default=30)
    p.add_argument("--reward-lr", type=float, default=5e-4)
    p.add_argument("--dpo-steps", type=int, default=20)
    p.add_argument("--dpo-lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=15, help="GRPO / PPO optimizer steps")
    p.add_argument("--lr", type=float, default=2e-4, help="GRPO / PPO learning rate (LoRA)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--trl-seeds", type=int, default=1, help="how many of --seeds TRL also runs")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--kl-coef", type=float, default=0.04)
    p.add_argument("--train-prompts", type=int, default=400)
    p.add_argument("--eval-prompts", type=int, default=48)
    p.add_argument("--ul-steps", type=int, default=20, help="unlikelihood: optimizer steps of each variant")
    p.add_argument("--ul-lr", type=float, default=5e-4)
    p.add_argument("--ul-window", type=int, default=96)
    p.add_argument("--ul-new-tokens", type=int, default=48)
    p.add_argument("--ul-prefixes", type=int, default=16)
    p.add_argument("--dqn-steps", type=int, default=50_000)
    p.add_argument("--dqn-eval-every", type=int, default=2_500)
    p.add_argument("--work", default=None, help="keep the runs here (default: a temporary directory)")
    args = p.parse_args()
    if args.smoke:
        args.train_pairs, args.eval_pairs, args.reward_steps, args.dpo_steps, args.steps = 16, 8, 2, 2, 2
        args.eval_prompts, args.seeds, args.train_prompts, args.dqn_eval_every = 8, [0, 1], 32, 1000
        args.ul_steps, args.ul_prefixes, args.ul_new_tokens = 2, 4, 12
    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="align-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"bench": "align", "threads": args.threads, "load_start": load(), "smoke": args.smoke,
              "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"}
    needs_model = set(args.only) & {"reward", "dpo", "grpo", "ppo", "unlikelihood"}
    model_dir = export_model(args, work) if needs_model else None
    sections = {"reward": lambda: reward_section(args, model_dir, work), "dpo": lambda: dpo_section(args, model_dir, work),
                "grpo": lambda: grpo_section(args, model_dir, work), "ppo": lambda: ppo_section(args, model_dir, work),
                "unlikelihood": lambda: unlikelihood_section(args, model_dir, work), "dqn": lambda: dqn_section(args)}
    for name in args.only:
        began = time.perf_counter()
        result[name] = sections[name]()
        result[name]["section_wall_s"] = round(time.perf_counter() - began, 1)
        (work / "align-bench.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    result["load_end"] = load()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
