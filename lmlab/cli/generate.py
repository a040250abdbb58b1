"""``lmlab generate``: continuations from a model with any decoding strategy and processors."""

from __future__ import annotations

import argparse

from .common import add_common, add_corpus_options, add_model_options, emit, model_from_args, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a model")
    add_model_options(p)
    g = p.add_argument_group("decoding: strategy")
    g.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    g.add_argument("--prompts-file", default=None, help="a file of prompts, one per line, generated as one batch")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    g.add_argument("--system", default=None, help="system prompt for --chat")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable); not part of the output")
    g.add_argument("--stop-id", type=int, action="append", default=None, help="stop token id (default: the EOS)")
    g.add_argument("--on-overflow", default="error", choices=["error", "truncate"],
                   help="a prompt too long for the context: stop with an error, or keep its last tokens")
    g.add_argument("--dtype", default=None, help="weights dtype of a neural model: float32, bfloat16, float16")
    g.add_argument("--quant", default=None, choices=["int8"],
                   help="weight-only int8 matmuls (bf16 inputs; the rest stays in --dtype, default float32)")
    g.add_argument("--compile", action="store_true", help="torch.compile the transformer's decode step")
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
    from ..core.errors import ConfigError

    if args.dtype:
        from ..core.device import resolve_dtype

        if not hasattr(lm, "parameters"):
            raise ConfigError(f"--dtype applies to neural models, not {desc}", "leave --dtype out")
        lm = lm.to(resolve_dtype(args.dtype))
    if args.quant:
        lm = quantize_args(lm, desc, args.quant, args.dtype)
    prompts = [prompt_ids(tokenizer, text, args) for text in prompt_texts(args)]
    if not (args.diverse_groups or args.stochastic_beam or args.beam_size or args.best_of):
        return run_engine(args, lm, tokenizer, desc, prompts, processors, greedy)
    if len(prompts) > 1:
        raise ConfigError("beam search and best-of-n take one prompt", "use --prompt, or greedy/sampling for a file")
    prompt = prompts[0]
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
    else:
        strategy = "best_of"
        gens = best_of_n(lm, prompt, args.best_of, seed=args.seed, keep=args.num_samples, **common)
    samples = [{"text": tokenizer.decode(g.ids), "tokens": g.ids, "logprobs": g.logprobs,
                "finish_reason": g.finish_reason, "score": g.score} for g in gens]
    human = "\n".join(f"[{i + 1}] {s['text']}" for i, s in enumerate(samples))
    emit(args, {"model": desc, "prompt": args.prompt, "strategy": strategy,
                "processors": [repr(p) for p in processors], "samples": samples}, human)
    return 0


def quantize_args(lm, desc: str, scheme: str, dtype: str | None):
    """``lm`` with int8 weights (``--quant``); a model without Linear layers is a clear error."""
    from ..core.errors import ConfigError
    from ..quant import quantize_model

    if not hasattr(lm, "modules"):
        raise ConfigError(f"--quant applies to neural models, not {desc}", "leave --quant out")
    return quantize_model(lm, scheme, dtype=dtype or "float32")


def prompt_texts(args: argparse.Namespace) -> list[str]:
    """The prompt, or the lines of --prompts-file."""
    if not args.prompts_file:
        return [args.prompt]
    from pathlib import Path

    from ..core.errors import InputError

    path = Path(args.prompts_file)
    if not path.is_file():
        raise InputError(f"prompts file not found: {path}", "pass a text file with one prompt per line")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path} has no prompts", "write one prompt per line")
    return lines


def prompt_ids(tokenizer, text: str, args: argparse.Namespace) -> list[int]:
    """Token ids of one prompt: a chat turn under the model's template with --chat, else the text
    (after the start id — BOS, else EOS — unless the model has a chat template and the prompt is
    not empty)."""
    if getattr(args, "chat", False):
        from ..generate.chat_template import chat_prompt

        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": text}]
        return chat_prompt(tokenizer, messages)
    ids = tokenizer.encode(text)
    if tokenizer.start_id is not None and not (getattr(tokenizer, "chat_template", None) and ids):
        ids = [tokenizer.start_id] + ids
    return ids


def run_engine(args: argparse.Namespace, lm, tokenizer, desc: str, prompts: list[list[int]], processors,
               greedy: bool) -> int:
    """Greedy or sampled generation through the engine: batched, streamed to a terminal, timed."""
    import sys

    from ..generate.engine import Engine, Request

    requests = [Request(p, max_new_tokens=args.max_new_tokens, stop=args.stop, stop_ids=args.stop_id,
                        seed=None if args.seed is None else args.seed + i)
                for p in prompts for i in range(args.num_samples)]
    # the column-major decode layout pays for one or two rows; batches of 4+ read row-major weights faster
    engine = Engine(lm, tokenizer, processors=processors, greedy=greedy, on_overflow=args.on_overflow,
                    compile=args.compile, decode_layout=len(requests) < 4)
    live = not args.json and not args.quiet and len(requests) == 1 and sys.stdout.isatty()
    on_text = (lambda _, piece: print(piece, end="", flush=True)) if live else None
    outs = engine.generate(requests, on_text=on_text)
    stats = outs[0].stats.to_dict()
    samples = [{"text": c.text, "tokens": c.ids, "logprobs": c.logprobs, "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens} for c in outs]
    result = {"model": desc, "prompt": args.prompt, "strategy": "greedy" if greedy else "sample",
              "processors": [repr(p) for p in processors], **samples[0], **stats, "samples": samples}
    human = "\n".join(f"[{i + 1}] {s['text']}" for i, s in enumerate(samples)) if len(samples) > 1 else samples[0]["text"]
    if live:
        print()
        human = ""
    timing = (f"prefill {stats['prefill_tokens_per_s']:.1f} tok/s, decode {stats['decode_tokens_per_s']:.1f} tok/s, "
              f"first token {stats['time_to_first_token_s']:.3f} s")
    status(args, timing)
    if human or args.json:
        emit(args, result, human)
    return 0
