"""Quantized SmolLM2-135M: lmlab's quantizers and kept-quantized GGUF against llama.cpp, quality and speed.

Every variant starts from the same weights: the embedded GGUF (Q4_1) dequantised to float32 is the
reference ("fp32"); lmlab quantizes it with each method, and llama.cpp quantizes lmlab's F16
export of it with its own quantizer (``llama_model_quantize``) to Q8_0 and Q4_0 — so both
sides' errors are measured against one float model. "lmlab gguf-Q4_1" runs the embedded file's
own codes through lmlab's packed kernels; llama.cpp Q4_1 runs that file itself.

Quality, on the first ``--eval-tokens`` tokens of WikiText-2's test split with sliding windows
(``--window``/``--stride``): perplexity, its increase over fp32, mean KL(fp32 ‖ variant) and top-1
agreement with fp32 at every scored position (llama.cpp's logits come from ``logits_all``).
Speed: batch 1, greedy, ``--new-tokens`` new tokens (EOS banned), the same chat prompt,
``--threads`` threads for everyone, variants timed interleaved for ``--repeats`` rounds with the
1-minute load average printed per round; medians and ratios to llama.cpp from the same run.
GGUF round trip: llama.cpp's next-token logits on lmlab's own Q8_0/Q4_0/Q4_1 exports against
lmlab's on the same files (kept quantized), and lmlab on llama.cpp's Q8_0/Q4_0/Q4_K_M files.
The CPU's ISA and the kernel path of each lmlab variant are printed. The last line is one JSON object.
Run: python bench/quantize.py [--threads 2] [--repeats 3] [--eval-tokens 4096]
Needs ``llama-cpp-python`` (bench extra) for the llama.cpp columns; without it they are skipped.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmlab.data import open_corpus  # noqa: E402
from lmlab.formats.gguf import read_gguf  # noqa: E402
from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.lm import windows  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.models.gguf_export import export_gguf  # noqa: E402
from lmlab.models.gguf_import import load_gguf  # noqa: E402
from lmlab.models.quantized import cpu_flags, cpu_isa, kernel_dtype, quantized_layers  # noqa: E402
from lmlab.quant import quantize_model  # noqa: E402
from lmlab.quant.calibration import calibration_ids  # noqa: E402
from lmlab.quant.report import decode_speed, text_tokens, weight_bits  # noqa: E402
from lmlab.tokenizers import smollm2_gguf  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_inference", HERE / "inference.py")
inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inference)  # llama.cpp's model loading and timed run, written once there

#: lmlab variants: label → (method, options); group 32 symmetric 4-bit is Q4_0's 4.5 bits a weight,
#: group 32 with zero points Q4_1's 5.0, int8 group 32 Q8_0's 8.5
LMLAB = {"int8": ("int8", {}), "int8-g32": ("int8-group", {"group_size": 32}),
         "int4-g32": ("int4", {"group_size": 32}), "int4-zp-g32": ("int4-zeropoint", {"group_size": 32}),
         "nf4-g64": ("nf4", {"group_size": 64}), "hqq-g32": ("hqq", {"group_size": 32}),
         "gptq-g32": ("gptq", {"group_size": 32, "symmetric": True}),
         "gptq-zp-g32": ("gptq", {"group_size": 32, "act_order": True}),
         "awq-g32": ("awq", {"group_size": 32, "symmetric": True}),
         "smoothquant-w8a8": ("smoothquant", {}),
         # the tied head in 8 bits, as llama.cpp's Q4_0/Q4_1 files keep it: equal bits per weight to those files
         "int4-g32-head8": ("int4", {"group_size": 32, "head_method": "int8-group"}),
         "gptq-g32-head8": ("gptq", {"group_size": 32, "symmetric": True, "head_method": "int8-group"})}
SPEED = ("fp32", "gguf-Q4_1", "int8", "int8-g32", "int4-g32")
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15}


def llama_quantize(src: Path, dst: Path, kind: str, threads: int) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = FTYPES[kind], threads
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src} to {kind}")
    return dst


def matrix_bits(path: Path) -> float:
    """Bits per weight of a GGUF file's matrices as stored (llama.cpp keeps some, e.g. the embedding
    or a row width its type cannot split, in a wider type than the file's name says)."""
    matrices = [t for t in read_gguf(path).tensors.values() if len(t.shape) == 2]
    return sum(t.n_bytes for t in matrices) * 8 / sum(t.n_elements for t in matrices)


