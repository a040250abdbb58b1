"""Benchmark: kNN-LM over a small lmlab transformer on WikiText-2.

Trains a small llama-style transformer (byte-level BPE) on a slice of WikiText-2 train, builds the
datastore from its final hidden states over that slice (context → next token), then measures
token perplexity on a slice of valid (to choose λ and the temperature) and of test, base against
interpolated, through ``KNNLM`` — the protocol model — for the test figure.
Run: python bench/knnlm.py [--train-lines 1200] [--steps 400] [--d-model 64] [--layers 2]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmlab.data import data_root  # noqa: E402
from lmlab.lm import windows  # noqa: E402
from lmlab.retrieval.knnlm import KNNLM, Datastore, hidden_state_encoder  # noqa: E402
from lmlab.tokenizers.trainers import train_tokenizer  # noqa: E402
from lmlab.train import pretrain  # noqa: E402


def lines(split: str, limit: int) -> list[str]:
    path = Path(data_root()) / "wikitext-2" / f"{split}.txt"
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in itertools.islice(fh, limit) if line.strip()]


def token_windows(tokenizer, texts: list[str], context: int, max_tokens: int | None = None) -> list[list[int]]:
    """The texts as one id stream cut into windows of ``context`` ids that overlap by one id, so
    every id after the first is predicted exactly once (lmlab.lm.windows with stride context-1)."""
    ids = [i for t in texts for i in tokenizer.encode(t, add_special_tokens=True)]
    ids = ids[:max_tokens] if max_tokens else ids
    return [ids[b:e] for b, e, _ in windows(len(ids), context, context - 1)]


def batched(seqs: list[list[int]], size: int = 64):
    """Runs of equal-length windows as [B, T] tensors."""
    for length, group in itertools.groupby(seqs, key=len):
        group = list(group)
        for s in range(0, len(group), size):
            if length > 1:
                yield torch.tensor(group[s:s + size])


def target_logprobs(model, encoder, store: Datastore, seqs, k: int, temperatures) -> tuple[torch.Tensor, dict]:
    """Base log p of every predicted id, and per temperature the kNN log p of the same ids."""
    base, knn = [], {t: [] for t in temperatures}
    for ids in batched(seqs):
        base.append(model.score(ids).double().reshape(-1).cpu())
        contexts = encoder(ids)[:, :-1].reshape(ids.shape[0] * (ids.shape[1] - 1), -1)
        dist, values = store.search(contexts, k)
        hit = values == ids[:, 1:].reshape(-1, 1)
        for t in temperatures:
            logw = torch.log_softmax(-dist.double() / t, dim=1)
            knn[t].append(torch.logsumexp(torch.where(hit, logw, torch.full_like(logw, -math.inf)), dim=1))
    return torch.cat(base), {t: torch.cat(v) for t, v in knn.items()}


def mixed_ppl(base: torch.Tensor, knn: torch.Tensor, lam: float) -> float:
    if lam == 0.0:
        return math.exp(-base.mean().item())
    mix = torch.logaddexp(base + math.log1p(-lam), knn + math.log(lam))
    return math.exp(-mix.mean().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-lines", type=int, default=1200, help="first lines of train.txt (default 1200)")
    parser.add_argument("--eval-tokens", type=int, default=4000, help="tokens of valid and of test (default 4000)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("-k", type=int, default=32, help="neighbours (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    train = lines("train", args.train_lines)
    tokenizer = train_tokenizer("byte-bpe", train, 2048)
    with tempfile.TemporaryDirectory() as run:
        result = pretrain("llama", train, tokenizer, run,
                          model=dict(d_model=args.d_model, n_layers=args.layers, n_heads=4, n_kv_heads=2),
                          training=dict(steps=args.steps, lr=3e-3, min_lr=3e-4, warmup=min(50, args.steps // 5), log_every=20, seed=0),
                          batch_size=16, context=args.context)
    model = result.model.eval()
    t_train = time.perf_counter() - t0
    encoder = hidden_state_encoder(model)
    train_seqs = token_windows(tokenizer, train, args.context)
    store = Datastore.build(encoder, train_seqs, batch_size=64)
    t_store = time.perf_counter() - t0 - t_train
    valid = token_windows(tokenizer, lines("valid", 10**9), args.context, args.eval_tokens)
    test = token_windows(tokenizer, lines("test", 10**9), args.context, args.eval_tokens)
    temperatures = (1.0, 3.0, 10.0, 30.0)
    lambdas = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    vbase, vknn = target_logprobs(model, encoder, store, valid, args.k, temperatures)
    grid = {(t, lam): mixed_ppl(vbase, vknn[t], lam) for t in temperatures for lam in lambdas}
    best_t, best_lam = min(grid, key=grid.get)
    knnlm = KNNLM(model, encoder, store, lam=best_lam, k=args.k, temperature=best_t)
    base_lp, knn_lp = [], []
    with torch.no_grad():
        for ids in batched(test):
            base_lp.append(model.score(ids).double().reshape(-1))
            knn_lp.append(knnlm.score(ids).reshape(-1))
    test_base = math.exp(-torch.cat(base_lp).mean().item())
    test_knn = math.exp(-torch.cat(knn_lp).mean().item())
    print(json.dumps({
        "data": "wikitext-2", "tokenizer": "byte-bpe 2048", "train_lines": args.train_lines,
        "model": f"llama d{args.d_model} L{args.layers}, {model.config.num_parameters() / 1e6:.2f}M params, "
                 f"{args.steps} steps of 16 x {args.context} tokens",
        "train_loss": round(result.train.final_loss, 4), "datastore_entries": len(store.values),
        "valid_tokens": int(vbase.numel()), "test_tokens": int(torch.cat(base_lp).numel()), "k": args.k,
        "valid_base_ppl": round(math.exp(-vbase.mean().item()), 3),
        "valid_knnlm_ppl": round(grid[(best_t, best_lam)], 3), "lambda": best_lam, "temperature": best_t,
        "test_base_ppl": round(test_base, 3), "test_knnlm_ppl": round(test_knn, 3),
        "test_ppl_ratio": round(test_knn / test_base, 4),
        "train_s": round(t_train, 1), "datastore_s": round(t_store, 1),
        "total_s": round(time.perf_counter() - t0, 1), "threads": args.threads, "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
