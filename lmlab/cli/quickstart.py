"""``lmlab quickstart``: the main job on embedded defaults, no data directory or network needed.

Today: word- and character-level unigram models trained on the embedded corpus (the
standard library's pydoc topics), their perplexity and bits per byte on its held-out
slice, and a few samples. Bits per byte is the column to compare across the two.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_common, emit, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="train and evaluate small models on the embedded corpus")
    p.add_argument("--out", default="quickstart-out", help="where to save the trained model directories")
    p.add_argument("--samples", type=int, default=2, help="samples to show per model")
    p.add_argument("--seed", type=int, default=0)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import embedded_corpus
    from ..eval import evaluate_lm
    from ..generate import ancestral_sample
    from ..models import save_model_dir
    from ..ngram import UnigramLM
    from ..tokenizers import WordLevelTokenizer

    start = time.perf_counter()
    train, test = embedded_corpus("train"), embedded_corpus("test")
    status(args, "lmlab quickstart: embedded corpus (pydoc topics), 90 % train / 10 % held out")
    results = []
    for level, min_count, max_tokens in (("word", 2, 30), ("char", 1, 120)):
        status(args, f"• {level}-level tokenizer and add-1 unigram model")
        tokenizer = WordLevelTokenizer(level, min_count=min_count).train(train)
        lm = UnigramLM.fit_corpus(train, tokenizer, smoothing="add-k", k=1.0)
        score = evaluate_lm(lm, tokenizer, test)
        out_dir = Path(args.out) / f"{level}-unigram"
        save_model_dir(out_dir, *lm.to_state(), tokenizer=tokenizer)
        prompt = [tokenizer.bos_id]
        gens = ancestral_sample(lm, prompt, max_new_tokens=max_tokens, num_samples=args.samples, seed=args.seed)
        results.append({"model": f"{level}-unigram", "vocab_size": tokenizer.vocab_size,
                        "perplexity": score.perplexity, "bits_per_byte": score.bits_per_byte,
                        "cross_entropy_bits": score.cross_entropy_bits, "tokens": score.tokens,
                        "oov_rate": score.oov_rate, "saved_to": str(out_dir),
                        "samples": [tokenizer.decode(g.ids) for g in gens]})
    elapsed = time.perf_counter() - start
    rows = [[r["model"], r["vocab_size"], f"{r['perplexity']:.2f}", f"{r['bits_per_byte']:.4f}",
             f"{r['oov_rate']:.2%}"] for r in results]
    lines = [table(rows, ["model", "vocab", "perplexity", "bits/byte", "<unk> rate"]), "",
             "Perplexity is per token, so word and char models differ by far; bits per byte compares them.", ""]
    for r in results:
        lines.append(f"samples from {r['model']} (saved to {r['saved_to']}):")
        lines += [f"  {s[:200]!r}" for s in r["samples"]]
    lines += ["", f"done in {elapsed:.1f} s. Next: lmlab generate --model {results[0]['saved_to']} --seed 1"]
    emit(args, {"corpus": "embedded (pydoc_data.topics)", "models": results, "seconds": elapsed}, "\n".join(lines))
    return 0
