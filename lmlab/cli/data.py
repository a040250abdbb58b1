"""``lmlab data``: the named data sets and where they are; tokenising a corpus into shards; instruction
data made by a model (``self-instruct``, ``evol-instruct``) or mixed from tasks (``mix``), written as
Alpaca JSON Lines for ``lmlab finetune``."""

from __future__ import annotations

import argparse
import os

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
    register_instruction_data(verbs)


def _add_model(p: argparse.ArgumentParser, chat_default: bool) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="smollm2-135m-instruct",
                   help="a model directory or built-in name, or the model's name at --base-url")
    g.add_argument("--base-url", help="an OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1, lmlab serve)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="the endpoint's key ($OPENAI_API_KEY)")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=chat_default,
                   help="send each prompt as a user message (else continue it as raw text)")
    g.add_argument("--batch-size", type=int, default=16, help="prompts per model call (decoded together)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the generation step")


def register_instruction_data(verbs: argparse._SubParsersAction) -> None:
    si = verbs.add_parser("self-instruct", help="Self-Instruct: a model grows seed tasks into instruction data")
    si.add_argument("--seeds", default=None,
                    help="seed tasks JSONL (default: the shared instructions/self_instruct_seed_tasks.jsonl)")
    si.add_argument("--out", required=True, help="Alpaca JSONL to write (instruction, input, output)")
    si.add_argument("-n", "--num-instructions", type=int, default=200, help="new instructions to keep")
    si.add_argument("--human", type=int, default=6, help="seed tasks shown per prompt")
    si.add_argument("--machine", type=int, default=2, help="generated tasks shown per prompt")
    si.add_argument("--threshold", type=float, default=0.7, help="ROUGE-L novelty threshold (keep below)")
    si.add_argument("--max-prompts", type=int, default=None, help="give up after this many prompts (default 20·n)")
    si.add_argument("--instruction-tokens", type=int, default=128)
    si.add_argument("--instance-tokens", type=int, default=128)
    _add_model(si, chat_default=False)
    add_common(si)
    si.set_defaults(func=run_self_instruct)

    ev = verbs.add_parser("evol-instruct", help="Evol-Instruct: evolve instructions in depth and breadth")
    ev.add_argument("data", help="JSONL with an 'instruction' per row (Alpaca rows, or Self-Instruct output)")
    ev.add_argument("--out", required=True, help="Alpaca JSONL to write")
    ev.add_argument("--rounds", type=int, default=1)
    ev.add_argument("--max-rows", type=int, default=None, help="evolve only the first rows")
    ev.add_argument("--operations", default=",".join(("constraints", "deepen", "concretize", "reasoning",
                                                      "complicate_input", "breadth")),
                    help="comma-separated evolutions to draw from")
    ev.add_argument("--no-judge", action="store_true",
                    help="no LM equality judge (only an identical rewrite counts as no information gain)")
    ev.add_argument("--instruction-tokens", type=int, default=128)
    ev.add_argument("--response-tokens", type=int, default=256)
    _add_model(ev, chat_default=True)
    add_common(ev)
    ev.set_defaults(func=run_evol_instruct)

    mx = verbs.add_parser("mix", help="FLAN-style multitask mixture of templated tasks (SFT JSONL)")
    mx.add_argument("--tasks", default="sst2,agnews,arc,gsm8k,multi30k", help="comma-separated tasks to mix: built-in names, or NAME=FILE.jsonl (templates from --templates)")
    mx.add_argument("--out", required=True, help="Alpaca JSONL to write")
    mx.add_argument("--total", type=int, required=True, help="examples in the mixture")
    mx.add_argument("--cap", type=int, default=3000, help="example-proportional cap K (rate ∝ min(n, K))")
    mx.add_argument("--no-cap", action="store_true", help="no cap: rate ∝ n")
    mx.add_argument("--temperature", type=float, default=1.0, help="rate ∝ min(n, K)^(1/T)")
    mx.add_argument("--rates", help="explicit rates instead, e.g. sst2=1,gsm8k=2 (every task, each > 0)")
    mx.add_argument("--templates", help="JSON file of templates per task (replaces those tasks' built-in ones)")
    mx.add_argument("--seed", type=int, default=0)
    add_common(mx)
    mx.set_defaults(func=run_mix)


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


def _model(args: argparse.Namespace):
    from ..agents.models import load_chat_model

    status(args, f"loading {args.model}" + (f" at {args.base_url}" if args.base_url else ""))
    return load_chat_model(args.model, args.base_url, args.api_key)


