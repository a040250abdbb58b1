"""Long-sequence attention variants trained with the trainer on tiny Shakespeare, against full attention.

For each context length and each causal variant (full, sliding_window, strided, adaptive_span, lsh,
Transformer-XL segment memory with RoPE and with the paper's relative positions, and the compressive
memory with mean-pooled and learned-convolution compression) a small LLaMA-style character LM is pretrained with ``pretrain`` for the
same steps and tokens per step (batch = tokens_per_step / context); the encoder variants (linformer,
nystrom) are BERT-style encoders trained with the masked-LM objective against a full-attention encoder.
Each run happens in its own process, so its peak resident memory is its own. Reported per run:
validation loss, step time (the median training step, and the run's seconds per step with its
evaluation), peak RSS, and attention scores per head and sequence (the size of the score
matrices each variant forms: the memory the variant saves, exactly). Then each memory model's validation
loss read with its memory carried across segments vs reset at every segment (it evaluates beyond its
segment length), and the approximation error of LSH (with and without the multi-round duplicate
correction), Linformer and Nyström attention against full attention on random inputs (relative
Frobenius error).
Run: LMLAB_DATA=../shared/data python bench/long_attention.py [--contexts 256,1024,4096] [--steps 120]
(the last line is one JSON object).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CAUSAL = ("full", "sliding_window", "strided", "adaptive_span", "lsh", "transformer_xl", "transformer_xl_rel",
          "compressive_mean", "compressive_conv")
ENCODER = ("full_encoder", "linformer", "nystrom")


def variant_settings(name: str, context: int, window: int) -> tuple[str, dict]:
    """(family, model settings) of a named run."""
    base = dict(d_model=64, n_layers=2, n_heads=4, context_length=context)
    if name in ENCODER:
        extra = {"linformer": dict(attention="linformer", linformer_k=window),
                 "nystrom": dict(attention="nystrom", nystrom_landmarks=window)}.get(name, {})
        return "bert", {**base, "positions": "learned", **extra}
    extra = {"sliding_window": dict(attention="sliding_window", attention_window=window),
             "strided": dict(attention="strided", attention_window=int(math.sqrt(context))),
             "adaptive_span": dict(attention="adaptive_span", attention_window=window, adaptive_span_ramp=16),
             "lsh": dict(attention="lsh", attention_window=window, lsh_buckets=8, lsh_rounds=2),
             "transformer_xl": dict(memory_length=context),  # RoPE positions
             "transformer_xl_rel": dict(memory_length=context, positions="transformer_xl"),  # the paper's own
             "compressive_mean": dict(memory_length=context // 2, compressed_memory=context // 2, compression_rate=3),
             "compressive_conv": dict(memory_length=context // 2, compressed_memory=context // 2, compression_rate=3,
                                      compression="conv")}.get(name, {})
    return "llama", {**base, **extra}


def scores_per_head(name: str, t: int, window: int) -> int:
    """Entries of the attention score matrices one head forms for a sequence of t tokens."""
    blocks = math.ceil(t / window)
    stride = int(math.sqrt(t))
    return {"full": t * t, "full_encoder": t * t, "transformer_xl": t * 2 * t, "transformer_xl_rel": t * 2 * t,
            "compressive_mean": t * 2 * t, "compressive_conv": t * 2 * t,
            "sliding_window": blocks * window * 2 * window,
            "strided": math.ceil(t / stride) * stride * (stride + math.ceil(t / stride)),
            "adaptive_span": math.ceil(t / (window + 16)) * (window + 16) * 2 * (window + 16),
            "lsh": 2 * blocks * window * 2 * window,
            "linformer": t * window, "nystrom": 2 * t * window + window * window}[name]


def one_run(name: str, context: int, steps: int, tokens_per_step: int, window: int) -> dict:
    """Pretrain one variant (in this process) and measure it."""
    from lmlab.data import data_root, from_texts
    from lmlab.tokenizers import WordLevelTokenizer
    from lmlab.train import pretrain

    torch.set_num_threads(1)
    text = (data_root() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    cut = int(0.9 * len(text))
    train, valid = from_texts([text[:cut]], "shakespeare:train"), from_texts([text[cut:cut + 60000]], "valid")
    tokenizer = WordLevelTokenizer("char").train(train)
    family, settings = variant_settings(name, context, window)
    batch = max(tokens_per_step // context, 1)
    training = dict(steps=steps, lr=2e-3, warmup=max(steps // 10, 1), device="cpu", log_every=max(steps // 10, 1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        result = pretrain(family, train, tokenizer, Path(tmp) / name, model=settings, training=training, valid=valid,
                          batch_size=batch, context=context, eval_batches=4,
                          objective="mlm" if name in ENCODER else "causal")
        records = [json.loads(line) for line in (Path(tmp) / name / "metrics.jsonl").read_text().splitlines()]
        step_ms = sorted(r["ms_per_step"] for r in records if "ms_per_step" in r)
    entry = {"valid_loss": result.valid_loss, "train_loss": result.train.final_loss,
             "seconds_per_step_with_eval": result.train.seconds / steps, "batch": batch,
             "median_step_ms": step_ms[len(step_ms) // 2] if step_ms else None,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_training_mb": before,
             "scores_per_head": scores_per_head(name, context, window)}
    if name.startswith(("transformer_xl", "compressive")):
        entry.update(xl_memory_gain(result.model, tokenizer, text[cut:cut + 20000], context))
    return entry


def xl_memory_gain(model, tokenizer, text: str, segment: int) -> dict:
    """Validation loss read segment by segment with the memory carried vs reset at every segment."""
    ids = torch.tensor(tokenizer.encode(text)[: 8 * segment + 1]).view(1, -1)
    model.eval()
    losses = {}
    with torch.no_grad():
        for mode in ("carried", "reset"):
            state, total = None, 0.0
            for start in range(0, 8 * segment, segment):
                logits, state = model(ids[:, start:start + segment], state if mode == "carried" else None)
                total += float(F.cross_entropy(logits[0].float(), ids[0, start + 1:start + segment + 1], reduction="sum"))
            losses[f"xl_loss_memory_{mode}"] = total / (8 * segment)
    return losses


def approximation_errors(t: int = 1024, heads: int = 4, dim: int = 16) -> dict:
    """Relative Frobenius error of each approximation against the attention it approximates, on random
    queries/keys/values at two sharpness levels (query norm × 1 and × 4: diffuse and peaked attention)."""
    from lmlab.models.linformer import linformer_attention
    from lmlab.models.lsh_attention import SELF_SCORE, lsh_attention
    from lmlab.models.nystrom import nystrom_attention

    def error(approx: torch.Tensor, exact: torch.Tensor) -> float:
        return float((approx - exact).norm() / exact.norm())

    out: dict = {"t": t, "heads": heads, "head_dim": dim}
    scale = 1 / math.sqrt(dim)
    for sharp in (1, 4):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, heads, t, dim, generator=g) for _ in range(3))
        q = q * sharp
        full = F.scaled_dot_product_attention(q, k, v, scale=scale)
        out[f"uniform_baseline_x{sharp}"] = error(v.mean(dim=2, keepdim=True).expand_as(v), full)  # mean of values
        for m in (16, 64, 256):
            out[f"nystrom_{m}_x{sharp}"] = error(nystrom_attention(q, k, v, m, scale), full)
        for kk in (64, 256):
            e, f = (torch.randn(kk, t, generator=g) / math.sqrt(kk) for _ in range(2))
            out[f"linformer_random_{kk}_x{sharp}"] = error(linformer_attention(q, k, v, e, f, scale), full)
            pool = torch.eye(kk).repeat_interleave(t // kk, dim=1) / (t // kk)  # segment means
            out[f"linformer_meanpool_{kk}_x{sharp}"] = error(linformer_attention(q, k, v, pool, pool, scale), full)
        shared = F.normalize(k, dim=-1) * math.sqrt(dim)  # LSH's shared keys, at the norm of the others
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        scores = (q @ shared.transpose(-1, -2) * scale).masked_fill(~causal, float("-inf"))
        exact = torch.softmax(scores.masked_fill(torch.eye(t, dtype=torch.bool), SELF_SCORE), -1) @ v
        for rounds in (1, 2, 4, 8):
            rotations = torch.randn(rounds, heads, dim, 8, generator=g)  # 16 buckets
            out[f"lsh_rounds_{rounds}_x{sharp}"] = error(lsh_attention(q, shared, v, rotations, 64, scale), exact)
            out[f"lsh_uncorrected_rounds_{rounds}_x{sharp}"] = error(  # without the duplicate correction
                lsh_attention(q, shared, v, rotations, 64, scale, dedupe=False), exact)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="256,1024")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--tokens-per-step", type=int, default=4096)
    parser.add_argument("--window", type=int, default=64, help="window / chunk / landmarks / projected length")
    parser.add_argument("--variants", default=",".join(CAUSAL + ENCODER))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child process: one run
        name, context = args.one.split("@")
        print(json.dumps(one_run(name, int(context), args.steps, args.tokens_per_step, args.window)))
        return
    results: dict = {"data": "tiny Shakespeare characters", "steps": args.steps,
                     "tokens_per_step": args.tokens_per_step, "window": args.window, "runs": {}}
    for context in (int(c) for c in args.contexts.split(",")):
        for name in args.variants.split(","):
            start = time.time()
            child = subprocess.run([sys.executable, __file__, "--one", f"{name}@{context}", "--steps", str(args.steps),
                                    "--tokens-per-step", str(args.tokens_per_step), "--window", str(args.window)],
                                   capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if child.returncode:
                results["runs"][f"{name}@{context}"] = {"error": child.stderr.strip().splitlines()[-1]}
            else:
                results["runs"][f"{name}@{context}"] = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{name}@{context}: {results['runs'][f'{name}@{context}']} ({time.time() - start:.0f}s)",
                  file=sys.stderr, flush=True)
    results["approximation_error"] = approximation_errors()
    results["load"] = os.getloadavg()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
