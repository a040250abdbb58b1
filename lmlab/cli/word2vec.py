"""``lmlab word2vec train|similar|analogy|eval|plot``: train word vectors and query or evaluate them."""

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
    p = sub.add_parser("word2vec", help="train word2vec vectors; nearest words, analogies, evaluation")
    verbs = p.add_subparsers(dest="w2v_verb", metavar="ACTION", required=True)

    t = verbs.add_parser("train", help="train skip-gram or CBOW vectors on a corpus")
    t.add_argument("--data", required=True, help="training corpus (a file, a directory or NAME:SPLIT)")
    t.add_argument("--out", required=True, help="model directory to write (config.json + model.safetensors)")
    t.add_argument("--export", help="also write the vectors in word2vec format to this file")
    t.add_argument("--binary", action="store_true", help="--export in the binary word2vec format")
    t.add_argument("--architecture", default="skipgram", choices=["skipgram", "cbow"])
    t.add_argument("--loss", default="ns", choices=["ns", "hs"], help="negative sampling or hierarchical softmax")
    t.add_argument("--dim", type=int, default=100)
    t.add_argument("--window", type=int, default=5)
    t.add_argument("--negative", type=int, default=5)
    t.add_argument("--sample", type=float, default=1e-3, help="frequent-word subsampling threshold (0: off)")
    t.add_argument("--min-count", type=int, default=5)
    t.add_argument("--max-vocab", type=int, default=None, help="keep at most this many most frequent words")
    t.add_argument("--alpha", type=float, default=0.025)
    t.add_argument("--min-alpha", type=float, default=0.0001)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=1)
    add_corpus_options(t)
    add_common(t)
    t.set_defaults(func=run_train)

    s = verbs.add_parser("similar", help="nearest words by cosine")
    s.add_argument("--vectors", required=True, help="a vectors directory or a word2vec text/binary file")
    s.add_argument("words", nargs="+", help="query words (their vectors are summed)")
    s.add_argument("--negative-words", nargs="*", default=[], help="words subtracted from the query")
    s.add_argument("--topn", type=int, default=10)
    add_common(s)
    s.set_defaults(func=run_similar)

    a = verbs.add_parser("analogy", help="a is to b as c is to ?")
    a.add_argument("--vectors", required=True, help="a vectors directory or a word2vec text/binary file")
    a.add_argument("a")
    a.add_argument("b")
    a.add_argument("c")
    a.add_argument("--method", default="3cosadd", choices=["3cosadd", "3cosmul"])
    a.add_argument("--topn", type=int, default=5)
    add_common(a)
    a.set_defaults(func=run_analogy)

    e = verbs.add_parser("eval", help="WordSim-353 / SimLex-999 Spearman and Google analogy accuracy")
    e.add_argument("--vectors", required=True, help="a vectors directory or a word2vec text/binary file")
    e.add_argument("--similarity", nargs="*", default=None,
                   help="word-pair files (default: wordsim353.tsv and simlex999.txt of the wordsim data set)")
    e.add_argument("--analogies", default=None, help="analogy file (default: questions-words.txt)")
    e.add_argument("--restrict-vocab", type=int, default=30_000, help="answer analogies within the top N words")
    e.add_argument("--method", default="3cosadd", choices=["3cosadd", "3cosmul"])
    add_common(e)
    e.set_defaults(func=run_eval)

    pl = verbs.add_parser("plot", help="2-D PCA or t-SNE plot of chosen words (PNG)")
    pl.add_argument("--vectors", required=True)
    pl.add_argument("--out", required=True, help="PNG file to write")
    pl.add_argument("--method", default="pca", choices=["pca", "tsne"])
    pl.add_argument("words", nargs="+")
    add_common(pl)
    pl.set_defaults(func=run_plot)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..embeddings import Word2VecConfig, train_word2vec
    from ..embeddings.store import save_vectors

    check_outputs(args, files=("export",), dirs=("out",))
    config = Word2VecConfig(dim=args.dim, architecture=args.architecture, loss=args.loss, negative=args.negative,
                            window=args.window, sample=args.sample, min_count=args.min_count,
                            max_vocab=args.max_vocab, alpha=args.alpha, min_alpha=args.min_alpha,
                            epochs=args.epochs, threads=args.threads, seed=args.seed)
    corpus = open_corpus_arg(args, args.data)
    status(args, f"training word2vec ({config.architecture}, {config.loss}) on {corpus.name}")
    model = train_word2vec(corpus, config)
    wv = model.wv
    save_vectors(args.out, wv, training={**asdict(config), "data": corpus.name})
    if args.export:
        wv.save_word2vec(args.export, binary=args.binary)
    stats = model.stats
    result = {"out": args.out, "export": args.export, "vocab": len(wv), "dim": wv.dim, "words": stats.words,
              "kept_words": stats.kept_words, "seconds": round(stats.seconds, 3),
              "words_per_s": round(stats.words_per_s)}
    emit(args, result, f"{len(wv)} words × {wv.dim} dims → {args.out}\n"
                       f"{stats.words} words trained in {stats.seconds:.1f} s ({stats.words_per_s:,.0f} words/s)")
    return 0


