"""``lmlab align-words``: IBM Model 1 / 2 word alignment of parallel text by EM, optionally
symmetrised; writes the translation table, the alignments and a summary to ``--out``."""

from __future__ import annotations

import argparse
import time

from .common import add_common, check_outputs, emit, status

#: words and single punctuation marks: "Hut," → "Hut", ","
WORD_OR_MARK = r"\w+|[^\w\s]"
#: ``lmlab.wordalign``'s models and symmetrizations, named here so that building the parser imports no
#: numpy (tests/test_cli.py checks they agree)
MODELS = ("ibm1", "ibm2")
SYMMETRIZATIONS = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align-words", help="IBM Model 1/2 word alignment (EM) of parallel text",
                       description="Train IBM Model 1 or 2 by EM on sentence-aligned text and write the "
                                   "translation table t(target | source) and Viterbi word alignments.")
    p.add_argument("corpus", nargs="?", help="a prefix with --pair (multi30k:train reads train.de and train.en)")
    p.add_argument("--pair", default="de-en", help="SRC-TGT language suffixes of the prefix (default de-en)")
    p.add_argument("--source", help="source file, one sentence per line (instead of a prefix; with --target)")
    p.add_argument("--target", help="target file, line-aligned with --source")
    p.add_argument("--iterations", type=int, default=5, help="EM iterations (Model 2: also 2× this many of "
                   "Model 1 first, as NLTK)")
    p.add_argument("--normaliser", choices=("position", "word"), default="position",
                   help="E-step denominator: per target position (textbook) or per target word (NLTK's)")
    p.add_argument("--cased", action="store_true", help="keep case (default: lower-case every word)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N sentence pairs")
    p.add_argument("--min-prob", type=float, default=1e-3,
                   help="leave translation-table entries below this out of the file (0 = all)")
    p.add_argument("--out", required=True, help="output directory")
    add_common(p)
    p.set_defaults(func=run)


def complete(p: argparse.ArgumentParser) -> None:
    """--model and --symmetrize, whose choices come from ``lmlab.wordalign`` (it compiles numba kernels)."""
    from ..wordalign.corpus import MODELS
    from ..wordalign.symmetrize import SYMMETRIZATIONS

    p.add_argument("--model", default="ibm1", choices=MODELS)
    p.add_argument("--symmetrize", choices=SYMMETRIZATIONS, default=None,
                   help="also train target→source and combine the two alignments")


def run(args: argparse.Namespace) -> int:
    from ..analysis.tokenize import word_tokens
    from ..core.errors import ConfigError, DataError
    from ..core.validate import check_number
    from ..data.parallel import aligned_lines, parallel_corpora
    from ..wordalign.corpus import align_corpus, save_alignment

    check_outputs(args, dirs=("out",))
    if (args.source is None) != (args.target is None):
        raise ConfigError("only one side of the parallel data was given", "pass both --source and --target")
    if args.source is None and args.corpus is None:
        raise ConfigError("no parallel text", "pass a prefix (multi30k:train) or --source FILE --target FILE")
    if args.limit is not None:
        check_number("--limit", args.limit, low=1, integer=True)
    corpora = (parallel_corpora(args.source, args.target) if args.source is not None
               else parallel_corpora(args.corpus, pair=args.pair))
    sources, targets = aligned_lines(corpora)
    if args.limit:
        sources, targets = sources[:args.limit], targets[:args.limit]
    pairs = [(word_tokens(s, WORD_OR_MARK, lowercase=not args.cased),
              word_tokens(t, WORD_OR_MARK, lowercase=not args.cased)) for s, t in zip(sources, targets, strict=True)]
    empty = [k for k, (s, t) in enumerate(pairs) if not s or not t]
    if empty:
        raise DataError(f"{len(empty)} sentence pair(s) have an empty side (first: line {empty[0] + 1})",
                        "remove blank lines from both files at the same positions")
    status(args, f"{args.model}: {args.iterations} EM iterations on {len(pairs)} sentence pairs"
                 + (f", symmetrised ({args.symmetrize})" if args.symmetrize else ""))
    t0 = time.perf_counter()
    result = align_corpus(pairs, model=args.model, iterations=args.iterations, symmetrization=args.symmetrize,
                          normaliser=args.normaliser)
    seconds = time.perf_counter() - t0
    summary = save_alignment(args.out, result, min_prob=args.min_prob,
                             info={"source": corpora[0].name, "target": corpora[1].name, "iterations": args.iterations,
                                   "lowercased": not args.cased, "seconds": round(seconds, 3)})
    table = result.forward.translation_table()
    examples = {}
    for word in [w for s, _ in pairs[:3] for w in s][:6]:
        best = max(table[word].items(), key=lambda kv: kv[1])
        examples[word] = {"target": best[0], "probability": round(best[1], 4)}
    summary.update(out=str(args.out), examples=examples)
    human = (f"{summary['model']} on {summary['sentence_pairs']} pairs in {seconds:.1f} s; log-likelihood "
             f"{summary['log_likelihood'][0]:.1f} → {summary['log_likelihood'][-1]:.1f}\n"
             + "\n".join(f"  t({v['target']} | {k}) = {v['probability']}" for k, v in examples.items())
             + f"\nwrote {summary['translation_entries']} table entries and {len(result.alignments)} alignments "
               f"to {args.out}")
    emit(args, summary, human)
    return 0
