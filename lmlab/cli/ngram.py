"""``lmlab ngram train|eval|generate|prune|convert``: count-based n-gram language models."""

from __future__ import annotations

import argparse
import sys
import time

from .common import (
    add_common,
    add_corpus_options,
    add_decoding_options,
    decoding_from_args,
    emit,
    open_corpus_arg,
    status,
    table,
)


def register(sub: argparse._SubParsersAction) -> None:
    from ..ngram.smoothing import DESCRIPTIONS

    p = sub.add_parser("ngram", help="count-based n-gram language models (train, eval, generate, prune, convert)")
    verbs = p.add_subparsers(dest="ngram_verb", metavar="VERB", required=True)

    t = verbs.add_parser("train", help="count a corpus and estimate an n-gram model",
                         epilog="smoothings: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    t.add_argument("corpus", help="training text, one sentence per line (a file, a directory or NAME:SPLIT)")
    t.add_argument("-o", "--output", required=True, help="model.arpa (ARPA text) or a directory (compact binary)")
    t.add_argument("--order", type=int, default=3, help="N, the longest n-gram (default 3)")
    t.add_argument("--smoothing", default="mkn", choices=list(DESCRIPTIONS), help="estimator (default mkn)")
    t.add_argument("--min-count", type=int, default=1, help="words seen fewer times become <unk> (default 1)")
    t.add_argument("--max-vocab", type=int, default=None, help="keep only the most frequent words (top-k)")
    t.add_argument("--k", type=float, default=None, help="add-k constant, > 0 (default 1 = Laplace)")
    t.add_argument("--discount", type=float, nargs="+", default=None,
                   help="fixed discount D (abs, abs-backoff, kn) or D1 D2 D3+ (mkn); default: estimated")
    t.add_argument("--alpha", type=float, default=None, help="stupid-backoff factor, 0 < alpha <= 1 (default 0.4)")
    t.add_argument("--heldout", default=None, help="held-out corpus for jm weights (default: last tenth of train)")
    t.add_argument("--prune", type=int, nargs="+", default=None, metavar="COUNT",
                   help="drop n-grams of order n with count <= COUNT_n (e.g. 0 0 1), as lmplz --prune")
    add_corpus_options(t)
    add_common(t)
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="perplexity of a model on a corpus (with </s>)")
    e.add_argument("model", help="an .arpa file or a model directory")
    e.add_argument("corpus", help="evaluation text (a file, a directory or NAME:SPLIT)")
    e.add_argument("--batch-size", type=int, default=256, help="sentences scored per batch")
    e.add_argument("--oov-warn", type=float, default=0.05,
                   help="warn when more than this fraction of tokens is out of vocabulary (default 0.05)")
    add_corpus_options(e)
    add_common(e)
    e.set_defaults(func=run_eval)

    g = verbs.add_parser("generate", help="sample sentences from a model")
    g.add_argument("model", help="an .arpa file or a model directory")
    g.add_argument("--prompt", default="", help="words to continue (default: start of a sentence)")
    add_decoding_options(g, max_new_tokens=30)
    add_common(g)
    g.set_defaults(func=run_generate)

    r = verbs.add_parser("prune", help="drop n-grams by count or by relative entropy (Stolcke)")
    r.add_argument("model", help="an .arpa file or a model directory")
    r.add_argument("-o", "--output", required=True, help="where to write the pruned model (.arpa or directory)")
    r.add_argument("--counts", type=int, nargs="+", default=None, metavar="COUNT",
                   help="drop n-grams of order n with training count <= COUNT_n (needs a model directory)")
    r.add_argument("--entropy", type=float, default=None, metavar="THETA",
                   help="drop n-grams whose removal raises perplexity by less than THETA (relative, e.g. 1e-7)")
    r.add_argument("--data", default=None, help="corpus on which to report the perplexity before and after")
    add_corpus_options(r)
    add_common(r)
    r.set_defaults(func=run_prune)

    c = verbs.add_parser("convert", help="convert between ARPA and the compact model directory")
    c.add_argument("input", help="an .arpa file or a model directory")
    c.add_argument("output", help="an .arpa file or a model directory")
    add_common(c)
    c.set_defaults(func=run_convert)


