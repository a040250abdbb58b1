"""``lmlab data``: the named data sets and where they are."""

from __future__ import annotations

import argparse

from .common import (
    add_common,
    add_corpus_options,
    check_outputs,
    emit,
    open_corpus_arg,
    status,
    table,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data sets: list what is available, tokenize a corpus into shards")
    verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    ls = add_common(verbs.add_parser("list", help="list the named data sets and whether they are present"))
    ls.set_defaults(func=run_list)
    tok = verbs.add_parser("tokenize", help="tokenize a corpus into memory-mapped token shards")
    tok.add_argument("corpus", help="a file, a directory, NAME:SPLIT or embedded[:train|:test]")
    tok.add_argument("--out", required=True, help="shard directory to write")
    tok.add_argument("--tokenizer", default="word",
                     help="word or char (trained on the corpus), or a tokenizer.json / model directory")
    tok.add_argument("--min-count", type=int, default=1, help="vocabulary cut-off for word/char tokenizers")
    tok.add_argument("--shard-tokens", type=int, default=1 << 26, help="ids per shard file (default 2^26)")
    add_corpus_options(tok)
    add_common(tok)
    tok.set_defaults(func=run_tokenize)


def run_list(args: argparse.Namespace) -> int:
    from ..data import data_root, list_datasets

    rows = list_datasets()
    root = str(data_root())
    human = table([[r["name"], "yes" if r["present"] else "no", ",".join(r["splits"]), r["description"]]
                   for r in rows], ["name", "present", "splits", "description"])
    human += f"\n\ndata root: {root} (set LMLAB_DATA to change it); the embedded corpus is always available as 'embedded'"
    emit(args, {"data_root": root, "datasets": rows}, human)
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    from ..data.shards import write_shards
    from ..tokenizers import WordLevelTokenizer, load

    check_outputs(args, dirs=("out",))
    corpus = open_corpus_arg(args, args.corpus)
    if args.tokenizer in ("word", "char"):
        status(args, f"training a {args.tokenizer}-level vocabulary on {args.corpus}")
        tokenizer = WordLevelTokenizer(args.tokenizer, min_count=args.min_count).train(corpus)
    else:
        tokenizer = load(args.tokenizer)
    shards = write_shards(corpus, tokenizer, args.out, shard_tokens=args.shard_tokens)
    h = shards.header
    result = {"out": str(shards.path), "tokens": h["tokens"], "documents": h["documents"],
              "vocab_size": h["vocab_size"], "dtype": h["dtype"], "shards": len(h["shards"])}
    emit(args, result, f"wrote {h['tokens']:,} tokens from {h['documents']:,} documents "
                       f"({h['dtype']}, vocabulary {h['vocab_size']:,}) in {len(h['shards'])} shard(s) to {shards.path}")
    return 0