def llama_logits(path: Path, ids: list[int], window: int, stride: int, threads: int) -> Iterator[np.ndarray]:
    """llama.cpp's logits at every position of each sliding window over ``ids``, one window at a time."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=window, n_batch=window, n_threads=threads, n_threads_batch=threads,
                logits_all=True, verbose=False)
    try:
        for begin, end, _ in windows(len(ids), window, stride):
            llm.reset()
            llm.eval(ids[begin:end])
            yield np.array(llm.scores[: end - begin], dtype=np.float32)
    finally:
        llm.close()


def scored_log_probs(logits, begin: int, end: int, first: int) -> torch.Tensor:
    """Log-probabilities at the positions a window scores (position t predicts token t + 1)."""
    return F.log_softmax(torch.as_tensor(logits)[first - begin - 1:end - begin - 1].float(), -1)


def quality_from_logits(reference: list[torch.Tensor], logits: Iterable, ids: list[int], window: int,
                        stride: int) -> dict:
    """Perplexity / KL / top-1 of window logits (streamed) against the reference's scored log-probabilities."""
    nll = ref_nll = kl = 0.0
    agree = tokens = 0
    for (begin, end, first), r, out in zip(windows(len(ids), window, stride), reference, logits, strict=True):
        targets = torch.tensor(ids[first:end])[:, None]
        o = scored_log_probs(out, begin, end, first)
        ref_nll -= float(r.gather(1, targets).sum())
        nll -= float(o.gather(1, targets).sum())
        kl += float((r.exp() * (r - o)).sum())
        agree += int((r.argmax(-1) == o.argmax(-1)).sum())
        tokens += len(targets)
    return {"perplexity": math.exp(nll / tokens), "perplexity_increase": math.exp(nll / tokens) - math.exp(ref_nll / tokens),
            "kl_divergence": kl / tokens, "top1_agreement": agree / tokens, "scored_tokens": tokens}


@torch.no_grad()
def lmlab_window_logits(lm, ids: list[int], window: int, stride: int) -> Iterator[torch.Tensor]:
    for b, e, _ in windows(len(ids), window, stride):
        yield lm(torch.tensor([ids[b:e]]))[0][0].float()