def check_output(path: str, what: str) -> None:
    """Refuse an unwritable model path (an .arpa file or a model directory) before any work."""
    from ..core.io import check_writable
    from ..ngram.files import is_arpa_path

    check_writable(path, directory=not is_arpa_path(path), what=what)


#: the estimator options of `ngram train` and the smoothings that use each
ESTIMATOR_OPTIONS = {"k": ("add-k",), "alpha": ("stupid",), "discount": ("abs", "abs-backoff", "kn", "mkn"),
                     "heldout": ("jm",)}


def estimator_options(args: argparse.Namespace) -> dict:
    """The estimator options given on the command line, checked; one that the chosen smoothing does not
    use is refused rather than ignored."""
    from ..core.errors import ConfigError
    from ..core.validate import check_number

    given = {name: getattr(args, name) for name in ESTIMATOR_OPTIONS if getattr(args, name) is not None}
    for name in given:
        if args.smoothing not in ESTIMATOR_OPTIONS[name]:
            raise ConfigError(f"--{name} does not apply to --smoothing {args.smoothing}",
                              f"it is for --smoothing {' / '.join(ESTIMATOR_OPTIONS[name])}; leave it out")
    if "k" in given:
        check_number("--k", args.k, low=0.0, low_inclusive=False)
    if "alpha" in given:
        check_number("--alpha", args.alpha, low=0.0, high=1.0, low_inclusive=False)
    for d in given.get("discount", []):
        check_number("--discount", d, low=0.0)
    if "discount" in given:
        given["discount"] = args.discount[0] if len(args.discount) == 1 else args.discount
    given.pop("heldout", None)
    return given


