"""``lmlab eval``: evaluate language models and their outputs (perplexity, BLEU, chrF, ROUGE, ...)."""

from __future__ import annotations

import argparse
import importlib

from .common import (
    add_common,
    add_corpus_options,
    add_kv_options,
    add_model_options,
    check_outputs,
    emit,
    kv_from_args,
    model_from_args,
    open_corpus_arg,
    refuse_orphans,
    table,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate models")
    verbs = p.add_subparsers(dest="eval_verb", metavar="METRIC", required=True)
    ppl = verbs.add_parser("perplexity", help="perplexity, cross-entropy and bits per byte on a corpus")
    add_model_options(ppl)
    ppl.add_argument("--data", required=True, help="evaluation corpus (a file, a directory, or NAME:SPLIT)")
    ppl.add_argument("--batch-size", type=int, default=64,
                     help="documents (or windows of a long one) scored at once; memory grows with it (default 64)")
    ppl.add_argument("--context", type=int, default=None,
                     help="window length in ids (default: the model's context; a shorter one needs less memory)")
    ppl.add_argument("--stride", type=int, default=None,
                     help="score documents longer than the context in sliding windows moved by this many ids")
    ppl.add_argument("--per-document", action="store_true", help="also report every document's figures")
    ppl.add_argument("--against", help="a second model (directory or name) to evaluate on the same data")
    add_corpus_options(ppl)
    add_common(ppl)
    ppl.set_defaults(func=run_perplexity)
    register_generation_metrics(verbs)
    register_calibration(verbs)
    register_passk(verbs)
    register_task(verbs)
    register_compare(verbs)
    register_model_based(verbs)
    register_longcontext(verbs)
    # other CLI modules add their own metrics under `lmlab eval` by defining register_eval(verbs)
    from . import verb_modules

    for name in verb_modules():
        if name != "eval":
            module = importlib.import_module(f"{__package__}.{name}")
            if hasattr(module, "register_eval"):
                module.register_eval(verbs)


def run_perplexity(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..eval import comparability_note, evaluate_lm
    from ..models import load_model

    check_number("--batch-size", args.batch_size, low=1, integer=True)
    data = open_corpus_arg(args, args.data)
    lm, tokenizer, desc = model_from_args(args)
    score = evaluate_lm(lm, tokenizer, data, batch_size=args.batch_size, stride=args.stride, context=args.context,
                        per_document=args.per_document)
    result = {"model": desc, "data": data.name, **score.as_dict()}
    for name in ("context", "stride"):
        if getattr(args, name) is not None:
            result[name] = getattr(args, name)
    if not lm.normalized:
        result["note"] = "the model's scores are not normalised probabilities: perplexity is not a true perplexity"
    human = (f"model         {desc}\n"
             f"data          {data.name} ({score.documents} documents, {score.tokens} tokens, {score.bytes} bytes)\n"
             f"perplexity    {score.perplexity:.4f} per token, {score.word_perplexity:.4f} per word\n"
             f"cross-entropy {score.cross_entropy_bits:.4f} bits/token ({score.cross_entropy_nats:.4f} nats)\n"
             f"bits/byte     {score.bits_per_byte:.4f}\n"
             f"bits/char     {score.bits_per_char:.4f}\n"
             f"<unk> rate    {score.oov_rate:.2%}")
    if args.per_document:
        worst = sorted(score.per_document, key=lambda d: -d["bits_per_byte"])[:5]
        human += "\nhardest documents (bits/byte): " + ", ".join(f"#{d['index']} {d['bits_per_byte']:.3f}" for d in worst)
    if args.against:
        other_lm, other_tok = load_model(args.against)
        other = evaluate_lm(other_lm, other_tok, data, batch_size=args.batch_size, stride=args.stride,
                            context=args.context)
        result["against"] = {"model": str(args.against), **other.as_dict()}
        note = comparability_note(tokenizer, other_tok)
        human += (f"\nagainst       {args.against}: perplexity {other.perplexity:.4f}, "
                  f"bits/byte {other.bits_per_byte:.4f}")
        if note:
            result["comparability"] = note
            human += f"\nnote          {note}"
    emit(args, result, human)
    return 0


# --- generation metrics: hypotheses and references, one segment per line ------------------------
def _add_hyp_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hyp", required=True, help="system outputs, one segment per line")
    p.add_argument("--ref", required=True, action="append",
                   help="references, one segment per line (repeat --ref for several references)")
    p.add_argument("--lowercase", action="store_true", help="compare lowercased text")


def register_generation_metrics(verbs: argparse._SubParsersAction) -> None:
    from ..eval.bleu import SMOOTH_DEFAULTS, TOKENIZERS

    bleu = verbs.add_parser("bleu", help="corpus BLEU as sacrebleu computes it")
    _add_hyp_ref(bleu)
    bleu.add_argument("--tokenize", default="13a", choices=TOKENIZERS, help="tokenisation (default 13a)")
    bleu.add_argument("--smooth-method", default="exp", choices=list(SMOOTH_DEFAULTS), help="default exp")
    bleu.add_argument("--smooth-value", type=float, default=None, help="for floor (0.1) and add-k (1)")
    bleu.add_argument("--effective-order", action="store_true", help="average only the n-gram orders present")
    add_common(bleu)
    bleu.set_defaults(func=run_bleu)
    chrf = verbs.add_parser("chrf", help="chrF / chrF++ as sacrebleu computes it")
    _add_hyp_ref(chrf)
    chrf.add_argument("--char-order", type=int, default=6, help="character n-gram order (default 6)")
    chrf.add_argument("--word-order", type=int, default=0, help="word n-gram order: 2 for chrF++ (default 0)")
    chrf.add_argument("--beta", type=float, default=2, help="recall weight (default 2)")
    chrf.add_argument("--whitespace", action="store_true", help="keep whitespace in character n-grams")
    add_common(chrf)
    chrf.set_defaults(func=run_chrf)
    rouge = verbs.add_parser("rouge", help="ROUGE-1/2/L/Lsum as rouge-score computes them")
    _add_hyp_ref(rouge)
    rouge.add_argument("--stem", action="store_true", help="Porter-stem words of more than 3 letters")
    add_common(rouge)
    rouge.set_defaults(func=run_rouge)


def _read_segments(args: argparse.Namespace) -> tuple[list[str], list[list[str]]]:
    from ..core.errors import InputError
    from ..data.corpus import text_file

    hyps = list(text_file(args.hyp, keep_blank=True))
    refs = [list(text_file(r, keep_blank=True)) for r in args.ref]
    for path, stream in zip(args.ref, refs, strict=True):
        if len(stream) != len(hyps):
            raise InputError(f"{path} has {len(stream)} lines but {args.hyp} has {len(hyps)}",
                             "give one segment per line in every file, in the same order")
    if args.lowercase:
        hyps, refs = [h.lower() for h in hyps], [[r.lower() for r in s] for s in refs]
    return hyps, refs


def run_bleu(args: argparse.Namespace) -> int:
    from ..eval.bleu import corpus_bleu

    hyps, refs = _read_segments(args)
    score = corpus_bleu(hyps, refs, tokenize=args.tokenize, smooth_method=args.smooth_method,
                        smooth_value=args.smooth_value, use_effective_order=args.effective_order,
                        lowercase=args.lowercase)
    emit(args, score.as_dict(), str(score))
    return 0


def run_chrf(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..eval.chrf import corpus_chrf

    check_number("--char-order", args.char_order, low=1, integer=True)
    check_number("--word-order", args.word_order, low=0, integer=True)
    check_number("--beta", args.beta, low=0, low_inclusive=False)
    hyps, refs = _read_segments(args)
    score = corpus_chrf(hyps, refs, char_order=args.char_order, word_order=args.word_order, beta=args.beta,
                        lowercase=args.lowercase, whitespace=args.whitespace)
    emit(args, score.as_dict(), str(score))
    return 0


def run_rouge(args: argparse.Namespace) -> int:
    from ..eval.rouge import corpus_rouge

    hyps, refs = _read_segments(args)
    result = corpus_rouge(hyps, refs, stem=args.stem)
    human = "\n".join(f"{k:10s} {result[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    emit(args, {**result, "segments": len(hyps)}, f"{human}\n{result['signature']}")
    return 0


# --- calibration -------------------------------------------------------------------------------
def register_calibration(verbs: argparse._SubParsersAction) -> None:
    cal = verbs.add_parser("calibration", help="ECE, MCE, Brier score, reliability diagram, temperature scaling")
    cal.add_argument("--predictions", required=True,
                     help='JSONL: {"logits"|"probs": [...], "label": k} or {"confidence": c, "correct": 0/1}')
    cal.add_argument("--heldout", help="held-out predictions (with logits or probs) to fit a temperature on")
    cal.add_argument("--bins", type=int, default=15, help="number of bins (default 15)")
    cal.add_argument("--strategy", default="width", choices=["width", "mass"], help="equal-width or equal-mass bins")
    cal.add_argument("--plot", help="save a reliability diagram to this PNG")
    add_common(cal)
    cal.set_defaults(func=run_calibration)


def run_calibration(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..eval.calibration import (
        calibration_summary,
        confidences_from_probs,
        expected_calibration_error,
        fit_temperature,
        maximum_calibration_error,
        read_predictions,
        reliability_diagram,
        softmax,
    )

    check_number("--bins", args.bins, low=1, integer=True)
    check_outputs(args, files=("plot",))
    data = read_predictions(args.predictions)
    conf, hit = data["confidence"], data["correct"]

    def metrics(conf, hit, logits=None, temperature=1.0) -> dict:
        if logits is None:  # confidences and correctness only: no Brier score or NLL
            return {"ece": expected_calibration_error(conf, hit, args.bins, args.strategy),
                    "mce": maximum_calibration_error(conf, hit, args.bins, args.strategy), "accuracy": float(hit.mean())}
        return {**calibration_summary(logits, data["labels"], temperature, args.bins, args.strategy),
                "accuracy": float(hit.mean())}

    result = {"predictions": args.predictions, "n": int(conf.size), "bins": args.bins, "strategy": args.strategy,
              **metrics(conf, hit, data.get("logits"))}
    if args.heldout:
        if "logits" not in data:
            raise ConfigError("temperature scaling needs logits or probabilities in --predictions",
                              "write 'logits' (or 'probs') and 'label' per record")
        held = read_predictions(args.heldout)
        if "logits" not in held:
            raise ConfigError("--heldout needs logits or probabilities per record")
        t = fit_temperature(held["logits"], held["labels"])
        probs = softmax(data["logits"], t)
        conf, hit = confidences_from_probs(probs, data["labels"])
        result["temperature"] = t
        result["scaled"] = metrics(conf, hit, data["logits"], t)
    if args.plot:
        result["plot"] = reliability_diagram(conf, hit, args.plot, n_bins=args.bins, strategy=args.strategy,
                                             title="after temperature scaling" if args.heldout else "Reliability diagram")
    lines = [f"predictions  {result['n']} ({args.strategy} bins: {args.bins})",
             f"accuracy     {result['accuracy']:.4f}", f"ECE          {result['ece']:.4f}", f"MCE          {result['mce']:.4f}"]
    if "brier" in result:
        lines += [f"Brier        {result['brier']:.4f}", f"NLL          {result['nll']:.4f}"]
    if "scaled" in result:
        s = result["scaled"]
        lines.append(f"temperature  {result['temperature']:.4f} → ECE {s['ece']:.4f}, NLL {s['nll']:.4f}")
    if args.plot:
        lines.append(f"diagram      {args.plot}")
    emit(args, result, "\n".join(lines))
    return 0


# --- pass@k ---------------------------------------------------------------------------------------
def register_passk(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("passk", help="unbiased pass@k by running generated Python in a sandbox")
    p.add_argument("--samples", required=True, help='JSONL of {"task_id": ..., "completion": ...}')
    p.add_argument("--problems", required=True,
                   help='JSONL of HumanEval-format problems {"task_id", "prompt", "test", "entry_point"}')
    p.add_argument("--k", default="1,10,100", help="comma-separated k values (default 1,10,100)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per sample (default 5)")
    p.add_argument("--memory-mb", type=int, default=512, help="address-space limit per sample (default 512)")
    add_common(p)
    p.set_defaults(func=run_passk)


def number_list(option: str, text: str, convert: type = float) -> list:
    """Comma-separated numbers of one type (``convert``: int or float); none at all is an error."""
    from ..core.errors import ConfigError

    what = "integers" if convert is int else "numbers"
    try:
        values = [convert(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated {what}, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} needs {what}, got {text!r}")
    return values


def int_list(option: str, text: str) -> list[int]:
    from ..core.errors import ConfigError

    values = number_list(option, text, int)
    if min(values) < 1:
        raise ConfigError(f"{option} needs positive integers, got {text!r}")
    return values


def run_passk(args: argparse.Namespace) -> int:
    from ..core.errors import DataError
    from ..eval.passk import evaluate_samples
    from ..eval.records import read_jsonl

    ks = int_list("--k", args.k)
    problems = {}
    for record in read_jsonl(args.problems):
        if "task_id" not in record or "test" not in record:
            raise DataError(f"{args.problems}: a problem lacks 'task_id' or 'test'")
        problems[record["task_id"]] = record
    result = evaluate_samples(read_jsonl(args.samples), problems, ks, timeout=args.timeout, memory_mb=args.memory_mb)
    result["settings"] = {"timeout": args.timeout, "memory_mb": args.memory_mb, "k": ks}
    lines = [f"{k:8s} {v:.4f}" for k, v in result.items() if k.startswith("pass@")]
    lines.append(f"problems {result['problems']}, samples {result['samples']}, outcomes {result['statuses']}")
    emit(args, result, "\n".join(lines))
    return 0


# --- benchmark tasks ----------------------------------------------------------------------------------
TASK_SPEC_HELP = """\
a task spec is a JSON file (paths inside it are relative to it), e.g.
  {"name": "capitals", "type": "multiple_choice", "data": "capitals.jsonl",
   "prompt": "Q: What is the capital of {country}?\\nA:", "choices": "options", "gold": "answer",
   "fewshot_data": "capitals_train.jsonl", "num_fewshot": 3}
data: JSON Lines, one record a line; prompt: a template of the record's fields; choices: the field
holding the list of choices; gold: the field holding the right choice's index or text (for "generate",
the answer). Other keys: target_delimiter (" "), fewshot_delimiter ("\\n\\n"); type "generate":
until, max_new_tokens, answer_regex, flexible_regex; type "last_word": data is a corpus, min_words.
The start rule in effect is printed with the results (docs/evaluation.md has the details)."""


def register_task(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("task", help="benchmark tasks: ARC, GSM8K, SST-2, LAMBADA-style, or a task spec",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=TASK_SPEC_HELP)
    add_model_options(p)
    p.add_argument("task", nargs="?", default=None, help="the task (or tasks, comma-separated); same as --tasks")
    p.add_argument("--tasks", default=None,
                   help="comma-separated: arc_easy, arc_challenge, gsm8k, sst2, lambada, or task spec .json files")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples per prompt (task default)")
    p.add_argument("--limit", type=int, default=None, help="only the first N items of each task")
    p.add_argument("--corpus", help="corpus for the lambada task (a file or NAME:SPLIT)")
    p.add_argument("--min-words", type=int, default=None, help="lambada: shortest passage in words (default 10)")
    p.add_argument("--batch-size", type=int, default=16, help="log-likelihood requests per batch")
    p.add_argument("--start", choices=["always", "empty"], default="empty",
                   help="begin only an empty context with BOS (empty, the default: lm-evaluation-harness's rule, "
                        "so the numbers compare with lm-eval's) or every context (always: lmlab's protocol)")
    p.add_argument("--cache", help="JSON file caching log-likelihoods between runs (per model)")
    p.add_argument("--seed", type=int, default=1234, help="few-shot sampling seed (default 1234)")
    p.add_argument("--output", help="also write the full results (with per-item records) to this JSON file")
    p.add_argument("--predictions", help="write multiple-choice items as JSONL {task, logits, label} "
                                         "(input for 'lmlab eval calibration')")
    g = p.add_argument_group("prompting strategy (lmlab.agents.strategies)")
    g.add_argument("--strategy", choices=["direct", "cot", "zero-shot-cot", "least-to-most", "self-consistency", "pal"],
                   default=None, help="answer the items this way (default: the task's own prompt)")
    g.add_argument("--fewshot-selection", choices=["fixed", "random", "bm25", "dense"], default=None,
                   help="how a strategy picks its few-shot examples (default fixed: the pool's first)")
    g.add_argument("--samples", type=int, default=None, help="self-consistency: reasoning paths per item (default 5)")
    g.add_argument("--temperature", type=float, default=None, help="self-consistency: sampling temperature (0.7)")
    g.add_argument("--max-new-tokens", type=int, default=None, help="a strategy's tokens per reasoning (256)")
    add_kv_options(p)
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run_task)


def run_task(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.io import write_json
    from ..core.validate import check_number
    from ..eval.harness import aggregate, evaluate_task
    from ..eval.requests import RequestRunner
    from ..eval.tasks import load_task

    check_number("--batch-size", args.batch_size, low=1, integer=True)
    if args.limit is not None:
        check_number("--limit", args.limit, low=1, integer=True)
    if args.num_fewshot is not None:
        check_number("--num-fewshot", args.num_fewshot, low=0, integer=True)
    if (args.task is None) == (args.tasks is None):
        raise ConfigError("name the tasks once: as the argument or with --tasks", "e.g. lmlab eval task gsm8k ...")
    names = [t.strip() for t in (args.task or args.tasks).split(",") if t.strip()]
    check_outputs(args, files=("cache", "output", "predictions"))
    if "lambada" not in names and (args.corpus is not None or args.min_words is not None):
        raise ConfigError("--corpus and --min-words apply to the lambada task", "leave them out for these tasks")
    tasks = [load_task(n, num_fewshot=args.num_fewshot, corpus=args.corpus, min_words=args.min_words) for n in names]
    refuse_orphans(args, {"strategy": ("fewshot_selection", "samples", "temperature", "max_new_tokens")})
    sampling = [f for f, v in (("--samples", args.samples), ("--temperature", args.temperature)) if v is not None]
    if sampling and args.strategy != "self-consistency":
        raise ConfigError(f"{', '.join(sampling)} only apply to --strategy self-consistency",
                          f"leave {', '.join(sampling)} out")
    strategy = None
    if args.strategy is not None:
        from ..agents.strategies import Strategy

        given = {"selection": args.fewshot_selection, "samples": args.samples, "temperature": args.temperature,
                 "max_tokens": args.max_new_tokens}
        strategy = Strategy(args.strategy, seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    kv_cache = kv_from_args(args)  # bad cache flags fail before the model loads
    lm, tokenizer, desc = model_from_args(args)
    runner = RequestRunner(lm, tokenizer, batch_size=args.batch_size, cache_path=args.cache, model_id=desc,
                           start_always=args.start == "always", kv_cache=kv_cache)
    results = [evaluate_task(t, runner, limit=args.limit, seed=args.seed, strategy=strategy) for t in tasks]
    summary = {"model": desc, "start": args.start, "strategy": args.strategy,
               "results": {r["task"]: {"n": r["n"], **r["metrics"]} for r in results},
               "aggregate": aggregate(results), "requests": dict(runner.calls),
               "config": {r["task"]: r["config"] for r in results}}
    if args.output:
        write_json(args.output, {**summary, "items": {r["task"]: r["items"] for r in results}})
    if args.predictions:
        from ..eval.records import write_jsonl

        write_jsonl(args.predictions, [{"task": r["task"], "logits": item["logits"], "label": item["label"]}
                                       for r in results for item in r["items"] if "logits" in item])
    rows = []
    for r in results:
        for name, value in r["metrics"].items():
            if not name.endswith("_stderr"):
                err = r["metrics"].get(f"{name}_stderr")
                rows.append([r["task"], r["n"], name, f"{value:.4f}", "" if err is None else f"± {err:.4f}"])
    rule = ("BOS only before an empty context (lm-eval's rule)" if args.start == "empty"
            else "BOS before every context (lmlab's protocol)")
    human = (table(rows, ["task", "n", "metric", "value", "stderr"])
             + f"\nmodel {desc}; start: {args.start} — {rule}; requests {runner.calls}")
    if args.strategy:
        human += f"; strategy {args.strategy}"
    emit(args, summary, human)
    return 0


# --- pairwise comparison --------------------------------------------------------------------------------
def register_compare(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("compare", help="Bradley-Terry / Elo ranking from pairwise judgements, position bias")
    p.add_argument("--judgements", help='JSONL of {"a": name, "b": name, "winner": "a"|"b"|"tie"} (a shown first)')
    p.add_argument("--answers", help='JSONL of {"prompt": ..., "answers": {model: text}} to judge with --model')
    p.add_argument("--no-swap", action="store_true", help="judge each pair in one order only")
    p.add_argument("--prior", type=float, default=0.5, help="Bradley-Terry pseudo-wins each way per pair (default 0.5)")
    p.add_argument("--elo-k", type=float, default=32.0, help="Elo K factor (default 32)")
    p.add_argument("--save-judgements", help="write the judge's verdicts to this JSONL")
    add_model_options(p, required=False)
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..eval.pairwise import bradley_terry, elo, judge_all_pairs, position_bias, win_counts
    from ..eval.records import read_jsonl, write_jsonl
    from ..eval.requests import RequestRunner

    if bool(args.judgements) == bool(args.answers):
        raise ConfigError("pass exactly one of --judgements FILE or --answers FILE (with --model as the judge)")
    check_outputs(args, files=("save_judgements",))
    judge_options = ("model", "tokenizer", "adapter", "save_judgements", "train", "smoothing", "k", "min_count", "save")
    if args.judgements and any(getattr(args, name) is not None for name in judge_options):
        raise ConfigError("the judge's options (--model, --tokenizer, --save-judgements, …) apply to --answers",
                          "leave them out with --judgements")
    result: dict = {}
    if args.answers:
        if not args.model:
            raise ConfigError("--answers needs a judge model", "pass --model (a model directory or name)")
        lm, tokenizer, desc = model_from_args(args)
        judgements = judge_all_pairs(RequestRunner(lm, tokenizer, model_id=desc), read_jsonl(args.answers),
                                     swap=not args.no_swap)
        result["judge"] = desc
        if args.save_judgements:
            write_jsonl(args.save_judgements, judgements)
    else:
        judgements = read_jsonl(args.judgements)
    players, wins = win_counts(judgements)
    bt = bradley_terry(judgements, prior=args.prior)
    online = elo(judgements, k=args.elo_k)
    bias = position_bias(judgements)
    ranking = sorted(players, key=lambda p: -bt[p])
    result.update({"judgements": len(judgements), "ranking": ranking, "bradley_terry": bt, "elo": online,
                   "wins": {f"{i} > {j}": w for (i, j), w in sorted(wins.items())}, "position_bias": bias,
                   "settings": {"prior": args.prior, "elo_k": args.elo_k}})
    rows = [[p, f"{bt[p]:.1f}", f"{online[p]:.1f}"] for p in ranking]
    human = (table(rows, ["model", "Bradley-Terry", "Elo"])
             + f"\nfirst position wins {bias['first_position_win_rate']:.2%} of {bias['decisive']} decisive judgements;"
             + f" swapped pairs agree {bias['swap_consistency']:.2%} ({bias['swapped_pairs']} pairs)")
    emit(args, result, human)
    return 0


# --- model-based metrics -----------------------------------------------------------------------------
def register_model_based(verbs: argparse._SubParsersAction) -> None:
    from ..eval.encoders import ENCODERS

    names = ", ".join(ENCODERS)
    bs = verbs.add_parser("bertscore", help="BERTScore precision/recall/F1 with a text encoder")
    bs.add_argument("--hyp", required=True, help="candidates, one per line")
    bs.add_argument("--ref", required=True, action="append", help="references, one per line")
    bs.add_argument("--encoder", default="hash", help=f"text encoder ({names}; default hash)")
    bs.add_argument("--idf", action="store_true", help="weight tokens by inverse document frequency")
    bs.add_argument("--lowercase", action="store_true", help=argparse.SUPPRESS)
    add_common(bs)
    bs.set_defaults(func=run_bertscore)
    mv = verbs.add_parser("mauve", help="MAUVE between human and generated texts with a text encoder")
    mv.add_argument("--human", required=True, help="human texts, one per line")
    mv.add_argument("--generated", required=True, help="generated texts, one per line")
    mv.add_argument("--encoder", default="hash", help=f"text encoder ({names}; default hash)")
    mv.add_argument("--clusters", type=int, default=None, help="k-means clusters (default: texts / 10)")
    mv.add_argument("--scaling", type=float, default=5.0, help="divergence scaling constant c (default 5)")
    mv.add_argument("--seed", type=int, default=25, help="k-means seed")
    add_common(mv)
    mv.set_defaults(func=run_mauve)


def run_bertscore(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..eval.bertscore import bert_score, signature
    from ..eval.encoders import ENCODERS

    if len(args.ref) != 1:
        raise ConfigError("bertscore takes one --ref file", "score against each reference file separately")
    encoder = ENCODERS.get(args.encoder)()
    hyps, refs = _read_segments(args)
    result = bert_score(hyps, refs[0], encoder.tokens, idf=args.idf)
    per_pair = result.pop("per_pair")
    result.update(encoder=args.encoder, segments=len(per_pair),
                  signature=signature(args.encoder, args.idf))
    human = (f"BERTScore P {result['precision']:.4f}  R {result['recall']:.4f}  F1 {result['f1']:.4f}"
             f"\n{result['signature']}")
    emit(args, result, human)
    return 0


def run_mauve(args: argparse.Namespace) -> int:
    from ..data.corpus import text_file
    from ..eval.encoders import ENCODERS
    from ..eval.mauve import mauve

    encoder = ENCODERS.get(args.encoder)()
    human_texts, generated = list(text_file(args.human)), list(text_file(args.generated))
    result = mauve(human_texts, generated, encoder.sentences, clusters=args.clusters, scaling=args.scaling,
                   seed=args.seed)
    result.update(encoder=args.encoder, human=len(human_texts), generated=len(generated))
    emit(args, result, f"MAUVE {result['mauve']:.4f} ({result['clusters']} clusters, c = {args.scaling:g}, "
                       f"encoder {args.encoder})")
    return 0


# --- long context: needle in a haystack, RULER-style tasks, perplexity of a long stream ---------------
def register_longcontext(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("longcontext", help="needle in a haystack, RULER-style tasks or a long stream's perplexity, "
                                             "under a KV-cache policy and budget")
    add_model_options(p)
    p.add_argument("--task", required=True, choices=["needle", "ruler", "stream"])
    p.add_argument("--lengths", default="1024,2048,4096", help="needle/ruler: context lengths in tokens")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle: where the needle sits, shares of the filler")
    p.add_argument("--trials", type=int, default=2, help="needle: needles per cell (default 2)")
    p.add_argument("--samples", type=int, default=4, help="ruler: samples per task and length (default 4)")
    p.add_argument("--ruler-tasks", default="multikey,variables,common_words", help="ruler: which tasks")
    p.add_argument("--haystack", default="embedded",
                   help="needle/ruler: filler corpus (a file or NAME:SPLIT; default: the embedded corpus)")
    p.add_argument("--data", default="wikitext-2:test", help="stream: the text, concatenated (default wikitext-2:test)")
    p.add_argument("--tokens", type=int, default=32768, help="stream: tokens to feed (default 32768)")
    p.add_argument("--chunk", type=int, default=64, help="stream: tokens per forward pass (default 64)")
    p.add_argument("--segment", type=int, default=2048, help="stream: tokens per reported perplexity (default 2048)")
    p.add_argument("--plot", help="needle: save the accuracy grid as a PNG heat map here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rope-scaling", type=float, default=None, metavar="F",
                   help="extend a RoPE model's context F (> 1) times before evaluating (see --rope-scaling-type)")
    p.add_argument("--rope-scaling-type", default="yarn", choices=["linear", "ntk", "yarn"],
                   help="how --rope-scaling extends: position interpolation, NTK-aware or YaRN (default)")
    add_kv_options(p)
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run_longcontext)


def run_longcontext(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..eval.longcontext import heat_map, needle_grid, ruler_suite, stream_perplexity

    kv_cache = kv_from_args(args)  # bad flags fail before the model loads
    if args.plot and args.task != "needle":
        raise ConfigError("--plot draws the needle grid", "use it with --task needle")
    lm, tokenizer, desc = model_from_args(args)
    if hasattr(lm, "eval"):
        lm.eval()
    if args.rope_scaling is not None:
        if not hasattr(lm, "extend_context"):
            raise ConfigError("--rope-scaling extends a transformer with RoPE positions", "leave it out for this model")
        lm.extend_context(args.rope_scaling, args.rope_scaling_type)
        desc += f" ({args.rope_scaling_type} ×{args.rope_scaling:g})"
    policy = "full cache" if kv_cache is None else ", ".join(f"{k} {v}" for k, v in kv_cache.to_dict().items())
    if args.task == "stream":
        from ..core.validate import check_number

        check_number("--tokens", args.tokens, low=2, integer=True)
        ids: list[int] = []
        for text in open_corpus_arg(args, args.data):
            ids += tokenizer.encode(text)
            if len(ids) >= args.tokens:
                break
        result = stream_perplexity(lm, ids[:args.tokens], kv_cache=kv_cache, chunk=args.chunk, segment=args.segment)
        result = {"model": desc, "data": args.data, **result}
        stopped = f" (stopped at the context, {result['stopped_at']} tokens)" if result["stopped_at"] else ""
        human = (f"{desc}, {policy}: perplexity {result['perplexity']:.3f} over {result['scored']} tokens{stopped}\n"
                 + table([[f"{s['start']}-{s['end']}", f"{s['perplexity']:.3f}"] for s in result["segments"]],
                         ["tokens", "perplexity"]))
        emit(args, result, human)
        return 0
    lengths = int_list("--lengths", args.lengths)
    haystack = [t for t in open_corpus_arg(args, args.haystack)]
    if args.task == "needle":
        result = needle_grid(lm, tokenizer, haystack, lengths=lengths, depths=number_list("--depths", args.depths),
                             trials=args.trials, kv_cache=kv_cache, seed=args.seed)
        if args.plot:
            result["plot"] = heat_map(result, args.plot)
        rows = [[n, *(f"{a:.2f}" for a in row)] for n, row in zip(result["lengths"], result["grid"], strict=True)]
        human = (f"{desc}, {policy}: needle accuracy {result['accuracy']:.3f}\n"
                 + table(rows, ["length", *(f"{d:.0%}" for d in result["depths"])]))
    else:
        tasks = [t.strip() for t in args.ruler_tasks.split(",") if t.strip()]
        result = ruler_suite(lm, tokenizer, haystack, lengths=lengths, tasks=tasks, samples=args.samples,
                             kv_cache=kv_cache, seed=args.seed)
        human = (f"{desc}, {policy}: RULER score {result['score']:.3f}\n"
                 + table([[t, f"{s:.3f}"] for t, s in result["tasks"].items()], ["task", "recall"]))
    emit(args, {"model": desc, **result}, human)
    return 0
