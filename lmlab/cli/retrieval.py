"""``lmlab eval retrieval``: BM25 / TF-IDF / dense / hybrid retrieval on a BEIR folder."""

from __future__ import annotations

import argparse

from .common import add_common, check_outputs, emit, refuse_orphans, status


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
    g = ix.add_argument_group("GraphRAG (with --graph)")
    g.add_argument("--graph", action="store_true",
                   help="also build GraphRAG's entity graph, Louvain communities and community reports")
    g.add_argument("--extractor", default=None,
                   help="model (the chat model writes entity/relation records; default) or cooccurrence "
                        "(no model: capitalised spans, related when in one sentence)")
    g.add_argument("--model", default=None, help="chat model for extraction and reports (default smollm2-135m-instruct)")
    g.add_argument("--entity-types", default=None, help="comma-separated entity types (default organization,person,geo,event)")
    g.add_argument("--seed", type=int, default=None, help="Louvain seed (default 0)")
    g.add_argument("--resolution", type=float, default=None, help="Louvain resolution (default 1.0)")
    g.add_argument("--report-budget", type=int, default=None, help="tokens of a community report's context (default 1500)")
    g.add_argument("--extract-tokens", type=int, default=None, help="new tokens per chunk's extraction (default 200)")
    g.add_argument("--report-tokens", type=int, default=None, help="new tokens per community report (default 160)")
    g.add_argument("--batch-size", type=int, default=None, help="prompts per generation batch (default 16)")
    add_common(ix)
    ix.set_defaults(func=run_rag_index)
    ask = verbs.add_parser("ask", help="retrieve numbered sources, answer with the chat model, cite the source spans")
    ask.add_argument("question")
    ask.add_argument("--index", required=True, help="directory written by 'lmlab rag index'")
    ask.add_argument("--mode", default="plain",
                     help="plain (BM25 sources with citations; default) or graph (GraphRAG over an index built "
                          "with --graph; see --search)")
    ask.add_argument("--search", default=None,
                     help="with --mode graph: global (map-reduce over community reports; default) or local "
                          "(matched entities, their neighbours, relations, reports and chunks)")
    ask.add_argument("-k", type=int, default=None,
                     help="sources to retrieve (plain) or entities to match (graph local) (default 3)")
    ask.add_argument("--min-score", type=float, default=None,
                     help="plain: sources with a BM25 score at or below this are dropped (default 0)")
    ask.add_argument("--min-coverage", type=float, default=None,
                     help="plain: when no source holds this share of the question's idf mass, the answer is "
                          "'not found in the sources' (default 0.4)")
    ask.add_argument("--level", type=int, default=None,
                     help="graph: community level, 0 the coarsest (default 0 for global, the finest for local)")
    ask.add_argument("--budget", type=int, default=None, help="graph: context tokens of the final prompt (default 2000)")
    ask.add_argument("--model", default="smollm2-135m-instruct", help="chat model (default smollm2-135m-instruct)")
    ask.add_argument("--max-new-tokens", type=int, default=None,
                     help="answer length limit (default 64 plain, 200 graph)")
    ask.add_argument("--cite", default=None,
                     help="plain, when the answer cites no valid [n]: overlap (the source sharing most words with it; "
                          "default, 11/12 right on the hand-made set) or model (the number the model finds "
                          "likeliest after 'answer [', 9/12)")
    ask.add_argument("--no-generate", action="store_true",
                     help="only retrieve and build the prompt (plain, or graph local)")
    add_common(ask)
    ask.set_defaults(func=run_rag_ask)


GRAPH_INDEX_OPTIONS = ("extractor", "model", "entity_types", "seed", "resolution", "report_budget",
                       "extract_tokens", "report_tokens", "batch_size")
PLAIN_ASK_OPTIONS = ("min_score", "min_coverage", "cite")
ASK_MODES = ("plain", "graph")
GRAPH_SEARCHES = ("global", "local")


def run_rag_index(args: argparse.Namespace) -> int:
    from ..retrieval.rag import build_rag_index

    refuse_orphans(args, {"graph": GRAPH_INDEX_OPTIONS})
    check_outputs(args, dirs=("out",))
    n = build_rag_index(args.paths, args.out, args.chunk, args.size, args.overlap)
    result = {"index": args.out, "chunks": n}
    human = f"indexed {n} chunks into {args.out}"
    if args.graph:
        meta = build_graph(args)
        result["graph"] = meta
        human += (f"\ngraph: {meta['entities']} entities, {meta['relations']} relations, communities per level "
                  f"{meta['communities_per_level']} ({meta['extractor']} extraction: {meta['malformed_lines']} "
                  f"malformed lines, {meta['ungrounded_records']} ungrounded records skipped)")
    emit(args, result, human)
    return 0


