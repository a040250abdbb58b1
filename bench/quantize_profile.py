"""Where one decode step's milliseconds go: lmlab's quantized SmolLM2-135M against llama.cpp.

For each lmlab variant (the embedded GGUF's Q4_1 codes kept quantized — the fastest 4-bit path —
and weight-only int8), one greedy request of ``--new-tokens`` tokens runs through the engine twice:
once plain (milliseconds per decode step) and once under ``torch.profiler``, whose per-operator
self CPU times, per step, are grouped (packed int4/int8 matmuls, float matmuls, attention, norms,
dtype casts, the rest); what the operators do not account for is Python and dispatch overhead.
llama.cpp (``llama-cpp-python``) decodes the same prompt on the same file in the same run, so the
ratio and the milliseconds it would take to reach llama.cpp are side by side. The CPU's ISA and
the load are printed; the last line is one JSON object.
Run: python bench/quantize_profile.py [--threads 2] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.models.quantized import cpu_isa, kernel_dtype, quantized_layers  # noqa: E402
from lmlab.quant import quantize_model  # noqa: E402
from lmlab.quant.report import decode_speed  # noqa: E402
from lmlab.tokenizers import smollm2_gguf  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_inference", HERE / "inference.py")
inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inference)

#: operator name fragments → group (first match wins)
GROUPS = (("int4pack_mm", "packed int4 matmul"), ("int8pack_mm", "packed int8 matmul"),
          ("scaled_dot_product", "attention"), ("flash_attention", "attention"), ("softmax", "attention"),
          ("rms_norm", "norms"), ("aten::mm", "float matmul"), ("addmm", "float matmul"), ("aten::bmm", "float matmul"),
          ("_to_copy", "dtype casts / copies"), ("aten::copy_", "dtype casts / copies"),
          ("aten::embedding", "embedding"), ("index_select", "embedding"))
#: wrapper operators whose time is their children's (counted there, not again)
WRAPPERS = ("aten::linear", "aten::matmul", "aten::to", "aten::_weight_int4pack_mm_with_scales_and_zeros")


def group_of(name: str) -> str:
    return next((g for key, g in GROUPS if key in name), "other operators (elementwise, views, sampling)")


def profile_step(model, tok, prompt: list[int], new_tokens: int) -> dict:
    """Plain ms per decode step, then the profiler's per-group ms per step of a second run."""
    plain = decode_speed(model, tok, prompt, new_tokens)  # warms up too
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = decode_speed(model, tok, prompt, new_tokens)
    # the profiled run holds the warm-up, prefill and decode of its request: scale to one decode step
    steps = 4 + new_tokens  # decode_speed's warm-up request makes 4 tokens
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key in WRAPPERS or event.key.startswith("ProfilerStep"):
            continue
        ms = event.self_cpu_time_total / 1000 / steps
        groups[group_of(event.key)] = groups.get(group_of(event.key), 0.0) + ms
    step_ms = 1000 / plain["decode_tokens_per_s"]
    operators = sum(groups.values())
    return {"decode_tokens_per_s": plain["decode_tokens_per_s"], "ms_per_step": step_ms,
            "profiled_ms_per_step": 1000 / profiled["decode_tokens_per_s"],
            "ms_per_step_by_group": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
            "operators_ms": operators, "python_and_dispatch_ms": max(step_ms - operators, 0.0),
            "kernels": sorted({m.kernel for m in quantized_layers(model).values()})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {"cpu_isa": cpu_isa(), "kernel_dtype": str(kernel_dtype()).removeprefix("torch."),
                    "threads": args.threads, "torch": torch.__version__, "loads": [os.getloadavg()[0]]}
    fp32, tok = load_model("smollm2-135m-instruct")
    prompt = chat_prompt(tok, [{"role": "user", "content": inference.QUESTIONS[0]}])
    variants = {"gguf-Q4_1": lambda: load_model("smollm2-135m-instruct", quantized=True)[0],
                "int8": lambda: quantize_model(fp32, "int8")}
    llm = inference.llama_cpp_model(Path(smollm2_gguf()), args.threads)
    peer = inference.llama_cpp_run(llm, prompt, args.new_tokens, tok.eos_id) if llm is not None else None
    for label, build in variants.items():
        report[label] = profile_step(build(), tok, prompt, args.new_tokens)
        report["loads"].append(os.getloadavg()[0])
        print(json.dumps({label: report[label]}), flush=True)
    if llm is not None:
        again = inference.llama_cpp_run(llm, prompt, args.new_tokens, tok.eos_id)  # before and after, interleaved
        tps = max(peer["decode_tokens_per_s"], again["decode_tokens_per_s"])
        report["llama.cpp Q4_1"] = {"decode_tokens_per_s": tps, "ms_per_step": 1000 / tps}
        report["ratio_gguf_q4_1_vs_llama_cpp"] = report["gguf-Q4_1"]["decode_tokens_per_s"] / tps
    report["loads"].append(os.getloadavg()[0])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
