"""``lmlab bench``: generation speed and memory of a model at several batch sizes, with the machine."""

from __future__ import annotations

import argparse

from .common import add_common, add_kv_options, emit, kv_from_args, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time to first token, prefill/decode tokens/s, throughput and peak memory")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="a model directory or built-in name (default smollm2-135m-instruct)")
    p.add_argument("--batch-sizes", default="1,4,8", help="comma-separated batch sizes (default 1,4,8)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in tokens (default 128)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per batch size; medians reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--dtype", default=None, help="weights dtype of a neural model: float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: where the model loads)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's setting)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    add_kv_options(p)
    add_common(p)
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..core.device import resolve_device, resolve_dtype
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..eval.efficiency import machine_info, measure_generation
    from ..models import load_model
    from .eval import int_list

    batch_sizes = int_list("--batch-sizes", args.batch_sizes)
    kv_cache = kv_from_args(args)
    if args.threads is not None:
        torch.set_num_threads(check_number("--threads", args.threads, low=1, integer=True))
    status(args, f"loading {args.model}")
    lm, _ = load_model(args.model)
    if args.dtype or args.device:
        if not isinstance(lm, torch.nn.Module):
            raise ConfigError(f"--dtype and --device apply to neural models, not {args.model}",
                              "leave them out")
        if args.device:
            lm = lm.to(resolve_device(args.device))
        if args.dtype:
            lm = lm.to(resolve_dtype(args.dtype))
    if hasattr(lm, "eval"):
        lm.eval()
    settings = {"model": str(args.model), "batch_sizes": batch_sizes, "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens, "repeats": args.repeats, "warmup": args.warmup,
                "decoding": "greedy, end-of-sequence ignored", "seed": args.seed,
                **({"kv_cache": kv_cache.to_dict()} if kv_cache is not None else {})}
    machine = machine_info(lm)
    status(args, f"timing batch sizes {batch_sizes} on {machine['cpu']}")
    rows = measure_generation(lm, batch_sizes=batch_sizes, prompt_tokens=args.prompt_tokens,
                              new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                              kv_cache=kv_cache)
    result = {"machine": machine, "settings": settings, "results": rows}

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    lines = [f"machine   {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
             f"{machine['threads']} threads, {machine.get('device', 'cpu')}, {machine.get('dtype', 'n/a')}",
             f"settings  {args.model}: prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy, "
             f"median of {args.repeats} after {args.warmup} warm-up",
             table([[r["batch_size"], f"{r['time_to_first_token_s'] * 1000:.1f}", f"{r['prefill_tokens_per_s']:.1f}",
                     f"{r['decode_tokens_per_s']:.1f}", f"{r['decode_tokens_per_s_per_request']:.1f}",
                     f"{r['throughput_tokens_per_s']:.1f}", mb(r["peak_memory_mb"]),
                     f"{r['kv_cache_bytes'] / 2 ** 20:.1f}"] for r in rows],
                   ["batch", "TTFT ms", "prefill tok/s", "decode tok/s", "per request", "throughput tok/s",
                    "peak MB", "KV MiB"])]
    emit(args, result, "\n".join(lines))
    return 0