def _vectors(args: argparse.Namespace):
    from ..embeddings.store import load_vectors

    return load_vectors(args.vectors)


def run_similar(args: argparse.Namespace) -> int:
    wv = _vectors(args)
    best = wv.most_similar(positive=args.words, negative=args.negative_words, topn=args.topn)
    emit(args, {"query": args.words, "negative": args.negative_words, "neighbours": best},
         table([[w, f"{s:.4f}"] for w, s in best], ["word", "cosine"]))
    return 0


def run_analogy(args: argparse.Namespace) -> int:
    wv = _vectors(args)
    best = wv.analogy(args.a, args.b, args.c, method=args.method, topn=args.topn)
    emit(args, {"a": args.a, "b": args.b, "c": args.c, "method": args.method, "answers": best},
         f"{args.a} : {args.b} :: {args.c} : {best[0][0]}\n" + table([[w, f"{s:.4f}"] for w, s in best],
                                                                      ["word", "score"]))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..data import data_root
    from ..embeddings.evaluate import evaluate_analogies, evaluate_similarity

    wv = _vectors(args)
    root = data_root() / "wordsim"
    sim_files = args.similarity if args.similarity is not None else [root / "wordsim353.tsv", root / "simlex999.txt"]
    result: dict = {"vectors": args.vectors, "similarity": {}, "analogy": None}
    rows = []
    for f in sim_files:
        r = evaluate_similarity(wv, f)
        result["similarity"][str(f)] = {"spearman": r.spearman, "pairs": r.pairs, "oov_pairs": r.oov_pairs}
        rows.append([f"Spearman ρ {f}", f"{r.spearman:.4f}", f"{r.pairs} pairs, {r.oov_pairs} out of vocabulary"])
    analogies = args.analogies or root / "questions-words.txt"
    r = evaluate_analogies(wv, analogies, restrict_vocab=args.restrict_vocab, method=args.method)
    result["analogy"] = {"file": str(analogies), "accuracy": r.accuracy, "correct": r.correct,
                         "questions": r.questions, "oov_questions": r.oov_questions,
                         "restrict_vocab": args.restrict_vocab, "method": args.method,
                         "sections": {k: {"correct": c, "questions": n} for k, (c, n) in r.sections.items()}}
    rows.append([f"analogy accuracy ({args.method}, top {args.restrict_vocab})", f"{r.accuracy:.4f}",
                 f"{r.correct}/{r.questions}, {r.oov_questions} skipped"])
    emit(args, result, table(rows, ["metric", "value", "detail"]))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from ..embeddings.plot import plot_words

    check_outputs(args, files=("out",))
    xy = plot_words(_vectors(args), args.words, args.out, method=args.method)
    emit(args, {"out": args.out, "method": args.method,
                "points": {w: [float(a), float(b)] for w, (a, b) in zip(args.words, xy, strict=True)}},
         f"wrote {args.out}")
    return 0