@torch.no_grad()
def next_token_logits(lm, ids: list[int]) -> np.ndarray:
    return lm(torch.tensor([ids]))[0][0, -1].float().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--calibration-sequences", type=int, default=16)
    ap.add_argument("--calibration-length", type=int, default=256)
    ap.add_argument("--methods", default=",".join(LMLAB), help="lmlab variants to measure (comma-separated)")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-round-trip", action="store_true", help="skip the GGUF round trip with llama.cpp")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    report: dict = {"cpu_isa": cpu_isa(), "avx512_vnni": "avx512_vnni" in flags, "amx": "amx_tile" in flags,
                    "kernel_dtype": str(kernel_dtype()).removeprefix("torch."), "threads": args.threads,
                    "torch": torch.__version__, "loads": [os.getloadavg()[0]]}
    fp32, tok = load_model("smollm2-135m-instruct")
    ids = text_tokens(tok, open_corpus("wikitext-2:test"), args.eval_tokens)
    calib = calibration_ids(tok, open_corpus("wikitext-2:train"), args.calibration_sequences, args.calibration_length)
    reference = [scored_log_probs(out, b, e, f) for (b, e, f), out
                 in zip(windows(len(ids), args.window, args.stride),
                        lmlab_window_logits(fp32, ids, args.window, args.stride), strict=True)]
    llama = {}
    work = Path(tempfile.mkdtemp(prefix="lmlab-quant-bench-"))
    if importlib.util.find_spec("llama_cpp") is not None:
        f16 = export_gguf(fp32, tok, work / "smollm2.F16.gguf", "F16")
        files = {"Q4_1": smollm2_gguf(), "Q8_0": llama_quantize(f16, work / "llama.Q8_0.gguf", "Q8_0", args.threads),
                 "Q4_0": llama_quantize(f16, work / "llama.Q4_0.gguf", "Q4_0", args.threads),
                 "Q4_K_M": llama_quantize(f16, work / "llama.Q4_K_M.gguf", "Q4_K_M", args.threads)}
        for kind in ("Q8_0", "Q4_0", "Q4_1"):
            llama[kind] = {"bits_per_weight": matrix_bits(files[kind]),
                           **quality_from_logits(reference, llama_logits(files[kind], ids, args.window, args.stride,
                                                                          args.threads), ids, args.window, args.stride)}
            print(json.dumps({f"llama.cpp {kind}": llama[kind]}), flush=True)
    builds = {"fp32": lambda: fp32, "gguf-Q4_1": lambda: load_model("smollm2-135m-instruct", quantized=True)[0]}
    for label in args.methods.split(","):
        method, options = LMLAB[label]
        builds[label] = lambda method=method, options=options: quantize_model(copy.deepcopy(fp32), method,
                                                                             calibration=calib, **options)
    models: dict = {}  # only the variants timed later stay in memory
    rows: dict = {}
    for label, build in builds.items():
        lm = build()
        kernels = sorted({m.kernel for m in quantized_layers(lm).values()})
        rows[label] = {**weight_bits(lm), "kernels": kernels,
                       **(quality_from_logits(reference, lmlab_window_logits(lm, ids, args.window, args.stride),
                                              ids, args.window, args.stride) if label != "fp32" else {})}
        print(json.dumps({label: rows[label]}), flush=True)
        if label in SPEED and not args.no_speed:
            models[label] = lm
        del lm
        gc.collect()
    report["lmlab"] = rows

    if llama and not args.no_round_trip:  # the same file in both programs, next-token logits after a prompt
        probe = tok.encode("The capital of France is Paris, and the capital of Germany is")
        trip = {}
        for kind in ("Q8_0", "Q4_0", "Q4_1"):
            ours = export_gguf(fp32, tok, work / f"lmlab.{kind}.gguf", kind)
            trip[f"lmlab {kind} export in llama.cpp"] = ours
        for kind in ("Q8_0", "Q4_0", "Q4_K_M"):
            trip[f"llama.cpp {kind} in lmlab"] = files[kind]
        round_trip = {}
        for name, path in trip.items():
            one_window = llama_logits(path, probe, len(probe), len(probe) - 1, args.threads)
            theirs = next(one_window)[-1]
            one_window.close()
            lm_kept = load_gguf(path, quantized=True)[0]
            lm_float = load_gguf(path)[0]
            mine, mine_float = next_token_logits(lm_kept, probe), next_token_logits(lm_float, probe)
            round_trip[name] = {"max_abs_logit_diff_kept_quantized": float(np.abs(mine - theirs).max()),
                                "max_abs_logit_diff_dequantized": float(np.abs(mine_float - theirs).max()),
                                "logit_range": float(theirs.max() - theirs.min()),
                                "same_argmax": bool(mine.argmax() == theirs.argmax())}
        report["gguf_round_trip"] = round_trip
        print(json.dumps({"gguf_round_trip": round_trip}), flush=True)
    report["llama_cpp"] = llama

    if not args.no_speed:
        from lmlab.generate import BanTokens  # noqa: F401  (decode_speed bans EOS itself)

        prompt = chat_prompt(tok, [{"role": "user", "content": inference.QUESTIONS[0]}])
        runs: dict[str, list[dict]] = {k: [] for k in SPEED if k in models}
        llms = {}
        if llama:
            llms = {kind: inference.llama_cpp_model(Path(files[kind]), args.threads) for kind in ("Q4_1", "Q8_0", "Q4_0")}
            runs.update({f"llama.cpp {k}": [] for k in llms})
        for r in range(args.repeats):
            for label in runs:
                if label.startswith("llama.cpp"):
                    out = inference.llama_cpp_run(llms[label.split()[1]], prompt, args.new_tokens, tok.eos_id)
                else:
                    out = decode_speed(models[label], tok, prompt, args.new_tokens)
                runs[label].append(out)
            report["loads"].append(os.getloadavg()[0])
            print(json.dumps({"round": r, "load": report["loads"][-1],
                              **{k: round(v[-1]["decode_tokens_per_s"], 2) for k, v in runs.items()}}), flush=True)
        speed = {k: {m: statistics.median(x[m] for x in v) for m in ("decode_tokens_per_s", "prefill_tokens_per_s")}
                 for k, v in runs.items()}
        report["speed"] = speed
        if llama:
            targets = {}
            for bits, candidates, peer in (("4bit", ("gguf-Q4_1", "int4-g32"), "Q4_1"), ("int8", ("int8", "int8-g32"), "Q8_0")):
                measured = [k for k in candidates if k in speed]
                if measured:  # only the variants this run measured (--methods may leave some out)
                    best = max(measured, key=lambda k: speed[k]["decode_tokens_per_s"])
                    targets[f"fastest_{bits}"] = best
                    targets[f"decode_ratio_{bits}_vs_llama_{peer.lower()}"] = (
                        speed[best]["decode_tokens_per_s"] / speed[f"llama.cpp {peer}"]["decode_tokens_per_s"])
            report["targets"] = targets
    print(json.dumps(report))


if __name__ == "__main__":
    main()
