"""Self-Instruct with SmolLM2-135M-Instruct, then LoRA SFT on the generated set vs on as many Alpaca rows.

    python bench/self_instruct.py                        # everything; last line: JSON
    python bench/self_instruct.py --out /tmp/si --n 200 --steps 20 --train-batch 2 --judge-prompts 24  # shorter

Stages (each writes into ``--out`` and is reused when its file is already there, so an
interrupted run resumes):

1. ``instructions.json`` (step 1), then ``self_instruct.jsonl`` + ``self_instruct.json``: Self-Instruct on the model
   (in process, batched through the engine) from the 175 seed tasks: ``--n`` instructions with the
   novelty statistics (ROUGE-L to the nearest instruction in the pool) and rejections per reason.
2. ``alpaca_train.jsonl`` (the first R Alpaca rows, R = the generated rows) and ``heldout.jsonl``
   (the last ``--heldout`` Alpaca rows, never trained on).
3. ``lora_self_instruct/``, ``lora_alpaca/``: ``lmlab.train.finetune.finetune`` (LoRA, same steps,
   batch, length and seed) on each; the held-out Alpaca assistant-token loss before and after.
4. Pairwise LM judge (``lmlab.eval.pairwise``): both tuned models answer the first
   ``--judge-prompts`` held-out prompts (greedy, batched); the base model judges every pair in both
   orders (position swap) from the log-likelihoods of " 1" / " 2"; reported: the Self-Instruct
   model's win rate (ties half), the first-position win rate and the swap consistency.

A judge of 135M parameters is weak: the swap consistency says how much of its verdict is position.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMLAB_DATA", ROOT.parent / "shared" / "data")) / "instructions"
MODEL = "smollm2-135m-instruct"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", file=sys.stderr, flush=True)


def generate(out: Path, n: int, batch_size: int, seed: int) -> dict:
    """Self-Instruct's three steps, the kept instructions saved first (a rerun resumes after step 1)."""
    from lmlab.agents.models import LocalModel
    from lmlab.eval.records import write_jsonl
    from lmlab.instruct import SynthesisResult, read_seed_tasks
    from lmlab.instruct.self_instruct import (
        classify_instructions,
        generate_instances,
        generate_instructions,
    )

    rows_path, summary_path, step1 = out / "self_instruct.jsonl", out / "self_instruct.json", out / "instructions.json"
    if rows_path.exists() and summary_path.exists():
        log(f"reusing {rows_path}")
        return json.loads(summary_path.read_text())
    seeds = read_seed_tasks(DATA / "self_instruct_seed_tasks.jsonl")
    model = LocalModel.load(MODEL)
    start = time.perf_counter()
    if step1.exists():
        saved = json.loads(step1.read_text())
        instructions, result = saved["instructions"], SynthesisResult([], Counter(saved["counts"]), saved["nearest_kept"],
                                                                      saved["nearest_all"], saved["prompts"])
        start -= saved["seconds"]
        log(f"reusing {step1}")
    else:
        instructions, result = generate_instructions(
            model, seeds, n, batch_size=batch_size, seed=seed,
            on_progress=lambda kept, wanted: log(f"{kept}/{wanted} instructions kept"))
        step1.write_text(json.dumps({"instructions": instructions, "counts": result.counts,
                                     "nearest_kept": result.nearest_kept, "nearest_all": result.nearest_all,
                                     "prompts": result.prompts, "seconds": time.perf_counter() - start}))
    log("classification?")
    classification = classify_instructions(model, instructions, seeds, batch_size=batch_size, seed=seed)
    log("instances")
    generate_instances(model, instructions, classification, seeds, batch_size=batch_size, seed=seed, result=result)
    write_jsonl(rows_path, result.rows)
    summary = {**result.summary(), "seconds": time.perf_counter() - start}
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def tune(out: Path, name: str, data: Path, heldout: Path, steps: int, batch_size: int, seed: int) -> dict:
    from lmlab.train.finetune import FinetuneConfig, finetune

    target = out / f"lora_{name}"
    if (target / "finetune.json").exists():
        log(f"reusing {target}")
        return json.loads((target / "finetune.json").read_text())
    config = FinetuneConfig(method="lora", steps=steps, batch_size=batch_size, max_seq_len=256, seed=seed,
                            device="cpu")
    return finetune(MODEL, data, config, out=target, eval_data=heldout, on_status=log)