def build_graph(args: argparse.Namespace) -> dict:
    """GraphRAG's index beside the chunks just written (the chat model loads once for all of it)."""
    from ..core.validate import check_choice
    from ..retrieval.graph import EXTRACTORS, build_graph_index
    from ..retrieval.graph_extract import ENTITY_TYPES
    from ..retrieval.rag import ChatModel, RagIndex

    extractor = check_choice("--extractor", args.extractor or "model", EXTRACTORS)
    types = tuple(t.strip() for t in args.entity_types.split(",") if t.strip()) if args.entity_types else ENTITY_TYPES
    model = args.model or "smollm2-135m-instruct"
    status(args, f"building the entity graph ({extractor} extraction; reports by {model})")
    chat = ChatModel(model, batch_size=16 if args.batch_size is None else args.batch_size)
    chunks = list(RagIndex(args.out).chunks.values())
    graph = build_graph_index(chunks, chat, extractor, entity_types=types, seed=args.seed or 0,
                              resolution=1.0 if args.resolution is None else args.resolution,
                              report_budget=1500 if args.report_budget is None else args.report_budget,
                              extract_tokens=200 if args.extract_tokens is None else args.extract_tokens,
                              report_tokens=160 if args.report_tokens is None else args.report_tokens)
    graph.meta["model"] = model
    graph.save(args.out)
    return graph.meta


def run_rag_ask(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.validate import check_choice

    check_choice("--mode", args.mode, ASK_MODES)
    if args.mode == "graph":
        return run_graph_ask(args)
    given = [f"--{o}" for o in ("search", "level", "budget") if getattr(args, o) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with --mode graph",
                          "add --mode graph or leave it out")
    return run_plain_ask(args)


def run_plain_ask(args: argparse.Namespace) -> int:
    from ..core.validate import check_choice
    from ..retrieval.rag import ChatModel, RagIndex, ask

    cite = check_choice("--cite", args.cite or "overlap", ("overlap", "model"))
    k = 3 if args.k is None else args.k
    min_score = 0.0 if args.min_score is None else args.min_score
    min_coverage = 0.4 if args.min_coverage is None else args.min_coverage
    rag = RagIndex(args.index)
    result = ask(rag, args.question, None, k, min_score, min_coverage)
    if result["found"] and not args.no_generate:  # the model loads only when there is something to answer
        status(args, f"answering with {args.model}")
        chat = ChatModel(args.model, 64 if args.max_new_tokens is None else args.max_new_tokens)
        result = ask(rag, args.question, chat.generate, k, min_score, min_coverage,
                     cite=chat.cite if cite == "model" else None)
    sources = "\n".join(f"[{s['n']}] {s['source']}:{s['start']}-{s['end']} (score {s['score']:.2f})\n    {s['text'][:200]}"
                        for s in result["sources"])
    human = result.get("answer", sources) if not result["sources"] else "\n".join(
        [*([result["answer"], f"(cited by {result['cited_by']}: "
            + ", ".join(f"[{c['n']}] {c['source']}:{c['start']}-{c['end']}" for c in result["citations"]) + ")", ""]
           if "answer" in result else []), sources])
    emit(args, result, human)
    return 0


def run_graph_ask(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.validate import check_choice
    from ..retrieval.graph import GraphIndex
    from ..retrieval.graph_search import global_search, local_search
    from ..retrieval.rag import ChatModel, RagIndex

    given = [f"--{o.replace('_', '-')}" for o in PLAIN_ASK_OPTIONS if getattr(args, o) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with --mode plain",
                          f"leave {', '.join(given)} out")
    search = check_choice("--search", args.search or "global", GRAPH_SEARCHES)
    if search == "global" and args.k is not None:
        raise ConfigError("-k applies to --search local (entities matched)", "leave -k out for global search")
    if search == "global" and args.no_generate:
        raise ConfigError("global search needs the model for its map step", "leave --no-generate out or use --search local")
    graph = GraphIndex.load(args.index)  # before the model loads: an index without --graph fails at once
    budget = 2000 if args.budget is None else args.budget
    answer_tokens = 200 if args.max_new_tokens is None else args.max_new_tokens
    chat = None
    if not args.no_generate:
        status(args, f"answering with {args.model} ({search} search)")
        chat = ChatModel(args.model)
    if search == "global":
        result = global_search(graph, args.question, chat, 0 if args.level is None else args.level, budget,
                               answer_tokens=answer_tokens)
        lines = [f"[{p['community']}] score {p['score']}: {p['answer'][:160]}" for p in result["partials"]
                 if p["community"] in result["used"]]
        human = "\n".join([result["answer"], "", f"from {len(result['used'])} of {len(result['partials'])} "
                            f"community answers ({result['unscored']} unscored):", *lines])
    else:
        chunks = RagIndex(args.index).chunks
        count = chat.count_tokens if chat else (lambda text: len(text.split()))
        result = local_search(graph, chunks, args.question, chat, 3 if args.k is None else args.k, args.level, budget,
                              answer_tokens, count_tokens=count)
        human = "\n".join([result.get("answer", result.get("prompt", "")), "",
                            f"entities: {', '.join(result['matched']) or 'none matched'}",
                            f"neighbours: {', '.join(result['neighbours'][:20])}"])
    emit(args, result, human)
    return 0
