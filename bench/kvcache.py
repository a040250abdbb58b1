"""KV-cache policies on SmolLM2-135M-Instruct: memory held, speed, long-context accuracy, a long stream, a server.

Sections (``--sections``, all by default):

* ``speed`` — per context length (``--contexts``, default 2k/4k/8k tokens of WikiText-2 test) and cache
  setting (``--settings``: policy@budget[+int8|+int4]; default the full cache, every policy at a 20 %
  budget and the full cache in int8): the bytes of KV-cache tensors held at the peak, time to first
  token and decode tokens/s (greedy, ``--new`` tokens, EOS ignored), and each as a ratio to lmlab's
  full cache in the same round. The peer, timed interleaved in the same rounds: ``transformers`` with
  its full cache, and with kvpress's SnapKVPress at the same budget when kvpress is installed.
* ``needle`` — needle-in-a-haystack accuracy grid (``--needle-lengths``, 5 depths, ``--trials``) per
  setting (``--long-settings``), on the embedded corpus; the heat maps go to ``--plots``.
* ``ruler`` — the RULER-style score (multi-key retrieval, variable tracking, common words) per setting.
* ``stream`` — perplexity of ``--stream-tokens`` tokens of WikiText-2 test fed in chunks: StreamingLLM
  (4 sinks + window), the same window without sinks, the full cache (which stops at the context), and
  the full cache restarted at every segment (how hard each segment's text is on its own: each setting
  also reports its per-segment ratio to it).
* ``server`` — ``--clients`` concurrent conversations of ``--server-context`` tokens through the
  server's scheduler per setting: the peak KV bytes held, and how many such conversations fit in the
  memory the full fp32 cache needed (the capacity ratio).

The machine's load (``os.getloadavg``) is recorded before and after every section; the last line is one
JSON object (``--out`` also writes it after each section). Default sizes are the issue's (tens of
minutes on a quiet 2-core machine); ``--quick`` shrinks every section for a busy one.
Run: python bench/kvcache.py [--threads 2] [--quick] [--sections speed,needle,ruler,stream,server]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.core.io import write_json  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
from lmlab.generate.settings import DecodingSettings  # noqa: E402
from lmlab.kvcache import cache_settings  # noqa: E402

SETTINGS = ["full", "window@0.2", "streaming@0.2", "h2o@0.2", "snapkv@0.2", "pyramidkv@0.2", "tova@0.2",
            "knorm@0.2", "full+int8", "snapkv@0.2+int8"]
LONG_SETTINGS = ["full", "snapkv@0.2", "h2o@0.2", "streaming@0.2", "full+int8"]
SERVER_SETTINGS = ["full", "full+int8", "snapkv@0.2", "snapkv@0.2+int8"]


def parse_setting(text: str):
    """'snapkv@0.2+int8' → KVCacheSettings (None for 'full' without quantization)."""
    name, _, quant = text.partition("+")
    policy, _, budget = name.partition("@")
    if policy == "full" and not quant:
        return None  # the plain cache: the baseline every ratio is taken against
    value = None if not budget else (int(budget) if budget.isdigit() else float(budget))
    return cache_settings(policy, value, quant=quant or None)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def text_ids(tokenizer, path: Path, tokens: int) -> list[int]:
    """The first ``tokens`` ids of a text file (WikiText-2 test), read line by line."""
    ids = [tokenizer.start_id] if tokenizer.start_id is not None else []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            ids += tokenizer.encode(line)
            if len(ids) >= tokens:
                break
    if len(ids) < tokens:
        raise SystemExit(f"{path} has only {len(ids)} tokens, {tokens} are needed")
    return ids[:tokens]


# --- kvpress beside transformers 5 -----------------------------------------------------------------
def on_transformers_5(press):
    """kvpress 0.5.5 reads ``past_key_values`` and ``cache_position`` from the attention layer's keywords;
    transformers 5.25 passes the cache as ``cache`` and only ``position_ids``: rename, nothing else."""
    hook = press.forward_hook

    def forward_hook(module, args, kwargs, output):
        kwargs = {**kwargs, "past_key_values": kwargs.get("cache")}
        kwargs.setdefault("cache_position", kwargs["position_ids"][0])
        return hook(module, args, kwargs, output)

    press.forward_hook = forward_hook
    return press


@torch.no_grad()
def peer_run(hf, prompt: list[int], new: int, press=None) -> dict:
    """transformers (optionally with a kvpress press on the prompt): greedy, EOS ignored, timed like lmlab."""
    import transformers

    cache = transformers.DynamicCache()
    start = time.perf_counter()
    ids = torch.tensor([prompt])
    if press is not None:
        with press(hf):
            hidden = hf.model(input_ids=ids, cache=cache).last_hidden_state
        logits = hf.lm_head(hidden[:, -1])
    else:
        logits = hf(input_ids=ids, cache=cache, logits_to_keep=1).logits[:, -1]
    token = logits.argmax(-1, keepdim=True)
    first = time.perf_counter()
    for i in range(new - 1):
        position = torch.tensor([[len(prompt) + i]])
        token = hf(input_ids=token, cache=cache, position_ids=position).logits[:, -1].argmax(-1, keepdim=True)
    end = time.perf_counter()
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return {"time_to_first_token_s": first - start, "decode_tokens_per_s": (new - 1) / (end - first),
            "kv_cache_bytes": held}


def lmlab_run(lm, tokenizer, prompt: list[int], new: int, kv) -> dict:
    settings = DecodingSettings(greedy=True, max_new_tokens=new, stop_ids=(), kv_cache=kv)
    out = Engine(lm, tokenizer, settings=settings).generate([Request(prompt)])[0]
    s = out.stats
    return {"time_to_first_token_s": s.time_to_first_token_s, "decode_tokens_per_s": s.decode_tokens_per_s,
            "kv_cache_bytes": s.kv_cache_bytes}


def speed(lm, tokenizer, hf, args) -> list[dict]:
    ids = text_ids(tokenizer, Path(args.data) / "wikitext-2" / "test.txt", max(args.contexts))
    lmlab_run(lm, tokenizer, ids[:64], 4, None)  # warm-up
    rows = []
    for context in args.contexts:
        prompt = ids[:context]
        runs: dict[str, list[dict]] = {}
        for round_ in range(args.repeats):  # every setting and the peer once per round: load falls on all alike
            for text in args.settings:
                log(f"speed {context} {text} round {round_ + 1}")
                runs.setdefault(text, []).append(lmlab_run(lm, tokenizer, prompt, args.new, parse_setting(text)))
            if hf is not None:
                log(f"speed {context} transformers round {round_ + 1}")
                runs.setdefault("peer:transformers", []).append(peer_run(hf, prompt, args.new))
                if args.kvpress:
                    import kvpress

                    press = on_transformers_5(kvpress.SnapKVPress(compression_ratio=0.8, window_size=32))
                    runs.setdefault("peer:kvpress-snapkv@0.2", []).append(peer_run(hf, prompt, args.new, press))
        full = {k: statistics.median(r[k] for r in runs["full"]) for k in runs["full"][0]}
        for name, measured in runs.items():
            row = {"context": context, "setting": name,
                   **{k: statistics.median(r[k] for r in measured) for k in measured[0]}}
            row["bytes_vs_full"] = row["kv_cache_bytes"] / full["kv_cache_bytes"]
            row["ttft_vs_full"] = row["time_to_first_token_s"] / full["time_to_first_token_s"]
            row["decode_vs_full"] = row["decode_tokens_per_s"] / full["decode_tokens_per_s"]
            rows.append(row)
    return rows


def long_context(task: str, lm, tokenizer, args) -> list[dict]:
    """Needle accuracy grids (heat maps into ``--plots``) or RULER scores, per ``--long-settings`` entry."""
    from lmlab.data.datasets import embedded_documents
    from lmlab.eval.longcontext import heat_map, needle_grid, ruler_suite

    out = []
    for text in args.long_settings:
        log(f"{task} {text}")
        if task == "needle":
            result = needle_grid(lm, tokenizer, embedded_documents(), lengths=args.needle_lengths,
                                 trials=args.trials, kv_cache=parse_setting(text), seed=0)
            if args.plots:
                Path(args.plots).mkdir(parents=True, exist_ok=True)
                heat_map(result, str(Path(args.plots) / f"needle_{text.replace('@', '_').replace('+', '_')}.png"))
            keep = ("accuracy", "grid", "lengths", "depths", "kv_cache_bytes")
        else:
            result = ruler_suite(lm, tokenizer, embedded_documents(), lengths=args.ruler_lengths,
                                 samples=args.samples, kv_cache=parse_setting(text), seed=0)
            keep = ("score", "tasks", "by_length", "kv_cache_bytes")
        out.append({"setting": text, **{k: result[k] for k in keep}})
    return out


STREAM_SETTINGS = ("streaming", "window", "full", "fresh")


def stream(lm, tokenizer, args) -> list[dict]:
    """The stream through each of ``--stream-settings``: StreamingLLM (4 sinks), the same budget as a
    window without sinks, the full cache (stops at the context), and ``fresh`` — the full cache
    restarted at every segment, the reference for how hard each segment's text is on its own."""
    from lmlab.eval.longcontext import stream_perplexity

    ids = text_ids(tokenizer, Path(args.data) / "wikitext-2" / "test.txt", args.stream_tokens)
    configs = {"streaming": ("streaming (4 sinks)", cache_settings("streaming", args.stream_budget, sinks=4)),
               "window": ("window, no sinks", cache_settings("streaming", args.stream_budget, sinks=0)),
               "full": ("full cache", None), "fresh": ("full cache, restarted every segment", None)}
    out = []
    for key in args.stream_settings.split(","):
        name, kv = configs[key]
        log(f"stream {name}")
        if key == "fresh":
            parts = [stream_perplexity(lm, ids[a:a + args.segment + 1], chunk=args.chunk, segment=args.segment)
                     for a in range(0, len(ids) - 1, args.segment)]
            segments = [p["perplexity"] for p in parts]
            scored = sum(p["scored"] for p in parts)
            nll = sum(math.log(p["perplexity"]) * p["scored"] for p in parts) / scored
            result = {"perplexity": math.exp(nll), "scored": scored, "stopped_at": None,
                      "kv_cache_bytes": max(p["kv_cache_bytes"] for p in parts)}
        else:
            result = stream_perplexity(lm, ids, kv_cache=kv, chunk=args.chunk, segment=args.segment)
            segments = [s["perplexity"] for s in result["segments"]]
        out.append({"setting": name, "budget": None if kv is None else args.stream_budget,
                    "perplexity": result["perplexity"], "first_segment": segments[0],
                    "worst_vs_first": max(segments) / segments[0],
                    "segments": [round(p, 3) for p in segments],
                    "scored": result["scored"], "stopped_at": result["stopped_at"],
                    "kv_cache_bytes": result["kv_cache_bytes"]})
    fresh = next((r for r in out if r["setting"].startswith("full cache, restarted")), None)
    for r in out:
        if fresh is not None and r is not fresh:  # per segment, against the same text read on its own
            ratios = [a / b for a, b in zip(r["segments"], fresh["segments"], strict=False)]
            r["vs_fresh_per_segment"] = [round(x, 3) for x in ratios]
            r["worst_vs_fresh"] = max(ratios)
    return out


