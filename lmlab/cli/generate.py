"""``lmlab generate``: continuations from a model with any decoding strategy and processors."""

from __future__ import annotations

import argparse

from .common import add_common, add_corpus_options, add_model_options, emit, model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a model")
    add_model_options(p)
    g = p.add_argument_group("decoding: strategy")
    g.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    g.add_argument("--max-new-tokens", type=int, default=40)
    g.add_argument("--num-samples", type=int, default=1, help="samples to draw (or beams to return)")
    g.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--beam-size", type=int, default=None, help="beam search with this many beams")
    g.add_argument("--length-penalty", type=float, default=1.0, help="beam score = sum log p / length^α")
    g.add_argument("--no-early-stopping", action="store_true", help="beam search runs until no beam can improve")
    g.add_argument("--diverse-groups", type=int, default=None, help="diverse beam search with this many groups")
    g.add_argument("--diversity-penalty", type=float, default=0.5)
    g.add_argument("--stochastic-beam", action="store_true", help="stochastic beam search (sampling without replacement)")
    g.add_argument("--best-of", type=int, default=None, help="sample N and keep the best by mean log-probability")
    q = p.add_argument_group("decoding: logits processors")
    q.add_argument("--temperature", type=float, default=1.0, help="> 0; 0 means greedy")
    q.add_argument("--top-k", type=int, default=None)
    q.add_argument("--top-p", type=float, default=None, help="nucleus mass in (0, 1]")
    q.add_argument("--min-p", type=float, default=None)
    q.add_argument("--typical-p", type=float, default=None)
    q.add_argument("--epsilon", type=float, default=None, help="epsilon sampling cut-off")
    q.add_argument("--eta", type=float, default=None, help="eta sampling cut-off")
    q.add_argument("--repetition-penalty", type=float, default=None)
    q.add_argument("--frequency-penalty", type=float, default=0.0)
    q.add_argument("--presence-penalty", type=float, default=0.0)
    q.add_argument("--no-repeat-ngram-size", type=int, default=None)
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..generate import (
        beam_search,
        best_of_n,
        diverse_beam_search,
        sample,
        standard_chain,
        stochastic_beam_search,
    )

    check_number("--temperature", args.temperature, low=0.0)
    greedy = args.greedy or args.temperature == 0
    processors = standard_chain(
        temperature=1.0 if greedy else args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        typical_p=args.typical_p, epsilon=args.epsilon, eta=args.eta, repetition_penalty=args.repetition_penalty,
        frequency_penalty=args.frequency_penalty, presence_penalty=args.presence_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size)
    lm, tokenizer, desc = model_from_args(args)
    prompt = tokenizer.encode(args.prompt)
    if tokenizer.start_id is not None:
        prompt = [tokenizer.start_id] + prompt
    common = dict(max_new_tokens=args.max_new_tokens, processors=processors)
    if args.diverse_groups:
        strategy = "diverse_beam"
        gens = diverse_beam_search(lm, prompt, beam_size=args.beam_size or args.diverse_groups * 2,
                                   groups=args.diverse_groups, diversity_penalty=args.diversity_penalty,
                                   length_penalty=args.length_penalty, early_stopping=not args.no_early_stopping,
                                   num_return=args.num_samples, **common)
    elif args.stochastic_beam:
        strategy = "stochastic_beam"
        gens = stochastic_beam_search(lm, prompt, beam_size=args.beam_size or args.num_samples, seed=args.seed,
                                      **common)[:args.num_samples]
    elif args.beam_size:
        strategy = "beam"
        gens = beam_search(lm, prompt, beam_size=args.beam_size, length_penalty=args.length_penalty,
                           early_stopping=not args.no_early_stopping, num_return=args.num_samples, **common)
    elif args.best_of:
        strategy = "best_of"
        gens = best_of_n(lm, prompt, args.best_of, seed=args.seed, keep=args.num_samples, **common)
    else:
        strategy = "greedy" if greedy else "sample"
        gens = sample(lm, prompt, greedy=greedy, num_samples=args.num_samples, seed=args.seed, **common)
    samples = [{"text": tokenizer.decode(g.ids), "tokens": g.ids, "logprobs": g.logprobs,
                "finish_reason": g.finish_reason, "score": g.score} for g in gens]
    human = "\n".join(f"[{i + 1}] {s['text']}" for i, s in enumerate(samples))
    emit(args, {"model": desc, "prompt": args.prompt, "strategy": strategy,
                "processors": [repr(p) for p in processors], "samples": samples}, human)
    return 0
