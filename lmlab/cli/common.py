"""Shared CLI plumbing: common flags, corpus and model options, and result printing."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def add_common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags every leaf command takes: --json, --quiet, --debug."""
    g = parser.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object as the result")
    g.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    g.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """How corpus files are read (applies to every corpus argument of the command)."""
    g = parser.add_argument_group("corpus reading")
    g.add_argument("--format", default="auto", choices=["auto", "lines", "blocks", "file", "jsonl", "files"],
                   help="one document per line (default), per blank-line block, per file, or JSONL")
    g.add_argument("--field", default="text", help="text field of JSONL records (default: text)")
    g.add_argument("--errors", default="strict", choices=["strict", "replace"],
                   help="undecodable bytes: stop with an error (default) or replace with U+FFFD")


def open_corpus_arg(args: argparse.Namespace, spec: str):
    from ..data import open_corpus

    return open_corpus(spec, format=args.format, field=args.field, errors=args.errors)


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """A saved model (directory or built-in name), or a unigram model trained on the fly."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=required,
                   help="a model directory, a built-in model name, or 'unigram' to train one from --train")
    g.add_argument("--tokenizer", default=None,
                   help="word, char, or a tokenizer.json / model directory (default: the model's own; word for unigram)")
    g.add_argument("--train", help="training corpus for --model unigram (a file, a directory or NAME:SPLIT)")
    g.add_argument("--smoothing", default="add-k", help="unigram smoothing: mle or add-k (default add-k)")
    g.add_argument("--k", type=float, default=1.0, help="add-k constant (default 1 = Laplace)")
    g.add_argument("--min-count", type=int, default=1, help="vocabulary cut-off for word/char tokenizers")
    g.add_argument("--save", help="also save the trained model as a directory here")
    g.add_argument("--adapter", help="a fine-tuned adapter directory (lmlab finetune --out) applied to the model")


def model_from_args(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(language model, tokenizer, description) as the model options ask."""
    from ..core.errors import ConfigError
    from ..lm import check_tokenizer
    from ..models import load_model, save_model_dir
    from ..ngram import UnigramLM
    from ..tokenizers import WordLevelTokenizer, load

    if args.model == "unigram":
        if getattr(args, "adapter", None):
            raise ConfigError("--adapter applies to neural models, not unigram", "leave --adapter out")
        if not args.train:
            raise ConfigError("--model unigram needs a training corpus", "pass --train FILE (or NAME:SPLIT)")
        train = open_corpus_arg(args, args.train)
        spec = args.tokenizer or "word"
        if spec in ("word", "char"):
            tokenizer = WordLevelTokenizer(spec, min_count=args.min_count).train(train)
        else:
            tokenizer = load(spec)
        lm = UnigramLM.fit_corpus(train, tokenizer, smoothing=args.smoothing, k=args.k)
        if args.save:
            save_model_dir(args.save, *lm.to_state(), tokenizer=tokenizer)
        desc = f"unigram ({args.smoothing}{'' if args.smoothing == 'mle' else f', k={args.k:g}'}, {spec} tokens)"
        return lm, tokenizer, desc
    lm, tokenizer = load_model(args.model)
    if getattr(args, "adapter", None):
        lm = with_adapter(lm, args.adapter)
    if args.tokenizer:
        tokenizer = load(args.tokenizer)
    if tokenizer is None:
        raise ConfigError(f"model {args.model} has no tokenizer.json", "pass --tokenizer PATH")
    check_tokenizer(lm, tokenizer)
    return lm, tokenizer, str(args.model)


def with_adapter(lm: Any, path: str) -> Any:
    """``lm`` with the PEFT adapter saved in ``path`` (refused if it was trained on another base model)."""
    from ..core.errors import ConfigError
    from ..peft import load_adapter

    if not hasattr(lm, "parameters"):
        raise ConfigError(f"--adapter applies to neural models, not a {type(lm).__name__}", "leave --adapter out")
    load_adapter(lm, path)
    return lm.eval()


def input_lines(texts: list[str], path: str | None) -> list[str]:
    """The texts given as arguments, then the lines of ``path`` ('-' = stdin), blank lines dropped."""
    lines = list(texts)
    if path:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
        with fh:
            lines += [line.rstrip("\n") for line in fh]
    return [line for line in lines if line.strip()]


def _clean(obj: Any) -> Any:
    """JSON cannot carry inf/nan: write them as strings rather than invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit(args: argparse.Namespace, result: dict, human: str) -> None:
    """Print ``result`` as one JSON line with --json, else the human-readable text."""
    if getattr(args, "json", False):
        print(json.dumps(_clean(result), ensure_ascii=False))
    else:
        print(human)
    sys.stdout.flush()


def status(args: argparse.Namespace, message: str) -> None:
    """A progress line on stderr for people (silent with --quiet or --json)."""
    if not (getattr(args, "quiet", False) or getattr(args, "json", False)):
        print(message, file=sys.stderr, flush=True)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
