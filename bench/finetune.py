"""Fine-tuning SmolLM2-135M-Instruct on CPU with every method of ``lmlab finetune``, and a
user-visible result: after LoRA SFT the model answers in a fixed format it did not use before.

    python bench/finetune.py                       # every method, equal steps; last line: JSON
    python bench/finetune.py --steps 30 --batch-size 4 --max-seq-len 256
    python bench/finetune.py --methods full lora --precisions fp32 bf16   # the LoRA/full ratios
    python bench/finetune.py --task format         # format-following rate before / after LoRA

Methods: each runs ``python -m lmlab finetune ... --json`` in its own subprocess (2 threads), so
peak memory (the process's RSS high-water mark during the training steps) is not shared; the same
Alpaca rows, steps, batch and sequence length for all. Reported per method: trainable parameters,
tokens/s over the optimizer steps, measured peak memory next to the predicted one, and the
held-out assistant-token loss before and after. Full fine-tuning is the reference of the ratios
(target: LoRA lowers the loss, trains at >= 1.5x full's tokens/s with <= 60 % of its peak memory),
at equal precision and, with ``--precisions fp32 bf16``, also LoRA in bf16 (frozen base stored in
bf16, the usual LoRA recipe) against full fine-tuning in fp32.

Format task: "What is A plus B?" must be answered as ``ANSWER: <number>``; train and held-out
prompts use disjoint number pairs. The base model and the LoRA-tuned model (``lmlab generate
--adapter``, greedy, through the engine) answer the held-out prompts; reported: the share of
replies in the exact format, and the share that are also correct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "lora", "qlora", "adapter", "prefix", "prompt", "ia3", "bitfit")
ALPACA = Path(os.environ.get("LMLAB_DATA", ROOT.parent / "shared" / "data")) / "instructions" / "alpaca_5000.jsonl"
FORMAT = re.compile(r"^ANSWER: (\d+)$")


def lmlab(*args: str) -> dict:
    """Run ``python -m lmlab ARGS --json --quiet`` in a fresh 2-thread process; its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "lmlab", *args, "--json", "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"lmlab {' '.join(args[:3])} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def methods_bench(args: argparse.Namespace, work: Path) -> dict:
    rows = [json.loads(line) for line in ALPACA.read_text(encoding="utf-8").splitlines()[:args.rows + args.eval_rows]]
    train, held_out = work / "train.jsonl", work / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:args.rows]), encoding="utf-8")
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows[args.rows:]), encoding="utf-8")
    results = {}
    for precision in args.precisions:
        for method in args.methods:
            name = method if precision == "fp32" else f"{method}_{precision}"
            start = time.perf_counter()
            r = lmlab("finetune", "--model", args.model, "--method", method, "--data", str(train), "--eval-data",
                      str(held_out), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                      "--max-seq-len", str(args.max_seq_len), "--out", str(work / name), "--seed", "0",
                      "--precision", precision, *(["--activation-checkpointing"] if args.activation_checkpointing else []))
            results[name] = {k: r[k] for k in ("trainable_params", "trainable_percent", "tokens_per_s",
                                               "peak_memory_bytes", "eval_loss_before", "eval_loss_after", "lr")}
            results[name]["predicted_memory_bytes"] = r["predicted_memory_bytes"]["total"]
            results[name]["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    out = {"model": args.model, "device": "cpu, 2 threads", "steps": args.steps, "batch_size": args.batch_size,
           "max_seq_len": args.max_seq_len, "train_rows": args.rows, "eval_rows": args.eval_rows,
           "activation_checkpointing": args.activation_checkpointing, "methods": results}
    for lora, full in (("lora", "full"), ("lora_bf16", "full_bf16"), ("lora_bf16", "full")):
        if lora in results and full in results:
            out[f"{lora}_vs_{full}"] = ratios(results[lora], results[full])
    return out


def ratios(lora: dict, full: dict) -> dict:
    """LoRA against full fine-tuning: the issue's target is >= 1.5x the tokens/s at <= 60 % of the peak memory."""
    out = {"tokens_per_s_ratio": round(lora["tokens_per_s"] / full["tokens_per_s"], 3),
           "peak_memory_ratio": round(lora["peak_memory_bytes"] / full["peak_memory_bytes"], 3),
           "lora_lowers_heldout_loss": lora["eval_loss_after"] < lora["eval_loss_before"]}
    out["target_met"] = out["tokens_per_s_ratio"] >= 1.5 and out["peak_memory_ratio"] <= 0.6 and \
        out["lora_lowers_heldout_loss"]
    return out


def format_rows(pairs: list[tuple[int, int]]) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                          {"role": "assistant", "content": f"ANSWER: {a + b}"}]} for a, b in pairs]


def follow_rates(result: dict, pairs: list[tuple[int, int]]) -> dict:
    texts = [s["text"].strip() for s in result["samples"]]
    matches = [FORMAT.match(t) for t in texts]
    correct = [m is not None and int(m.group(1)) == a + b for m, (a, b) in zip(matches, pairs, strict=True)]
    return {"format_rate": sum(m is not None for m in matches) / len(texts), "correct_rate": sum(correct) / len(texts),
            "examples": texts[:3]}


def format_task(args: argparse.Namespace, work: Path) -> dict:
    rng = random.Random(0)
    pairs = rng.sample([(a, b) for a in range(1, 50) for b in range(1, 50)], args.format_train + args.format_eval)
    train, held_out = pairs[:args.format_train], pairs[args.format_train:]
    (work / "fmt_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in format_rows(train)), encoding="utf-8")
    (work / "fmt_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in format_rows(held_out)),
                                         encoding="utf-8")
    prompts = work / "fmt_prompts.txt"
    prompts.write_text("".join(f"What is {a} plus {b}?\n" for a, b in held_out), encoding="utf-8")
    common = ("generate", "--model", args.model, "--prompts-file", str(prompts), "--chat", "--greedy",
              "--max-new-tokens", "12")
    before = follow_rates(lmlab(*common), held_out)
    print(json.dumps({"before": before}), file=sys.stderr, flush=True)
    tuned = lmlab("finetune", "--model", args.model, "--method", "lora", "--data", str(work / "fmt_train.jsonl"),
                  "--eval-data", str(work / "fmt_eval.jsonl"), "--steps", str(args.format_steps), "--batch-size", "2",
                  "--max-seq-len", "128", "--lr", "2e-3", "--out", str(work / "fmt_lora"))
    after = follow_rates(lmlab(*common, "--adapter", str(work / "fmt_lora")), held_out)
    return {"task": "answer 'What is A plus B?' as 'ANSWER: <A+B>'", "train_prompts": len(train),
            "heldout_prompts": len(held_out), "lora_steps": args.format_steps,
            "eval_loss_before": tuned["eval_loss_before"], "eval_loss_after": tuned["eval_loss_after"],
            "before": before, "after": after}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["methods", "format"], default="methods")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="bf16: autocast, frozen linear weights stored in bf16 (lmlab finetune --precision bf16)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="every method recomputes its activations in the backward pass (lmlab finetune's flag)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--rows", type=int, default=400, help="Alpaca rows to train on")
    p.add_argument("--eval-rows", type=int, default=32, help="held-out Alpaca rows (the ones after --rows)")
    p.add_argument("--format-train", type=int, default=200)
    p.add_argument("--format-eval", type=int, default=30)
    p.add_argument("--format-steps", type=int, default=40)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-finetune-") as tmp:
        result = methods_bench(args, Path(tmp)) if args.task == "methods" else format_task(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
