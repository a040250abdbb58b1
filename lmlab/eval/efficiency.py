"""Efficiency of generation with any model: time to first token, prefill and decode speed, memory.

Each batch size runs the inference engine (greedy, end-of-sequence ignored so every request
makes exactly ``new_tokens``) on seeded random prompts of ``prompt_tokens`` ids, ``repeats``
times after a warm-up; the median of each figure is reported with the machine it ran on.
"""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from typing import Any

import torch

from ..core.machine import cpu_info
from ..core.validate import check_number
from ..generate.engine import Engine, Request
from ..generate.settings import DecodingSettings
from ..lm import LanguageModel


def machine_info(lm: LanguageModel | None = None) -> dict:
    """CPU model, cores, vector ISA, torch version and threads (and the model's device and dtype)."""
    cpu = cpu_info()
    info = {"cpu": cpu["cpu"], "cores": cpu["cores"], "isa": cpu["isa"], "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}
    if lm is not None:
        params = list(lm.parameters()) if isinstance(lm, torch.nn.Module) else []
        info.update(device=str(getattr(lm, "device", "cpu")),
                    dtype=str(params[0].dtype).removeprefix("torch.") if params else "n/a",
                    parameters=sum(p.numel() for p in params))
        if str(info["device"]).startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(lm.device)
    return info


def random_prompts(lm: LanguageModel, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """``count`` prompts of ``length`` ids drawn uniformly from the non-special vocabulary."""
    special = {i for i in (lm.bos_id, lm.eos_id, lm.pad_id, lm.unk_id) if i is not None}
    allowed = torch.tensor([i for i in range(lm.vocab_size) if i not in special])
    g = torch.Generator().manual_seed(seed)
    return [allowed[torch.randint(len(allowed), (length,), generator=g)].tolist() for _ in range(count)]


def _figures(completions: list, batch_size: int) -> dict:
    """One call's figures; a model without batched decoding ran its requests one after another."""
    calls = list({id(c.stats): c.stats for c in completions}.values())
    generated = sum(s.generated_tokens for s in calls)
    prompt = sum(s.prompt_tokens for s in calls)
    prefill = sum(s.prefill_s for s in calls)
    total = sum(s.time_to_first_token_s + s.decode_s for s in calls)
    decode_s = sum(s.decode_s for s in calls)
    decode_tokens = sum(s.decode_tokens for s in calls)
    peaks = [s.peak_memory_mb for s in calls if s.peak_memory_mb is not None]
    decode_rate = decode_tokens / decode_s if decode_s > 0 else 0.0
    return {"generated_tokens": generated, "time_to_first_token_s": calls[0].time_to_first_token_s,
            "prefill_tokens_per_s": prompt / prefill if prefill > 0 else 0.0,
            "decode_tokens_per_s": decode_rate, "decode_tokens_per_s_per_request": decode_rate / batch_size,
            "throughput_tokens_per_s": generated / total if total > 0 else 0.0,
            "total_s": total, "peak_memory_mb": max(peaks) if peaks else None,
            "kv_cache_bytes": max(s.kv_cache_bytes for s in calls)}


def measure_generation(lm: LanguageModel, *, batch_sizes: Sequence[int] = (1, 4, 8), prompt_tokens: int = 128,
                       new_tokens: int = 64, repeats: int = 3, warmup: int = 1, seed: int = 0,
                       kv_cache: Any = None) -> list[dict]:
    """Per batch size, the median time to first token, prefill and decode tokens/s, throughput, peak memory
    and the most KV-cache bytes held (``kv_cache``: a ``lmlab.kvcache.KVCacheSettings`` for every request)."""
    check_number("prompt_tokens", prompt_tokens, low=1, integer=True)
    check_number("new_tokens", new_tokens, low=1, integer=True)
    check_number("repeats", repeats, low=1, integer=True)
    check_number("warmup", warmup, low=0, integer=True)
    engine = Engine(lm, None, settings=DecodingSettings(greedy=True, kv_cache=kv_cache))
    rows = []
    for b in batch_sizes:
        check_number("batch size", b, low=1, integer=True)
        prompts = random_prompts(lm, b, prompt_tokens, seed)
        runs = []
        for _ in range(warmup + repeats):
            out = engine.generate([Request(p, max_new_tokens=new_tokens, stop_ids=[]) for p in prompts])
            runs.append(_figures(out, b))
        timed = runs[warmup:]
        row = {"batch_size": b}
        for key in timed[0]:
            values = [r[key] for r in timed if r[key] is not None]
            row[key] = (statistics.median(values) if key not in ("peak_memory_mb", "kv_cache_bytes")
                        else (max(values) if values else None))
        rows.append(row)
    return rows
