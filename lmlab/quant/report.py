"""What quantization cost and bought: size, bits per weight, quality against the float model, speed.

Quality is measured on one token stream (WikiText-2's test split in the CLI) with sliding windows
(``lmlab.lm.windows``: each token predicted once, with up to ``window − stride`` tokens of
history): perplexity of both models, and at every predicted position the KL divergence
KL(p_float ‖ p_quantized) of the next-token distributions and whether their top-1 tokens agree.
Speed is the engine's own timing of one greedy request (batch 1, EOS banned so every run makes
``new_tokens``), with the process's peak resident memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_number
from ..lm import windows
from ..models.quantized import quantized_layers


def text_tokens(tokenizer: Any, lines: Iterable[str], limit: int | None = None) -> list[int]:
    """Token ids of ``lines`` joined by newlines, reading only as many lines as ``limit`` tokens need."""
    ids: list[int] = []
    for line in lines:
        ids.extend(tokenizer.encode(line + "\n", add_special_tokens=False))
        if limit is not None and len(ids) >= limit:
            return ids[:limit]
    return ids


def weight_bits(model: nn.Module) -> dict[str, float]:
    """Bits per weight of the quantized linear layers (codes, scales, zero points), and their weight count."""
    layers = quantized_layers(model).values()
    weights = sum(m.in_features * m.out_features for m in layers)
    bits = sum(m.storage_bits() for m in layers)
    return {"bits_per_weight": bits / weights if weights else 32.0, "quantized_weights": weights}


def directory_mb(path: str | os.PathLike) -> float:
    """Size on disk of a model directory (all files), in MiB."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


@torch.no_grad()
def compare_models(reference: Any, candidate: Any, ids: list[int], *, window: int = 512,
                   stride: int = 256) -> dict[str, float]:
    """Perplexity of both models on ``ids`` with sliding windows, and the mean KL(reference ‖ candidate)
    and top-1 agreement of their next-token distributions at every scored position."""
    check_number("window", window, low=2, integer=True)
    check_number("stride", stride, low=1, high=window - 1, integer=True)
    totals = {"ref_nll": 0.0, "nll": 0.0, "kl": 0.0, "agree": 0, "tokens": 0}
    for begin, end, first in windows(len(ids), window, stride):
        x = torch.tensor([ids[begin:end]], dtype=torch.long)
        ref = F.log_softmax(reference(x.to(reference.device))[0][0].float().cpu(), dim=-1)
        out = F.log_softmax(candidate(x.to(candidate.device))[0][0].float().cpu(), dim=-1)
        rows = slice(first - begin - 1, end - begin - 1)  # position t predicts token t + 1
        targets = x[0, first - begin:end - begin]
        ref, out = ref[rows], out[rows]
        totals["ref_nll"] -= float(ref.gather(1, targets[:, None]).sum())
        totals["nll"] -= float(out.gather(1, targets[:, None]).sum())
        totals["kl"] += float((ref.exp() * (ref - out)).sum())
        totals["agree"] += int((ref.argmax(-1) == out.argmax(-1)).sum())
        totals["tokens"] += len(targets)
    n = totals["tokens"]
    ppl_ref, ppl = math.exp(totals["ref_nll"] / n), math.exp(totals["nll"] / n)
    return {"reference_perplexity": ppl_ref, "perplexity": ppl, "perplexity_increase": ppl - ppl_ref,
            "kl_divergence": totals["kl"] / n, "top1_agreement": totals["agree"] / n, "scored_tokens": n,
            "window": window, "stride": stride}


def decode_speed(model: Any, tokenizer: Any, prompt: list[int], new_tokens: int = 128) -> dict[str, float]:
    """Prefill and decode tokens/s and peak memory of one greedy request through the engine."""
    from ..generate import BanTokens
    from ..generate.engine import Engine, Request

    processors = [BanTokens((tokenizer.eos_id,))] if tokenizer.eos_id is not None else []
    engine = Engine(model, tokenizer, greedy=True, processors=processors)
    engine.generate([Request(prompt, max_new_tokens=4, stop_ids=[])])  # warm-up: packing, allocator
    stats = engine.generate([Request(prompt, max_new_tokens=new_tokens, stop_ids=[])])[0].stats
    return {"prefill_tokens_per_s": stats.prefill_tokens_per_s, "decode_tokens_per_s": stats.decode_tokens_per_s,
            "peak_memory_mb": stats.peak_memory_mb, "prompt_tokens": len(prompt), "new_tokens": new_tokens}
