"""``lmlab tokenizer``: train, encode, decode, inspect and compare tokenizers."""

from __future__ import annotations

import argparse
import sys

from .common import add_common, add_corpus_options, emit, open_corpus_arg, status, table

TRAIN_KINDS = ("bpe", "bpe-eow", "byte-bpe", "wordpiece", "unigram", "word", "char")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenizer", help="tokenizers: train, encode, decode, info, compare")
    verbs = p.add_subparsers(dest="tokenizer_verb", metavar="ACTION", required=True)

    t = verbs.add_parser("train", help="train a tokenizer on a corpus and save it as tokenizer.json")
    t.add_argument("corpus", help="a text file, a directory, or NAME:SPLIT (e.g. wikitext-2:train)")
    t.add_argument("--kind", default="byte-bpe", choices=TRAIN_KINDS, help="algorithm (default byte-bpe)")
    t.add_argument("--vocab-size", type=int, default=8000, help="ids including special tokens (default 8000)")
    t.add_argument("--min-frequency", type=int, default=0,
                   help="count-based merges (BPE, --wordpiece-score count): stop when the best pair is rarer")
    t.add_argument("--wordpiece-score", choices=("likelihood", "count"), default="likelihood",
                   help="wordpiece: merge by count(ab)/(count(a)count(b)) (default) or by count, as HF tokenizers")
    t.add_argument("--out", required=True, help="output tokenizer.json path or directory")
    add_corpus_options(t)
    add_common(t).set_defaults(func=run_train)

    e = verbs.add_parser("encode", help="text → ids")
    e.add_argument("text", nargs="?", help="text to encode (default: read standard input)")
    e.add_argument("--tokenizer", required=True, help="tokenizer.json, model directory, .gguf, or built-in name")
    e.add_argument("--add-special-tokens", action="store_true", help="wrap in the tokenizer's bos/eos template")
    e.add_argument("--offsets", action="store_true", help="also print each token's character span")
    add_common(e).set_defaults(func=run_encode)

    d = verbs.add_parser("decode", help="ids → text")
    d.add_argument("ids", nargs="*", type=int, help="token ids (default: read them from standard input)")
    d.add_argument("--tokenizer", required=True, help="tokenizer.json, model directory, .gguf, or built-in name")
    d.add_argument("--skip-special-tokens", action="store_true", help="drop special tokens")
    add_common(d).set_defaults(func=run_decode)

    i = verbs.add_parser("info", help="vocabulary size, special tokens and pipeline of a tokenizer")
    i.add_argument("tokenizer", help="tokenizer.json, model directory, .gguf, or built-in name")
    add_common(i).set_defaults(func=run_info)

    c = verbs.add_parser("compare", help="compare tokenizers on one corpus (tokens/byte, fertility, unk, round trip)")
    c.add_argument("corpus", help="a text file, a directory, or NAME:SPLIT")
    c.add_argument("--tokenizer", action="append", required=True, dest="tokenizers",
                   help="a tokenizer to compare (repeat the option)")
    c.add_argument("--limit", type=int, default=None, help="only the first N documents")
    add_corpus_options(c)
    add_common(c).set_defaults(func=run_compare)


