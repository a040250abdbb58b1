"""``lmlab embed``: sentence embeddings of texts (one per line) with all-MiniLM-L6-v2 or a BERT directory."""

from __future__ import annotations

import argparse
import sys

from .common import add_common, check_outputs, emit, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="sentence embeddings (all-MiniLM-L6-v2 by default)",
                       description="Embed texts, one per line of --input (or stdin, or --text), into "
                                   "pooled, normalised vectors; --out saves them as .npy.")
    p.add_argument("--input", help="a text file, one text per line (default: stdin)")
    p.add_argument("--text", action="append", help="a text to embed (repeatable)")
    p.add_argument("--model", default="minilm", help="minilm (default), a Hugging Face BERT directory or an lmlab encoder directory (lmlab simcse)")
    p.add_argument("--pooling", choices=("mean", "cls", "max"), default="mean", help="pooling (default mean)")
    p.add_argument("--no-normalize", action="store_true", help="keep raw pooled vectors (no L2 normalisation)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per text, [CLS]/[SEP] included (default 256)")
    p.add_argument("--out", help="write the [N, D] float32 array to this .npy file")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.errors import InputError
    from ..core.io import atomic_path
    from ..data import text_file
    from ..embeddings import embed

    check_outputs(args, files=("out",))
    if args.text:
        if args.input:
            raise InputError("both --text and --input were given", "embed either the --text arguments or a file")
        texts = list(args.text)
    elif args.input:
        texts = list(text_file(args.input))
    else:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise InputError("no texts to embed", "pass --text TEXT, --input FILE, or lines on stdin")
    status(args, f"embedding {len(texts)} text(s) with {args.model}")
    vectors = embed(texts, model=args.model, pooling=args.pooling, normalize=not args.no_normalize,
                    batch_size=args.batch_size, max_length=args.max_length)
    result = {"model": args.model, "pooling": args.pooling, "normalized": not args.no_normalize,
              "count": len(texts), "dim": int(vectors.shape[1])}
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, vectors)
        result["out"] = args.out
    else:
        result["embeddings"] = [[round(float(v), 6) for v in row] for row in vectors]
    human = "\n".join(" ".join(f"{v:.4f}" for v in row[:8]) + (" …" if vectors.shape[1] > 8 else "")
                      for row in vectors) if not args.out else f"wrote {vectors.shape} to {args.out}"
    emit(args, result, human)
    return 0
