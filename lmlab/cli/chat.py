"""``lmlab chat``: talk to a chat model — streamed answers, history, and a few slash commands.

Each line read is a user turn (stdin may be a pipe: one turn per line). Commands:
``/system TEXT`` sets the system prompt (and starts over), ``/reset`` forgets the history,
``/settings`` shows the decoding settings, ``/quit`` ends. With ``--json`` nothing is
streamed and one JSON object with every turn is printed at the end.
"""

from __future__ import annotations

import argparse
import sys

from .common import (
    add_common,
    add_constraint_options,
    add_decoding_options,
    add_method_options,
    constrained,
    constraint_from_args,
    decoding_from_args,
    emit,
    methods_from_args,
)
from .generate import WEIGHT_ONLY

HELP = "commands: /system TEXT, /reset, /settings, /quit"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a model (streaming, history, /system, /reset, /settings)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="a chat model: directory or built-in name")
    p.add_argument("--adapter", default=None, help="a fine-tuned adapter directory (lmlab finetune --out)")
    p.add_argument("--system", default=None, help="system prompt (default: the template's own)")
    add_decoding_options(p, max_new_tokens=256, temperature=0.7, top_p=0.9, search=False)
    add_constraint_options(p)
    add_method_options(p, search=False)
    p.add_argument("--dtype", default="float32", help="weights dtype: float32 or bfloat16")
    p.add_argument("--quant", default=None, choices=WEIGHT_ONLY,
                   help="quantize the weights on load (calibration-free methods, as generate --quant; "
                        "the rest stays in --dtype)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer's decode step")
    p.add_argument("--on-overflow", default="truncate", choices=["error", "truncate"],
                   help="a conversation longer than the context: stop, or drop its oldest tokens")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..generate.chat_template import chat_prompt
    from ..generate.engine import Engine, Request
    from ..models import load_model
    from .common import status, with_adapter

    settings = decoding_from_args(args)
    spec = constraint_from_args(args)
    status(args, f"loading {args.model} ...")
    lm, tokenizer = load_model(args.model, dtype=args.dtype) if args.model in _named() else load_model(args.model)
    settings = constrained(settings, spec, lm, tokenizer)
    if args.adapter:
        lm = with_adapter(lm, args.adapter)
    if args.quant:
        from .generate import quantize_args

        lm = quantize_args(lm, args.model, args.quant, args.dtype)
    settings = methods_from_args(args, settings, lm, tokenizer)
    engine = Engine(lm, tokenizer, on_overflow=args.on_overflow, compile=args.compile)
    system, history, turns = args.system, [], []
    interactive = sys.stdin.isatty() and not args.json
    if interactive:
        print(f"{args.model} — {HELP}", file=sys.stderr)
    stream = not args.json
    turn = 0
    while True:
        if interactive:
            print("> ", end="", flush=True, file=sys.stderr)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            if command == "/quit":
                break
            if command == "/reset":
                history = []
                status(args, "(history cleared)")
            elif command == "/system":
                system, history = rest.strip() or None, []
                status(args, f"(system prompt {'set' if system else 'cleared'}; history cleared)")
            elif command == "/settings":
                shown = {"model": args.model, "quant": args.quant, "strategy": settings.strategy,
                         **settings.to_dict(), "system": system, "turns_in_history": len(history) // 2}
                print("\n".join(f"{k}: {v}" for k, v in shown.items()), file=sys.stderr)
            else:
                print(f"unknown command {command}; {HELP}", file=sys.stderr)
            continue
        messages = ([{"role": "system", "content": system}] if system else []) + history + \
            [{"role": "user", "content": line}]
        prompt = chat_prompt(tokenizer, messages)
        seed = None if settings.seed is None else settings.seed + turn
        request = Request(prompt, settings=settings.with_(seed=seed))
        on_text = (lambda _, piece: print(piece, end="", flush=True)) if stream else None
        completion = engine.generate([request], on_text=on_text)[0]
        if stream:
            print(flush=True)
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": completion.text}]
        turns.append({"user": line, "assistant": completion.text, "tokens": len(completion.ids),
                      "finish_reason": completion.finish_reason, **completion.stats.to_dict()})
        turn += 1
    if args.json:
        emit(args, {"model": args.model, "system": system, "turns": turns}, "")
    return 0


def _named() -> set[str]:
    from ..models import NAMED_MODELS

    return set(NAMED_MODELS)