def run_train(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..ngram.files import save_ngram
    from ..ngram.model import fit_word_model
    from ..ngram.prune import prune_by_count

    check_number("--order", args.order, low=1, integer=True)
    check_number("--min-count", args.min_count, low=1, integer=True)
    check_output(args.output, "--output")
    options = estimator_options(args)
    if args.prune:
        for count in args.prune:
            check_number("--prune", count, low=0, integer=True)
    if args.max_vocab is not None:
        check_number("--max-vocab", args.max_vocab, low=1, integer=True)
    start = time.perf_counter()
    corpus = open_corpus_arg(args, args.corpus)
    heldout = open_corpus_arg(args, args.heldout) if args.heldout else None
    status(args, f"building the vocabulary of {corpus.name}, counting and estimating an order-{args.order} "
                 f"{args.smoothing} model")
    lm, tokenizer = fit_word_model(corpus, order=args.order, smoothing=args.smoothing, min_count=args.min_count,
                                   max_vocab=args.max_vocab, heldout=heldout, **options)
    if args.prune:
        lm = prune_by_count(lm, args.prune)
    fmt = save_ngram(lm, tokenizer, args.output)
    seconds = time.perf_counter() - start
    result = {"output": str(args.output), "format": fmt, "order": lm.order, "smoothing": lm.smoothing,
              "normalized": lm.normalized, "vocab_size": lm.vocab_size, "ngrams": lm.sizes(), "params": lm.params,
              "seconds": round(seconds, 3)}
    human = (f"wrote {args.output} ({fmt}): order {lm.order} {lm.smoothing}, vocabulary {lm.vocab_size}, "
             f"n-grams per order {lm.sizes()} in {seconds:.1f} s")
    emit(args, result, human)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..eval import evaluate_lm
    from ..ngram.files import load_ngram

    check_number("--batch-size", args.batch_size, low=1, integer=True)
    check_number("--oov-warn", args.oov_warn, low=0.0, high=1.0)
    lm, tokenizer = load_ngram(args.model)
    data = open_corpus_arg(args, args.corpus)
    score = evaluate_lm(lm, tokenizer, data, batch_size=args.batch_size)
    oov = count_oov(tokenizer, data)
    result = {"model": str(args.model), "data": data.name, "order": lm.order, "smoothing": lm.smoothing,
              **score.as_dict(), "unk_rate": score.oov_rate, "oov_tokens": oov, "oov_rate": oov / score.tokens}
    warnings = []
    if oov / score.tokens > args.oov_warn:
        warnings.append(f"{oov / score.tokens:.1%} of the test tokens ({oov} of {score.tokens}) are not in the "
                        "model's vocabulary and were scored as <unk>: the vocabularies do not match well")
    if not lm.normalized:
        warnings.append("the model's scores are not normalised probabilities (stupid backoff): "
                        "its perplexity is not a true perplexity")
    for w in warnings:
        print(f"lmlab: warning: {w}", file=sys.stderr)
    if warnings:
        result["warnings"] = warnings
    human = (f"model       {args.model} (order {lm.order}, {lm.smoothing})\n"
             f"data        {data.name} ({score.documents} sentences, {score.tokens} tokens incl. </s>)\n"
             f"perplexity  {score.perplexity:.4f}\n"
             f"bits/byte   {score.bits_per_byte:.4f}\n"
             f"OOV rate    {oov / score.tokens:.2%} (<unk> rate {score.oov_rate:.2%})")
    emit(args, result, human)
    return 0


def count_oov(tokenizer, corpus) -> int:
    """Words of ``corpus`` that are not in the tokenizer's vocabulary (a literal <unk> is in it)."""
    return sum(1 for doc in corpus for w in tokenizer.pieces(doc) if tokenizer.token_to_id(w) is None)


def run_generate(args: argparse.Namespace) -> int:
    """Any decoding strategy over the n-gram model, through the same engine as neural models."""
    from ..generate.engine import Engine, Request
    from ..ngram.files import load_ngram

    settings = decoding_from_args(args)
    lm, tokenizer = load_ngram(args.model)
    prompt = [tokenizer.bos_id] + tokenizer.encode(args.prompt)
    gens = Engine(lm, tokenizer).generate([Request(prompt, settings=settings)])
    samples = [{"text": tokenizer.decode(g.ids), "tokens": g.ids, "logprobs": g.logprobs,
                "finish_reason": g.finish_reason, **({"score": g.score} if g.score is not None else {})}
               for g in gens]
    emit(args, {"model": str(args.model), "prompt": args.prompt, "strategy": settings.strategy,
                "settings": settings.to_dict(), "samples": samples},
         "\n".join(f"[{i + 1}] {s['text']}" for i, s in enumerate(samples)))
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..eval import evaluate_lm
    from ..ngram.files import load_ngram, save_ngram
    from ..ngram.prune import prune_by_count, prune_by_entropy

    if (args.counts is None) == (args.entropy is None):
        raise ConfigError("choose one pruning criterion", "pass --counts C1 C2 … or --entropy THETA")
    check_output(args.output, "--output")
    lm, tokenizer = load_ngram(args.model)
    pruned = prune_by_count(lm, args.counts) if args.counts is not None else prune_by_entropy(lm, args.entropy)
    fmt = save_ngram(pruned, tokenizer, args.output)
    result = {"output": str(args.output), "format": fmt, "ngrams_before": lm.sizes(), "ngrams_after": pruned.sizes(),
              "criterion": {"counts": args.counts} if args.counts is not None else {"entropy": args.entropy}}
    rows = [[n + 1, b, a] for n, (b, a) in enumerate(zip(lm.sizes(), pruned.sizes(), strict=True))]
    human = table(rows, ["order", "before", "after"])
    if args.data:
        data = open_corpus_arg(args, args.data)
        before = evaluate_lm(lm, tokenizer, data).perplexity
        after = evaluate_lm(pruned, tokenizer, data).perplexity
        result.update(data=data.name, perplexity_before=before, perplexity_after=after,
                      perplexity_increase=after / before - 1)
        human += f"\nperplexity on {data.name}: {before:.3f} -> {after:.3f} ({after / before - 1:+.2%})"
    emit(args, result, human)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..ngram.files import load_ngram, save_ngram

    check_output(args.output, "output")
    start = time.perf_counter()
    lm, tokenizer = load_ngram(args.input)
    fmt = save_ngram(lm, tokenizer, args.output)
    seconds = time.perf_counter() - start
    emit(args, {"input": str(args.input), "output": str(args.output), "format": fmt, "ngrams": lm.sizes(),
                "seconds": round(seconds, 3)}, f"wrote {args.output} ({fmt}) in {seconds:.1f} s")
    return 0