def _write_rows(args: argparse.Namespace, rows: list[dict]) -> None:
    from ..eval.records import write_jsonl

    write_jsonl(args.out, rows)


def _counts_table(counts: dict) -> str:
    return table([[k, v] for k, v in counts.items()], ["count", "n"])


def run_self_instruct(args: argparse.Namespace) -> int:
    from ..core.progress import progress
    from ..core.validate import check_number
    from ..data import dataset_file
    from ..instruct import read_seed_tasks, self_instruct

    check_outputs(args, files=("out",))
    check_number("--num-instructions", args.num_instructions, low=1, integer=True)  # before the model loads
    seeds = read_seed_tasks(args.seeds or dataset_file("instructions", "seed"))
    model = _model(args)
    bar = progress(desc="instructions kept", total=args.num_instructions, unit="instr")

    def on_progress(kept: int, wanted: int) -> None:
        bar.update(kept - bar.n)

    result = self_instruct(model, seeds, args.num_instructions, batch_size=args.batch_size, seed=args.seed,
                           human=args.human, machine=args.machine, chat=args.chat, temperature=args.temperature,
                           instruction_tokens=args.instruction_tokens, instance_tokens=args.instance_tokens,
                           threshold=args.threshold, max_prompts=args.max_prompts, on_progress=on_progress)
    bar.close()
    _write_rows(args, result.rows)
    summary = {"out": args.out, "model": args.model, "seed": args.seed, **result.summary()}
    kept = summary["novelty_rouge_l_to_nearest"]["kept"]
    novelty = (f"ROUGE-L to the nearest pool instruction: mean {kept['mean']:.3f}, max {kept['max']:.3f}"
               if kept["n"] else "no instruction kept")
    emit(args, summary, f"{_counts_table(summary['counts'])}\n{novelty}\n"
                        f"wrote {len(result.rows)} rows from {result.prompts} prompts to {args.out}")
    return 0


def run_evol_instruct(args: argparse.Namespace) -> int:
    from ..core.errors import DataError
    from ..core.validate import check_number
    from ..data.corpus import read_jsonl
    from ..instruct import evol_instruct

    check_outputs(args, files=("out",))
    if args.max_rows is not None:
        check_number("max_rows", args.max_rows, low=1, integer=True)
    rows = read_jsonl(args.data, args.max_rows)
    for k, row in enumerate(rows, 1):
        if not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise DataError(f"{args.data}: row {k} has no 'instruction' text", "give every row an 'instruction'")
    instructions = [r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "") for r in rows]
    model = _model(args)
    result = evol_instruct(model, instructions, rounds=args.rounds, seed=args.seed, batch_size=args.batch_size,
                           chat=args.chat, judge_equal=not args.no_judge, temperature=args.temperature,
                           instruction_tokens=args.instruction_tokens, response_tokens=args.response_tokens,
                           operations=[o.strip() for o in args.operations.split(",") if o.strip()])
    _write_rows(args, result.rows)
    summary = {"out": args.out, "model": args.model, "seed": args.seed, "rounds": args.rounds,
               "rows": len(result.rows), "counts": dict(sorted(result.counts.items()))}
    emit(args, summary, f"{_counts_table(summary['counts'])}\nwrote {len(result.rows)} rows to {args.out}")
    return 0


def _rates(text: str | None) -> dict[str, float] | None:
    from ..core.errors import ConfigError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--rates entry {part!r} is not TASK=NUMBER", "write e.g. sst2=1,gsm8k=2") from None
        if not eq:
            raise ConfigError(f"--rates entry {part!r} is not TASK=NUMBER", "write e.g. sst2=1,gsm8k=2")
    return out


def run_mix(args: argparse.Namespace) -> int:
    from ..instruct.flan import multitask_mixture, read_templates

    check_outputs(args, files=("out",))
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    templates = read_templates(args.templates) if args.templates else None
    status(args, f"reading {', '.join(n.partition('=')[0] for n in names)}")
    rows, summary = multitask_mixture(names, args.total, cap=None if args.no_cap else args.cap,
                                      temperature=args.temperature, rates=_rates(args.rates), seed=args.seed,
                                      templates=templates)
    _write_rows(args, rows)
    summary["out"] = args.out
    human = table([[n, summary["sizes"][n], f"{summary['rates'][n]:.4f}", summary["counts"][n]] for n in summary["tasks"]],
                  ["task", "examples", "rate", "rows"])
    emit(args, summary, f"{human}\nwrote {len(rows)} rows to {args.out}")
    return 0
