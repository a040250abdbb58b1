"""``lmlab generate``: sample continuations from a model."""

from __future__ import annotations

import argparse

from .common import add_common, add_corpus_options, add_model_options, emit, model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a model")
    add_model_options(p)
    g = p.add_argument_group("decoding")
    g.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    g.add_argument("--max-new-tokens", type=int, default=40)
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument("--temperature", type=float, default=1.0, help="> 0 samples; 0 is greedy")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..generate import ancestral_sample

    lm, tokenizer, desc = model_from_args(args)
    prompt = tokenizer.encode(args.prompt)
    if tokenizer.bos_id is not None:
        prompt = [tokenizer.bos_id] + prompt
    gens = ancestral_sample(lm, prompt, max_new_tokens=args.max_new_tokens, num_samples=args.num_samples,
                            temperature=0.0 if args.greedy else args.temperature, seed=args.seed)
    samples = [{"text": tokenizer.decode(g.ids), "tokens": g.ids, "logprobs": g.logprobs,
                "finish_reason": g.finish_reason} for g in gens]
    human = "\n".join(f"[{i + 1}] {s['text']}" for i, s in enumerate(samples))
    emit(args, {"model": desc, "prompt": args.prompt, "samples": samples}, human)
    return 0
