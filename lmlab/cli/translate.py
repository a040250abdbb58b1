"""``lmlab translate``: an encoder–decoder model directory (``lmlab pretrain --objective seq2seq``)
translates texts, greedily or with beam search; ``--reference`` scores the output with BLEU."""

from __future__ import annotations

import argparse
import sys

from .common import add_common, check_outputs, emit, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate with an encoder–decoder (t5/bart) model directory",
                       description="Translate texts, one per line of --input (or stdin, or --text), with a "
                                   "seq2seq model directory; --reference FILE adds corpus BLEU.")
    p.add_argument("--model", required=True, help="an encoder–decoder model directory (RUN/model)")
    p.add_argument("--input", help="source sentences, one per line, or NAME:SPLIT (default: stdin)")
    p.add_argument("--text", action="append", help="a sentence to translate (repeatable)")
    p.add_argument("--beam", type=int, default=1, help="beam size (default 1 = greedy, batched)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="longest output (default: the model's context)")
    p.add_argument("--reference", help="reference translations, line-aligned (or NAME:SPLIT): report BLEU")
    p.add_argument("--limit", type=int, default=None, help="translate only the first N sentences")
    p.add_argument("--out", help="write the translations here, one per line")
    add_common(p)
    p.set_defaults(func=run)


def _lines(spec: str) -> list[str]:
    from ..data.parallel import aligned_text

    return list(aligned_text(spec))


def run(args: argparse.Namespace) -> int:
    from ..core.errors import InputError, ModelError
    from ..core.io import write_text
    from ..core.validate import check_number
    from ..generate.translate import translate
    from ..models import load_model
    from ..models.seq2seq import EncoderDecoder

    check_outputs(args, files=("out",))
    if args.text and args.input:
        raise InputError("both --text and --input were given", "translate either the --text arguments or a file")
    if args.limit is not None:
        check_number("--limit", args.limit, low=1, integer=True)
    texts = list(args.text) if args.text else _lines(args.input) if args.input else [
        line.rstrip("\n") for line in sys.stdin]
    texts = texts[:args.limit] if args.limit else texts
    if not texts:
        raise InputError("no sentences to translate", "pass --text TEXT, --input FILE, or lines on stdin")
    model, tokenizer = load_model(args.model)
    if not isinstance(model, EncoderDecoder) or tokenizer is None:
        raise ModelError(f"{args.model} is not an encoder–decoder model directory with a tokenizer",
                         "train one with lmlab pretrain --family t5|bart --objective seq2seq")
    status(args, f"translating {len(texts)} sentence(s) with {args.model} (beam {args.beam})")
    outputs = translate(model, tokenizer, texts, beam_size=args.beam, max_new_tokens=args.max_new_tokens)
    result: dict = {"model": str(args.model), "beam": args.beam, "count": len(texts)}
    if args.reference:
        from ..eval.bleu import corpus_bleu

        refs = _lines(args.reference)[:len(texts)]
        if len(refs) != len(texts):
            raise InputError(f"{len(refs)} references for {len(texts)} sentences", "pass line-aligned references")
        result["bleu"] = round(corpus_bleu(outputs, [refs]).score, 2)
    if args.out:
        write_text(args.out, "".join(o + "\n" for o in outputs))
        result["out"] = args.out
    else:
        result["translations"] = outputs
    human = "\n".join(outputs) if not args.out else f"wrote {len(outputs)} translations to {args.out}"
    if "bleu" in result:
        human += f"\nBLEU {result['bleu']:.2f}"
    emit(args, result, human)
    return 0
