"""``lmlab eval``: evaluate language models (perplexity, cross-entropy, bits per byte)."""

from __future__ import annotations

import argparse
import importlib

from .common import (
    add_common,
    add_corpus_options,
    add_model_options,
    emit,
    model_from_args,
    open_corpus_arg,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate models")
    verbs = p.add_subparsers(dest="eval_verb", metavar="METRIC", required=True)
    ppl = verbs.add_parser("perplexity", help="perplexity, cross-entropy and bits per byte on a corpus")
    add_model_options(ppl)
    ppl.add_argument("--data", required=True, help="evaluation corpus (a file, a directory, or NAME:SPLIT)")
    ppl.add_argument("--batch-size", type=int, default=64, help="documents scored per batch")
    add_corpus_options(ppl)
    add_common(ppl)
    ppl.set_defaults(func=run_perplexity)
    # other CLI modules add their own metrics under `lmlab eval` by defining register_eval(verbs)
    from . import verb_modules

    for name in verb_modules():
        if name != "eval":
            module = importlib.import_module(f"{__package__}.{name}")
            if hasattr(module, "register_eval"):
                module.register_eval(verbs)


def run_perplexity(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..eval import evaluate_lm

    check_number("--batch-size", args.batch_size, low=1, integer=True)
    data = open_corpus_arg(args, args.data)
    lm, tokenizer, desc = model_from_args(args)
    score = evaluate_lm(lm, tokenizer, data, batch_size=args.batch_size)
    result = {"model": desc, "data": data.name, **score.as_dict()}
    if not lm.normalized:
        result["note"] = "the model's scores are not normalised probabilities: perplexity is not a true perplexity"
    human = (f"model         {desc}\n"
             f"data          {data.name} ({score.documents} documents, {score.tokens} tokens, {score.bytes} bytes)\n"
             f"perplexity    {score.perplexity:.4f}\n"
             f"cross-entropy {score.cross_entropy_bits:.4f} bits/token ({score.cross_entropy_nats:.4f} nats)\n"
             f"bits/byte     {score.bits_per_byte:.4f}\n"
             f"bits/char     {score.bits_per_char:.4f}\n"
             f"<unk> rate    {score.oov_rate:.2%}")
    emit(args, result, human)
    return 0
