"""Fine-tuning SmolLM2-135M-Instruct on CPU with every method of ``lmlab finetune``, and a
user-visible result: after LoRA SFT the model answers in a fixed format it did not use before.

    python bench/finetune.py                       # every method, equal steps; last line: JSON
    python bench/finetune.py --steps 30 --batch-size 4 --max-seq-len 256
    python bench/finetune.py --methods full lora --precisions fp32 bf16   # the LoRA/full ratios
    python bench/finetune.py --task format         # format-following rate before / after LoRA

Methods: each runs the library recipe ``lmlab.train.finetune.finetune`` in its own process (2 threads), so
peak memory (the process's RSS high-water mark during the training steps) is not shared; the same
Alpaca rows, steps, batch and sequence length for all. Reported per method: trainable parameters,
tokens/s over the optimizer steps, measured peak memory next to the predicted one, and the
held-out assistant-token loss before and after. Full fine-tuning is the reference of the ratios
(target: LoRA lowers the loss, trains at >= 1.5x full's tokens/s with <= 60 % of its peak memory),
at equal precision and, with ``--precisions fp32 bf16``, also LoRA in bf16 (frozen base stored in
bf16, the usual LoRA recipe) against full fine-tuning in fp32.

Format task: "What is A plus B?" must be answered as ``ANSWER: <number>``; train and held-out
prompts use disjoint number pairs. The base model and the LoRA-tuned model (with the adapter,
greedy, through the engine) answer the held-out prompts; reported: the share of
replies in the exact format, and the share that are also correct.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("full", "lora", "qlora", "adapter", "prefix", "prompt", "ia3", "bitfit")
ALPACA = Path(os.environ.get("LMLAB_DATA", ROOT.parent / "shared" / "data")) / "instructions" / "alpaca_5000.jsonl"
FORMAT = re.compile(r"^ANSWER: (\d+)$")


def _in_child(job, args, kwargs, results) -> None:
    import torch

    from lmlab.core.progress import set_quiet

    torch.set_num_threads(2)
    set_quiet(True)
    try:
        results.put(("ok", job(*args, **kwargs)))
    except Exception as exc:  # handed back to the parent, which stops the bench with it
        results.put(("error", repr(exc)))


def isolated(job, *args, **kwargs):
    """``job(*args, **kwargs)`` in a fresh 2-thread process (so peak memory is the job's own); its result."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_in_child, args=(job, args, kwargs, results))
    process.start()
    status, value = results.get()
    process.join()
    if status != "ok":
        raise SystemExit(f"{job.__name__} failed: {value}")
    return value


def finetune_job(model: str, data: Path, out: Path, eval_data: Path, **config) -> dict:
    from lmlab.train.finetune import FinetuneConfig, finetune

    return finetune(model, data, FinetuneConfig(**config), out=out, eval_data=eval_data)


def answers_job(model: str, questions: list[str], adapter: Path | None = None) -> list[str]:
    """Greedy chat answers (12 tokens at most) of the model, with the adapter if given."""
    from lmlab.generate.chat_template import chat_prompt
    from lmlab.generate.engine import Engine, Request
    from lmlab.models import load_model
    from lmlab.peft import load_adapter

    lm, tokenizer = load_model(model)
    if adapter is not None:
        load_adapter(lm, adapter)
    prompts = [chat_prompt(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    outs = Engine(lm.eval(), tokenizer, greedy=True).generate([Request(p, max_new_tokens=12) for p in prompts])
    return [o.text for o in outs]


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
            r = isolated(finetune_job, args.model, train, work / name, held_out, method=method, steps=args.steps,
                         batch_size=args.batch_size, max_seq_len=args.max_seq_len, seed=0, precision=precision,
                         activation_checkpointing=args.activation_checkpointing)
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


def follow_rates(answers: list[str], pairs: list[tuple[int, int]]) -> dict:
    texts = [t.strip() for t in answers]
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
    questions = [f"What is {a} plus {b}?" for a, b in held_out]
    before = follow_rates(isolated(answers_job, args.model, questions), held_out)
    print(json.dumps({"before": before}), file=sys.stderr, flush=True)
    tuned = isolated(finetune_job, args.model, work / "fmt_train.jsonl", work / "fmt_lora", work / "fmt_eval.jsonl",
                     method="lora", steps=args.format_steps, batch_size=2, max_seq_len=128, lr=2e-3)
    after = follow_rates(isolated(answers_job, args.model, questions, work / "fmt_lora"), held_out)
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
