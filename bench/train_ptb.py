"""Word-level Penn Treebank: the classic table — 5-gram KN, Bengio feed-forward LM, Zaremba's small
2-layer LSTM (200 units; published test perplexity ≈ 115, target ≤ 120) and a small transformer.

Every neural model reads the training stream (each line followed by its end-of-sentence id)
as ``batch`` contiguous streams of 35 tokens, and is scored on the whole test stream: the
recurrent and feed-forward models with their state carried, the transformer with sliding
windows (context 128, 64 new tokens per window). The 5-gram KN row appears when
``lmlab.ngram`` provides ``NgramLM`` (another part of lmlab). ``--scale`` < 1 shortens every
recipe to that fraction of its steps (for a busy machine); the schedules shrink with it.
Last line: one JSON object with test perplexity and wall time per model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import dataset_corpus  # noqa: E402
from lmlab.data.loaders import ContiguousStream, RandomWindows  # noqa: E402
from lmlab.data.shards import write_shards  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import CausalLM, TrainConfig, build_model, stream_loss, train  # noqa: E402

BATCH, BPTT = 20, 35

# family, model settings, training settings, epochs of the full recipe
RECIPES = {
    "feedforward": ("feedforward", dict(order=5, d_embed=128, d_hidden=512, dropout=0.3),
                    dict(optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="cosine", warmup=100,
                         clip=1.0), 6),
    "lstm": ("lstm", dict(d_embed=200, d_hidden=200, n_layers=2, dropout=0.0, init_range=0.1),
             dict(optimizer="sgd", lr=1.0, weight_decay=0.0, schedule="cosine", clip=5.0), 13),
    "transformer": ("gpt2", dict(d_model=256, n_layers=4, n_heads=4, dropout=0.3, context_length=128),
                    dict(optimizer="adamw", lr=1e-3, weight_decay=0.1, schedule="cosine", warmup=200,
                         clip=1.0, beta2=0.98), 8),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="kn,feedforward,lstm,transformer")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of each recipe's steps to run")
    p.add_argument("--scales", default="", help="per-model fractions overriding --scale, e.g. lstm=0.1,transformer=0.05")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    set_quiet(True)
    train_corpus, test_corpus = dataset_corpus("ptb", "train"), dataset_corpus("ptb", "test")
    tokenizer = WordLevelTokenizer("word").train(train_corpus)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ptb-"))
    train_tokens = write_shards(train_corpus, tokenizer, tmp / "train")
    test_tokens = write_shards(test_corpus, tokenizer, tmp / "test")
    rows: dict[str, dict] = {}
    wanted = args.models.split(",")
    scales = {k: float(v) for k, v in (item.split("=") for item in args.scales.split(",") if item)}
    if "kn" in wanted:
        rows["5-gram KN"] = kn_row(train_corpus, test_corpus, tokenizer)
        print(json.dumps({"5-gram KN": rows["5-gram KN"]}), flush=True)
    for name in wanted:
        if name not in RECIPES:
            continue
        family, settings, training, epochs = RECIPES[name]
        steps_per_epoch = (len(train_tokens) - 1) // BATCH // BPTT
        steps = max(1, int(epochs * steps_per_epoch * scales.get(name, args.scale)))
        torch.manual_seed(0)
        model = build_model(family, settings, tokenizer)
        config = TrainConfig(steps=steps, device="cpu", log_every=50, **training)
        if name == "transformer":
            source, objective = RandomWindows(train_tokens, BATCH * BPTT // 128 + 1, 128, seed=0), CausalLM()
        else:
            source, objective = ContiguousStream(train_tokens, BATCH, BPTT), CausalLM(carry_state=True)
        began = time.perf_counter()
        result = train(model, objective, source, config, tmp / name)
        seconds = time.perf_counter() - began
        model.eval()
        loss = stream_loss(model, test_tokens, context=BPTT, batch_size=10)
        rows[name] = {"test_ppl": round(math.exp(loss), 2), "train_loss": round(result.final_loss, 4),
                      "steps": steps, "epochs": round(steps / steps_per_epoch, 3), "train_s": round(seconds, 1),
                      "parameters": sum(p.numel() for p in model.parameters())}
        print(json.dumps({name: rows[name]}), flush=True)
    print(json.dumps({"bench": "train_ptb", "scale": args.scale, "scales": scales, "threads": args.threads,
                      "lstm_target_test_ppl": 120, "models": rows}))


def kn_row(train_corpus, test_corpus, tokenizer) -> dict:
    try:
        from lmlab.ngram import NgramLM
    except ImportError:
        return {"skipped": "lmlab.ngram has no NgramLM in this checkout"}
    from lmlab.eval import evaluate_lm

    began = time.perf_counter()
    lm = NgramLM.fit_corpus(train_corpus, tokenizer, order=5, smoothing="mkn")
    seconds = time.perf_counter() - began
    score = evaluate_lm(lm, tokenizer, test_corpus)
    return {"test_ppl": round(score.perplexity, 2), "train_s": round(seconds, 1),
            "note": "sentence-level (BOS … EOS per line), interpolated modified Kneser-Ney"}


if __name__ == "__main__":
    main()