def server(lm, tokenizer, args) -> list[dict]:
    from lmlab.generate.scheduler import Scheduler

    ids = text_ids(tokenizer, Path(args.data) / "wikitext-2" / "test.txt", args.server_context * args.clients)
    prompts = [ids[i * args.server_context:(i + 1) * args.server_context] for i in range(args.clients)]
    out = []
    for text in args.server_settings:
        log(f"server {text}: {args.clients} clients × {args.server_context} tokens")
        settings = DecodingSettings(greedy=True, max_new_tokens=args.server_new, stop_ids=(),
                                    kv_cache=parse_setting(text))
        with Scheduler(lm, tokenizer, max_batch=args.clients, max_queue=args.clients, settings=settings) as sched:
            start = time.perf_counter()
            handles = [sched.submit(Request(p)) for p in prompts]
            for h in handles:
                h.result()
            elapsed = time.perf_counter() - start
            peak = sched.loop.counters["kv_cache_bytes"]
        out.append({"setting": text, "clients": args.clients, "context": args.server_context,
                    "peak_kv_cache_bytes": peak, "bytes_per_conversation": peak / args.clients, "seconds": elapsed})
    full = next(r for r in out if r["setting"] == "full")
    for r in out:
        r["conversations_in_full_memory"] = int(full["peak_kv_cache_bytes"] // r["bytes_per_conversation"])
        r["capacity_vs_full"] = full["peak_kv_cache_bytes"] / r["peak_kv_cache_bytes"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="speed,needle,ruler,stream,server")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(HERE.parent.parent / "shared" / "data")))
    ap.add_argument("--quick", action="store_true", help="small sizes for a busy machine")
    ap.add_argument("--contexts", default="2048,4096,8192")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--long-settings", default=",".join(LONG_SETTINGS))
    ap.add_argument("--server-settings", default=",".join(SERVER_SETTINGS))
    ap.add_argument("--new", type=int, default=32, help="speed: tokens generated per run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="speed: leave transformers/kvpress out")
    ap.add_argument("--needle-lengths", default="1024,2048,4096")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--ruler-lengths", default="2048,4096")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--stream-tokens", type=int, default=32768)
    ap.add_argument("--stream-budget", type=int, default=1024)
    ap.add_argument("--stream-settings", default=",".join(STREAM_SETTINGS),
                    help=f"comma-separated, from: {', '.join(STREAM_SETTINGS)}")
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--segment", type=int, default=2048)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--server-context", type=int, default=4096)
    ap.add_argument("--server-new", type=int, default=16)
    ap.add_argument("--plots", default=None, help="directory for the needle heat maps")
    ap.add_argument("--out", default=None, help="also write the results so far to this JSON file after each section")
    args = ap.parse_args()
    unknown = set(args.stream_settings.split(",")) - set(STREAM_SETTINGS)
    if unknown:
        ap.error(f"--stream-settings: unknown {', '.join(sorted(unknown))}; choose from {', '.join(STREAM_SETTINGS)}")
    if args.quick:
        args.contexts, args.repeats, args.new = "1024,2048", 1, 16
        args.needle_lengths, args.trials = "512,1024", 1
        args.ruler_lengths, args.samples = "1024", 2
        args.stream_tokens, args.stream_budget, args.chunk, args.segment = 10240, 256, 256, 1024
        args.clients, args.server_context, args.server_new = 2, 1024, 4
    for name in ("contexts", "needle_lengths", "ruler_lengths"):
        setattr(args, name, [int(x) for x in getattr(args, name).split(",")])
    for name in ("settings", "long_settings", "server_settings"):
        setattr(args, name, [x for x in getattr(args, name).split(",") if x])
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s for s in args.sections.split(",") if s]
    from lmlab.models import load_model

    lm, tokenizer = load_model("smollm2-135m-instruct")
    lm.eval()
    hf = None
    args.kvpress = False
    if "speed" in sections and not args.no_peer:
        try:
            import transformers

            from lmlab.tokenizers import smollm2_gguf

            path = smollm2_gguf()
            hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                   dtype=torch.float32).eval()
            import kvpress  # noqa: F401

            args.kvpress = True
        except ImportError as err:
            log(f"peer missing: {err}")
    result = {"model": "smollm2-135m-instruct", "machine": {"cpu": _cpu(), "threads": torch.get_num_threads(),
                                                            "torch": torch.__version__},
              "settings": {k: v for k, v in vars(args).items() if k != "kvpress"}, "load": {}}
    for section in sections:
        before = load()
        start = time.perf_counter()
        if section == "speed":
            result[section] = speed(lm, tokenizer, hf, args)
        elif section in ("needle", "ruler"):
            result[section] = long_context(section, lm, tokenizer, args)
        else:
            result[section] = {"stream": stream, "server": server}[section](lm, tokenizer, args)
        result["load"][section] = {"before": before, "after": load(), "seconds": round(time.perf_counter() - start, 1)}
        log(f"{section} done in {result['load'][section]['seconds']} s")
        if args.out:
            write_json(args.out, result)
    print(json.dumps(result))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