def run_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..core.io import check_writable
    from ..core.validate import check_number
    from ..tokenizers import WordLevelTokenizer
    from ..tokenizers.trainers import train_tokenizer

    check_number("--min-frequency", args.min_frequency, low=0, integer=True)
    out = Path(args.out)
    check_writable(out, directory=out.is_dir() or out.suffix != ".json", what="--out")
    corpus = open_corpus_arg(args, args.corpus)
    status(args, f"training a {args.kind} tokenizer (vocab {args.vocab_size}) on {args.corpus}")
    start = time.perf_counter()
    if args.kind in ("word", "char"):
        if args.wordpiece_score != "likelihood":
            raise ConfigError(f"--wordpiece-score applies to --kind wordpiece, not {args.kind}",
                              "drop --wordpiece-score")
        tok = WordLevelTokenizer(args.kind, max_size=args.vocab_size, min_count=max(1, args.min_frequency)).train(corpus)
    else:
        tok = train_tokenizer(args.kind, corpus, args.vocab_size, min_frequency=args.min_frequency,
                              wordpiece_score=args.wordpiece_score)
    seconds = time.perf_counter() - start
    path = tok.save(args.out)
    emit(args, {"kind": args.kind, "vocab_size": tok.vocab_size, "path": str(path), "seconds": seconds},
         f"saved a {args.kind} tokenizer with {tok.vocab_size} ids to {path} ({seconds:.1f} s)")
    return 0


def _read_text(arg: str | None) -> str:
    return arg if arg is not None else sys.stdin.read()


def run_encode(args: argparse.Namespace) -> int:
    from ..tokenizers import load

    tok = load(args.tokenizer)
    text = _read_text(args.text)
    result: dict = {"tokenizer": args.tokenizer}
    if args.offsets:
        ids, offsets = tok.encode_with_offsets(text, args.add_special_tokens)
        result["offsets"] = offsets
        human = "\n".join(f"{i}\t{tok.id_to_token(i)!r}\t{s}:{e}\t{text[s:e]!r}" for i, (s, e) in zip(ids, offsets,
                                                                                                  strict=True))
    else:
        ids = tok.encode(text, add_special_tokens=args.add_special_tokens)
        human = " ".join(map(str, ids))
    result["ids"] = ids
    result["tokens"] = [tok.id_to_token(i) for i in ids]
    emit(args, result, human)
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..tokenizers import load

    tok = load(args.tokenizer)
    ids = args.ids
    if not ids:
        try:
            ids = [int(x) for x in sys.stdin.read().split()]
        except ValueError:
            raise InputError("standard input has something that is not an integer id",
                             "pass whitespace-separated ids") from None
    text = tok.decode(ids, skip_special_tokens=args.skip_special_tokens)
    emit(args, {"tokenizer": args.tokenizer, "text": text}, text)
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..tokenizers import load

    tok = load(args.tokenizer)
    data = tok.to_hf_json()
    model = data.get("model") or {}
    info = {"tokenizer": args.tokenizer, "class": type(tok).__name__, "model": model.get("type"),
            "vocab_size": tok.vocab_size, "special_tokens": tok.special_tokens,
            "added_tokens": len(data.get("added_tokens") or []),
            "normalizer": (data.get("normalizer") or {}).get("type"),
            "pre_tokenizer": (data.get("pre_tokenizer") or {}).get("type"),
            "decoder": (data.get("decoder") or {}).get("type"), "fingerprint": tok.fingerprint()}
    human = "\n".join(f"{k}: {v}" for k, v in info.items())
    emit(args, info, human)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from itertools import islice

    from ..core.validate import check_number
    from ..tokenizers import load
    from ..tokenizers.stats import tokenizer_stats

    if args.limit is not None:
        check_number("--limit", args.limit, low=1, integer=True)
    corpus = open_corpus_arg(args, args.corpus)
    rows = []
    for spec in args.tokenizers:
        status(args, f"tokenizing {args.corpus} with {spec}")
        texts = corpus if args.limit is None else islice(corpus, args.limit)
        rows.append({"tokenizer": spec, **tokenizer_stats(load(spec), texts)})
    human = table([[r["tokenizer"], r["vocab_size"], f"{r['tokens_per_byte']:.4f}", f"{r['tokens_per_word']:.3f}",
                    f"{r['unk_rate']:.4%}", f"{r['roundtrip']:.2%}"] for r in rows],
                  ["tokenizer", "vocab", "tokens/byte", "tokens/word", "unk rate", "round trip"])
    emit(args, {"corpus": args.corpus, "results": rows}, human)
    return 0
