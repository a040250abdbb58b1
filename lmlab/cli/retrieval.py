"""``lmlab eval retrieval``: BM25 / TF-IDF / dense / hybrid retrieval on a BEIR folder."""

from __future__ import annotations

import argparse

from .common import add_common, check_outputs, emit, status


def add_retrieval_options(p: argparse.ArgumentParser) -> None:
    """Analyzer, BM25 and fusion options shared by the retrieval commands."""
    g = p.add_argument_group("retrieval")
    g.add_argument("--variant", default="lucene", help="BM25 variant: lucene (default), robertson, atire, bm25l, bm25+")
    g.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, Pyserini's)")
    g.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, Pyserini's)")
    g.add_argument("--delta", type=float, default=0.5, help="BM25L/BM25+ delta (default 0.5)")
    g.add_argument("--stopwords", default="lucene", help="stop-word list: lucene (default), nltk, none")
    g.add_argument("--stemmer", default="none", help="stemmer: none (default) or porter")
    g.add_argument("--pattern", default="word", help="token pattern: word (\\w+, default), sklearn, or a regex")
    g.add_argument("--encoder", default=None,
                   help="dense/hybrid encoder: minilm (all-MiniLM-L6-v2; the default when its package is installed) "
                        "or hashing (a lexical stand-in, the default otherwise)")
    g.add_argument("--ann", action="store_true", help="dense search with a faiss HNSW index instead of exact search")
    g.add_argument("--cache", default=None,
                   help="folder caching MiniLM document vectors by corpus checksum (default $LMLAB_CACHE/embeddings)")
    g.add_argument("--no-cache", action="store_true", help="encode the documents afresh and cache nothing")
    g.add_argument("--fusion", default="rrf", help="hybrid fusion: rrf (default) or interpolate")
    g.add_argument("--alpha", type=float, default=None, help="dense weight for --fusion interpolate (default 0.5)")


def options_from_args(args: argparse.Namespace):
    from ..analysis.analyzer import Analyzer
    from ..core.errors import ConfigError
    from ..retrieval.evaluate import RetrievalOptions, default_cache

    if args.encoder is not None and args.method not in ("dense", "hybrid"):
        raise ConfigError(f"--encoder does not apply to --method {args.method}", "it is for dense / hybrid; leave it out")
    if args.alpha is not None and args.fusion != "interpolate":
        raise ConfigError(f"--alpha does not apply to --fusion {args.fusion}", "it is for --fusion interpolate")
    cache = None if args.no_cache else (args.cache or default_cache())
    return RetrievalOptions(cache=cache, variant=args.variant, k1=args.k1, b=args.b, delta=args.delta,
                            analyzer=Analyzer(pattern=args.pattern, stopwords=args.stopwords, stemmer=args.stemmer),
                            encoder=args.encoder, ann=args.ann, fusion=args.fusion,
                            alpha=0.5 if args.alpha is None else args.alpha)


