"""``lmlab generate``: continuations from a model with any decoding strategy and processors."""

from __future__ import annotations

import argparse

from .common import (
    add_common,
    add_constraint_options,
    add_corpus_options,
    add_decoding_options,
    add_method_options,
    add_model_options,
    constrained,
    constraint_from_args,
    decoding_from_args,
    emit,
    methods_from_args,
    model_from_args,
    status,
)

#: ``--quant`` methods (those of ``lmlab.quant.METHODS`` that need no calibration text)
WEIGHT_ONLY = ("int8", "int8-tensor", "int8-group", "int8-zeropoint", "int8-zeropoint-group", "int4",
               "int4-zeropoint", "nf4", "hqq")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a model")
    add_model_options(p)
    g = p.add_argument_group("prompt and model")
    g.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    g.add_argument("--prompts-file", default=None, help="a file of prompts, one per line, generated as one batch")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    g.add_argument("--system", default=None, help="system prompt for --chat")
    g.add_argument("--on-overflow", default="error", choices=["error", "truncate"],
                   help="a prompt too long for the context: stop with an error, or keep its last tokens")
    g.add_argument("--dtype", default=None, help="weights dtype of a neural model: float32, bfloat16, float16")
    g.add_argument("--quant", default=None, choices=WEIGHT_ONLY,
                   help="quantize the weights on load (calibration-free methods; the rest stays in --dtype, "
                        "default float32); for GPTQ/AWQ/SmoothQuant save a model with `lmlab quantize`")
    g.add_argument("--compile", action="store_true", help="torch.compile the transformer's decode step")
    add_decoding_options(p)
    add_constraint_options(p)
    add_method_options(p)
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Every strategy through the engine: one batch of prompts, streamed to a terminal, timed."""
    import sys

    from ..core.errors import ConfigError
    from ..generate.engine import Engine, Request

    settings = decoding_from_args(args)  # bad settings and constraints fail before the model loads
    spec = constraint_from_args(args)
    lm, tokenizer, desc = model_from_args(args)
    settings = constrained(settings, spec, lm, tokenizer)
    if args.dtype:
        from ..core.device import resolve_dtype

        if not hasattr(lm, "parameters"):
            raise ConfigError(f"--dtype applies to neural models, not {desc}", "leave --dtype out")
        lm = lm.to(resolve_dtype(args.dtype))
    if args.quant:
        lm = quantize_args(lm, desc, args.quant, args.dtype)
    settings = methods_from_args(args, settings, lm, tokenizer)
    prompts = [prompt_ids(tokenizer, text, args) for text in prompt_texts(args)]
    requests = [Request(p, settings=settings) for p in prompts]
    rows = len(prompts) * settings.rows
    # the column-major decode layout pays for one or two rows; batches of 4+ read row-major weights faster
    engine = Engine(lm, tokenizer, on_overflow=args.on_overflow, compile=args.compile, decode_layout=rows < 4)
    live = not args.json and not args.quiet and rows == 1 and sys.stdout.isatty()
    on_text = (lambda _, piece: print(piece, end="", flush=True)) if live else None
    outs = engine.generate(requests, on_text=on_text)
    stats = outs[0].stats.to_dict()
    samples = [{"text": c.text, "tokens": c.ids, "logprobs": c.logprobs, "finish_reason": c.finish_reason,
                "prompt_tokens": c.prompt_tokens, **({"score": c.score} if c.score is not None else {}),
                **({"info": c.info} if c.info else {})} for c in outs]
    result = {"model": desc, "prompt": args.prompt, "strategy": settings.strategy, "settings": settings.to_dict(),
              "processors": [repr(p) for p in settings.chain()], **samples[0], **stats, **outs[0].info,
              "samples": samples}
    human = "\n".join(f"[{i + 1}] {s['text']}" for i, s in enumerate(samples)) if len(samples) > 1 else samples[0]["text"]
    if live:
        print()
        human = ""
    timing = (f"prefill {stats['prefill_tokens_per_s']:.1f} tok/s, decode {stats['decode_tokens_per_s']:.1f} tok/s, "
              f"first token {stats['time_to_first_token_s']:.3f} s")
    if "acceptance_rate" in outs[0].info:
        drafted = sum(c.info["draft_tokens"] for c in outs)
        accepted = sum(c.info["accepted_tokens"] for c in outs)
        timing += f", {accepted}/{drafted} drafted tokens accepted"
    status(args, timing)
    if human or args.json:
        emit(args, result, human)
    return 0


def quantize_args(lm, desc: str, scheme: str, dtype: str | None):
    """``lm`` with quantized weights (``--quant``); a model without Linear layers is a clear error."""
    from ..core.errors import ConfigError
    from ..quant import quantize_model

    if not hasattr(lm, "modules"):
        raise ConfigError(f"--quant applies to neural models, not {desc}", "leave --quant out")
    return quantize_model(lm, scheme, dtype=dtype or "float32")


def prompt_texts(args: argparse.Namespace) -> list[str]:
    """The prompt, or the lines of --prompts-file (read as a corpus: a binary or non-UTF-8 file is one
    clear error)."""
    if not args.prompts_file:
        return [args.prompt]
    from ..core.errors import InputError
    from ..data import open_corpus

    lines = [line for line in open_corpus(args.prompts_file, format="lines") if line.strip()]
    if not lines:
        raise InputError(f"{args.prompts_file} has no prompts", "write one prompt per line")
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