def answers(adapter: Path, prompts: list[str], max_tokens: int) -> list[str]:
    from lmlab.agents.models import Generation, LocalModel
    from lmlab.models import load_model
    from lmlab.peft import load_adapter

    lm, tokenizer = load_model(MODEL)
    load_adapter(lm, adapter)
    model = LocalModel(lm.eval(), tokenizer, name=str(adapter))
    requests = [Generation(messages=[{"role": "user", "content": p}], max_tokens=max_tokens) for p in prompts]
    return [r[0].text.strip() for r in model.generate(requests)]


def judge(out: Path, heldout_rows: list[dict], count: int, max_tokens: int) -> dict:
    from lmlab.eval.pairwise import judge_all_pairs, position_bias
    from lmlab.eval.requests import RequestRunner
    from lmlab.models import load_model

    path = out / "judgements.json"
    if path.exists():
        log(f"reusing {path}")
        return json.loads(path.read_text())
    rows = heldout_rows[:count]
    prompts = [r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "") for r in rows]
    replies = {name: answers(out / f"lora_{name}", prompts, max_tokens) for name in ("self_instruct", "alpaca")}
    log("judging")
    lm, tokenizer = load_model(MODEL)
    runner = RequestRunner(lm, tokenizer, batch_size=8)
    records = [{"prompt": p, "answers": {n: replies[n][i] for n in replies}} for i, p in enumerate(prompts)]
    judgements = judge_all_pairs(runner, records)
    score = sum(1.0 if {"a": j["a"], "b": j["b"]}.get(j["winner"]) == "self_instruct" else
                0.5 if j["winner"] == "tie" else 0.0 for j in judgements)
    result = {"prompts": len(prompts), "judgements": len(judgements),
              "self_instruct_win_rate": score / len(judgements), **position_bias(judgements),
              "examples": records[:3]}
    path.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/lmlab_self_instruct")
    p.add_argument("--n", type=int, default=200, help="instructions to generate")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per engine call")
    p.add_argument("--steps", type=int, default=60, help="LoRA steps per run")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--heldout", type=int, default=64, help="Alpaca rows held out for the loss")
    p.add_argument("--judge-prompts", type=int, default=48)
    p.add_argument("--answer-tokens", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", choices=["generate", "tune", "judge"], default="judge")
    args = p.parse_args()

    import torch

    from lmlab.core.progress import set_quiet
    from lmlab.data.corpus import read_jsonl
    from lmlab.eval.records import write_jsonl

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    set_quiet(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    result: dict = {"model": MODEL, "n": args.n, "seed": args.seed, "load_before": load_before}
    result["generation"] = generate(out, args.n, args.batch_size, args.seed)
    if args.stop_after != "generate":
        generated = read_jsonl(out / "self_instruct.jsonl")
        alpaca = read_jsonl(DATA / "alpaca_5000.jsonl")
        heldout_rows = alpaca[-args.heldout:]
        write_jsonl(out / "alpaca_train.jsonl", alpaca[:len(generated)])
        write_jsonl(out / "heldout.jsonl", heldout_rows)
        result["train_rows"] = len(generated)
        for name, data in (("self_instruct", out / "self_instruct.jsonl"), ("alpaca", out / "alpaca_train.jsonl")):
            r = tune(out, name, data, out / "heldout.jsonl", args.steps, args.train_batch, args.seed)
            result[f"lora_{name}"] = {k: r[k] for k in ("steps", "eval_loss_before", "eval_loss_after",
                                                        "tokens_per_s", "train_loss_final")}
        if args.stop_after == "judge":
            result["pairwise"] = judge(out, heldout_rows, args.judge_prompts, args.answer_tokens)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