def register_eval(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("retrieval", help="nDCG@10, Recall@100, MRR@10, MAP and queries/s on a BEIR folder")
    p.add_argument("folder", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    p.add_argument("--method", default="bm25", help="bm25 (default), tfidf, dense or hybrid")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--depth", type=int, default=100, help="documents retrieved per query (default 100)")
    add_retrieval_options(p)
    add_common(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from ..retrieval.evaluate import evaluate_beir

    status(args, f"evaluating {args.method} on {args.folder} ({args.split})")
    opts = options_from_args(args)
    result = evaluate_beir(args.folder, args.method, args.split, args.depth, opts)
    result["folder"] = str(args.folder)
    result["analyzer"] = opts.analyzer.to_dict()
    if args.method in ("bm25", "hybrid"):
        result["bm25"] = {"variant": args.variant, "k1": args.k1, "b": args.b}
    metric_names = [k for k in result if "@" in k]
    encoder = [f"{'encoder':<14}{result['encoder']}"] if "encoder" in result else []
    human = "\n".join([f"{'method':<14}{args.method} on {args.folder} ({args.split}, {result['queries']} queries)",
                       *encoder,
                       *(f"{k:<14}{result[k]:.4f}" for k in metric_names),
                       f"{'queries/s':<14}{result['queries_per_s']:.1f}",
                       f"{'index time':<14}{result['index_s']:.2f} s"])
    emit(args, result, human)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rag", help="retrieval-augmented generation: index files, ask questions with cited sources")
    verbs = p.add_subparsers(dest="rag_verb", metavar="ACTION", required=True)
    ix = verbs.add_parser("index", help="chunk text files and build a BM25 index of the chunks")
    ix.add_argument("paths", nargs="+", help="text files or directories (their .txt and .md files)")
    ix.add_argument("--out", required=True, help="index directory to write")
    ix.add_argument("--chunk", default="sentences", help="chunk by sentences (default) or tokens")
    ix.add_argument("--size", type=int, default=800, help="max characters (sentences) or tokens per chunk")
    ix.add_argument("--overlap", type=int, default=1, help="sentences or tokens shared by neighbouring chunks")
    add_common(ix)
    ix.set_defaults(func=run_rag_index)
    ask = verbs.add_parser("ask", help="retrieve numbered sources, answer with the chat model, cite the source spans")
    ask.add_argument("question")
    ask.add_argument("--index", required=True, help="directory written by 'lmlab rag index'")
    ask.add_argument("-k", type=int, default=3, help="sources to retrieve (default 3)")
    ask.add_argument("--min-score", type=float, default=0.0,
                     help="sources with a BM25 score at or below this are dropped (default 0)")
    ask.add_argument("--min-coverage", type=float, default=0.4,
                     help="when no source holds this share of the question's idf mass, the answer is "
                          "'not found in the sources' (default 0.4)")
    ask.add_argument("--model", default="smollm2-135m-instruct", help="chat model (default smollm2-135m-instruct)")
    ask.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    ask.add_argument("--cite", default="overlap",
                     help="when the answer cites no valid [n]: overlap (the source sharing most words with it; "
                          "default, 11/12 right on the hand-made set) or model (the number the model finds "
                          "likeliest after 'answer [', 9/12)")
    ask.add_argument("--no-generate", action="store_true", help="only retrieve the sources and build the prompt")
    add_common(ask)
    ask.set_defaults(func=run_rag_ask)


def run_rag_index(args: argparse.Namespace) -> int:
    from ..retrieval.rag import build_rag_index

    check_outputs(args, dirs=("out",))
    n = build_rag_index(args.paths, args.out, args.chunk, args.size, args.overlap)
    emit(args, {"index": args.out, "chunks": n}, f"indexed {n} chunks into {args.out}")
    return 0


def run_rag_ask(args: argparse.Namespace) -> int:
    from ..core.validate import check_choice
    from ..retrieval.rag import ChatModel, RagIndex, ask

    check_choice("--cite", args.cite, ("overlap", "model"))
    rag = RagIndex(args.index)
    result = ask(rag, args.question, None, args.k, args.min_score, args.min_coverage)
    if result["found"] and not args.no_generate:  # the model loads only when there is something to answer
        status(args, f"answering with {args.model}")
        chat = ChatModel(args.model, args.max_new_tokens)
        result = ask(rag, args.question, chat.generate, args.k, args.min_score, args.min_coverage,
                     cite=chat.cite if args.cite == "model" else None)
    sources = "\n".join(f"[{s['n']}] {s['source']}:{s['start']}-{s['end']} (score {s['score']:.2f})\n    {s['text'][:200]}"
                        for s in result["sources"])
    human = result.get("answer", sources) if not result["sources"] else "\n".join(
        [*([result["answer"], f"(cited by {result['cited_by']}: "
            + ", ".join(f"[{c['n']}] {c['source']}:{c['start']}-{c['end']}" for c in result["citations"]) + ")", ""]
           if "answer" in result else []), sources])
    emit(args, result, human)
    return 0
