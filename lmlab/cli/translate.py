"""``lmlab translate``: an encoder–decoder model directory (``lmlab pretrain --objective seq2seq``:
the t5/bart transformers or the attentional RNN, ``--family rnn-seq2seq``) translates texts,
greedily or with length-normalised beam search; ``--references`` scores the output with BLEU
(cased and lower-cased); ``--attention-plot`` draws one sentence's attention alignment."""

from __future__ import annotations

import argparse
import sys

from .common import add_common, check_outputs, emit, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate with an encoder–decoder (t5/bart/rnn-seq2seq) model directory",
                       description="Translate texts, one per line of INPUT (or --input, stdin, --text), with a "
                                   "seq2seq model directory; --references FILE adds corpus BLEU.")
    p.add_argument("input_spec", nargs="?", metavar="INPUT",
                   help="source sentences, one per line, or NAME:SPLIT (multi30k:test.de)")
    p.add_argument("--model", required=True, help="an encoder–decoder model directory (RUN/model)")
    p.add_argument("--input", help="the same as INPUT")
    p.add_argument("--text", action="append", help="a sentence to translate (repeatable)")
    p.add_argument("--beam-size", "--beam", dest="beam", type=int, default=1,
                   help="beam size (default 1 = greedy, batched)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="beam: rank finished hypotheses by log-probability / length^α (default α = 1; 0 = none)")
    p.add_argument("--target-language", help="a multilingual model (bench/mt.py --multilingual): translate into "
                   "this language, e.g. en or de")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest output (default and ceiling: the model's context less the start token)")
    p.add_argument("--references", "--reference", dest="reference",
                   help="reference translations, line-aligned (or NAME:SPLIT): report BLEU")
    p.add_argument("--limit", type=int, default=None, help="translate only the first N sentences")
    p.add_argument("--out", help="write the translations here, one per line")
    p.add_argument("--attention-plot", metavar="PNG", help="save the attention alignment of one sentence here")
    p.add_argument("--plot-sentence", type=int, default=1, help="which sentence to plot (1-based, default 1)")
    add_common(p)
    p.set_defaults(func=run)


def _lines(spec: str) -> list[str]:
    from ..data.parallel import aligned_text

    return list(aligned_text(spec))


def _source_tokenizer(model_dir: str):
    """The model's separate source-side tokenizer (``source/tokenizer.json``), or None when it shares one."""
    from pathlib import Path

    from ..tokenizers import load
    from ..train.pretrain import SOURCE_DIR

    folder = Path(model_dir) / SOURCE_DIR
    return load(folder) if (folder / "tokenizer.json").is_file() else None


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError, InputError, ModelError
    from ..core.io import write_text
    from ..core.validate import check_number
    from ..data.parallel import language_tag
    from ..generate.translate import alignment, plot_alignment, translate
    from ..models import load_model
    from ..models.rnn_seq2seq import RNNEncoderDecoder
    from ..models.seq2seq import EncoderDecoder

    check_outputs(args, files=("out",))
    if args.limit is not None:
        check_number("--limit", args.limit, low=1, integer=True)
    if args.length_penalty is not None and args.beam == 1:
        raise ConfigError("--length-penalty ranks the hypotheses of beam search", "add --beam-size N (N > 1) or "
                          "leave --length-penalty out")
    length_penalty = 1.0 if args.length_penalty is None else args.length_penalty
    if args.input and args.input_spec:
        raise ConfigError("the input was given twice (INPUT and --input)", "pass one of them")
    spec = args.input or args.input_spec
    texts = list(args.text) if args.text else _lines(spec) if spec else [line.rstrip("\n") for line in sys.stdin]
    texts = texts[:args.limit] if args.limit else texts
    if not texts:
        raise InputError("no sentences to translate", "pass --text TEXT, an INPUT file, or lines on stdin")
    model, tokenizer = load_model(args.model)
    if not isinstance(model, EncoderDecoder | RNNEncoderDecoder) or tokenizer is None:
        raise ModelError(f"{args.model} is not an encoder–decoder model directory with a tokenizer",
                         "train one with lmlab pretrain --family t5|bart|rnn-seq2seq --objective seq2seq")
    if not 1 <= args.plot_sentence <= len(texts):
        raise ConfigError(f"--plot-sentence {args.plot_sentence} is outside the {len(texts)} sentences",
                          f"choose 1 … {len(texts)}")
    source_tokenizer = _source_tokenizer(args.model)
    status(args, f"translating {len(texts)} sentence(s) with {args.model} (beam {args.beam})")
    outputs = translate(model, tokenizer, texts, beam_size=args.beam, max_new_tokens=args.max_new_tokens,
                        length_penalty=length_penalty, target_language=args.target_language,
                        source_tokenizer=source_tokenizer)
    result: dict = {"model": str(args.model), "beam": args.beam, "length_penalty": length_penalty,
                    "count": len(texts)}
    if args.reference:
        from ..eval.bleu import corpus_bleu

        refs = _lines(args.reference)[:len(texts)]
        if len(refs) != len(texts):
            raise InputError(f"{len(refs)} references for {len(texts)} sentences", "pass line-aligned references")
        cased, lower = corpus_bleu(outputs, [refs]), corpus_bleu(outputs, [refs], lowercase=True)
        result.update(bleu=round(cased.score, 2), bleu_lowercased=round(lower.score, 2),
                      bleu_signature=cased.signature)
    if args.attention_plot:
        k = args.plot_sentence - 1
        tagged = texts[k] if args.target_language is None else f"{language_tag(args.target_language)} {texts[k]}"
        weights, source, target = alignment(model, tokenizer, tagged, outputs[k], source_tokenizer=source_tokenizer)
        result["attention_plot"] = plot_alignment(weights, source, target, args.attention_plot,
                                                  title=f"sentence {k + 1}: attention of each output token")
    if args.out:
        write_text(args.out, "".join(o + "\n" for o in outputs))
        result["out"] = args.out
    else:
        result["translations"] = outputs
    human = "\n".join(outputs) if not args.out else f"wrote {len(outputs)} translations to {args.out}"
    if "bleu" in result:
        human += f"\nBLEU {result['bleu']:.2f} (lower-cased {result['bleu_lowercased']:.2f})"
    if "attention_plot" in result:
        human += f"\nattention plot → {result['attention_plot']}"
    emit(args, result, human)
    return 0
