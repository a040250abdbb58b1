"""``lmlab scaling``: train a grid of small transformers (sizes × token budgets), fit the Chinchilla law
L(N, D) = E + A/N^α + B/D^β with held-out runs, and predict the compute-optimal N and D for a budget
(``lmlab.train.scaling``, ``lmlab.eval.scaling_law``)."""

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

FIT_FILE = "fit.json"
PLOT_FILE = "scaling_fit.png"
UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9, "t": 10**12}


def count(text: str, flag: str) -> float:
    """A positive count written as 250k, 1.5M, 2G/2B, 3T or 1e18 (``flag`` names the option in errors)."""
    from ..core.errors import ConfigError

    scale = UNITS.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ConfigError(f"{flag} {text!r} is not a positive count", "write e.g. 250k, 1.5M or 1e18")
    return value


def counts(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive counts (token budgets: 250k,500k,1M)."""
    return [round(count(item, flag)) for item in text.split(",") if item]


def sizes(text: str) -> list[tuple[int, int]]:
    """A comma-separated list of model shapes D_MODELxN_LAYERS (32x2,64x3)."""
    from ..core.errors import ConfigError

    out = []
    for item in (i for i in text.split(",") if i):
        width, _, layers = item.lower().partition("x")
        if not (width.isdigit() and layers.isdigit() and int(width) > 0 and int(layers) > 0):
            raise ConfigError(f"--sizes: {item!r} is not a model shape", "write D_MODELxN_LAYERS, e.g. 32x2,64x3")
        out.append((int(width), int(layers)))
    return out


def optional_count(text: str | None, flag: str) -> float | None:
    return None if text is None else count(text, flag)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scaling", help="scaling laws: train a grid of small models, fit L(N, D), predict optima")
    verbs = p.add_subparsers(dest="scaling_verb", metavar="ACTION", required=True)

    r = verbs.add_parser("run", help="train a grid of sizes × token budgets (finished runs are skipped)",
                         description="Train every model size with every token budget into RUNS/<name>/ (each "
                                     "run's result.json records N, D, C = 6ND and the held-out loss). A rerun "
                                     "skips finished runs and resumes an interrupted one, so the grid can grow.")
    r.add_argument("--out", required=True, help="the runs directory")
    r.add_argument("--train", default="wikitext-2:train", help="training corpus (NAME:SPLIT or a file; default "
                   "wikitext-2:train; ptb:train works too)")
    r.add_argument("--valid", default=None, help="held-out corpus (default: the valid split of --train's data set)")
    r.add_argument("--sizes", default="32x2,48x2,64x3,96x3,128x4",
                   help="model shapes D_MODELxN_LAYERS (default 32x2,48x2,64x3,96x3,128x4)")
    r.add_argument("--tokens", default="250k,500k,1M",
                   help="training token budgets (default 250k,500k,1M)")
    r.add_argument("--tokenizer", default=None, help="a new grid's tokenizer: bpe (default), byte-bpe, unigram, "
                   "wordpiece, bpe-eow (trained on --train), word, char, or a tokenizer.json; a rerun reuses RUNS's")
    r.add_argument("--vocab-size", type=int, default=None, help="vocabulary of a trained subword tokenizer (default 2048)")
    r.add_argument("--family", default="gpt2", help="transformer preset (gpt2, llama, vaswani; default gpt2)")
    r.add_argument("--context", type=int, default=64, help="training window in tokens (default 64)")
    r.add_argument("--batch-size", type=int, default=16, help="windows per step (default 16)")
    r.add_argument("--head-width", type=int, default=16, help="attention head width: n_heads = d_model / it (default 16)")
    r.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of each run's cosine (default 3e-3)")
    r.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens each run is scored on (default 65536)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    add_corpus_options(r)
    add_common(r).set_defaults(func=run_grid)

    f = verbs.add_parser("fit", help="fit L(N, D) = E + A/N^alpha + B/D^beta; report the held-out error; plot it")
    f.add_argument("runs", help="the runs directory of `lmlab scaling run`")
    f.add_argument("--holdout", type=int, default=None, help="hold out this many runs of largest compute (default 3)")
    f.add_argument("--holdout-runs", default=None, help="hold out these runs instead (comma-separated names)")
    f.add_argument("--budget", default=None, help="also give the compute-optimal N, D for this many FLOPs")
    f.add_argument("--plot", default=None, help=f"the PNG to write (default RUNS/{PLOT_FILE})")
    add_common(f).set_defaults(func=run_fit)

    pr = verbs.add_parser("predict", help="compute-optimal N and D for a budget, or the loss at N and D (from RUNS/fit.json)")
    pr.add_argument("runs", help="a runs directory fitted by `lmlab scaling fit`")
    pr.add_argument("--compute", default=None, help="a FLOP budget C (e.g. 1e18): N_opt, D_opt")
    pr.add_argument("--params", default=None, help="parameters N (with --tokens): the predicted loss")
    pr.add_argument("--tokens", default=None, help="training tokens D (with --params)")
    add_common(pr).set_defaults(func=run_predict)


def _tokenizer(args: argparse.Namespace, runs_dir, corpus):
    """(the grid's tokenizer, its label): RUNS/tokenizer.json on a rerun (a --tokenizer given then must name
    the one the grid was made with: the label is checked against grid.json), else the one --tokenizer
    names, trained on ``corpus``."""
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..core.io import read_json
    from ..tokenizers import WordLevelTokenizer, load
    from ..tokenizers.trainers import KINDS, train_tokenizer
    from ..train.scaling import GRID_FILE

    kind = args.tokenizer or "bpe"
    if args.vocab_size is not None and kind not in KINDS:
        raise ConfigError(f"--vocab-size applies to a trained subword tokenizer, not {kind!r}",
                          f"use --tokenizer {' or '.join(KINDS)}, or leave --vocab-size out")
    label = f"{kind}:{args.vocab_size or 2048}" if kind in KINDS else kind
    saved = Path(runs_dir) / "tokenizer.json"
    if saved.exists() and (Path(runs_dir) / GRID_FILE).exists():
        if args.tokenizer is None and args.vocab_size is None:  # a rerun: the grid's own
            label = read_json(Path(runs_dir) / GRID_FILE, "the grid's settings").get("tokenizer_label", label)
        return load(saved), label
    if kind in ("word", "char"):
        status(args, f"training a {kind}-level vocabulary on {args.train}")
        return WordLevelTokenizer(kind).train(corpus), label
    if kind in KINDS:
        status(args, f"training a {kind} tokenizer of {args.vocab_size or 2048} ids on {args.train}")
        return train_tokenizer(kind, corpus, args.vocab_size or 2048), label
    return load(kind), label


def run_grid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..train.scaling import RESULT_FILE, GridSettings, grid, run_grid

    check_outputs(args, dirs=("out",))
    valid = args.valid
    if valid is None:
        name, sep, _ = args.train.partition(":")
        if not sep:
            raise ConfigError("no held-out corpus", "pass --valid FILE (or train on a data set: --train NAME:train)")
        valid = f"{name}:valid"
    shapes, budgets = sizes(args.sizes), counts(args.tokens, "--tokens")
    settings = GridSettings(data=f"{args.train} / {valid}", family=args.family, context=args.context,
                            batch_size=args.batch_size, head_width=args.head_width, lr=args.lr,
                            eval_tokens=args.eval_tokens, seed=args.seed, device=args.device)
    runs = grid(shapes, budgets)
    train_corpus, valid_corpus = open_corpus_arg(args, args.train), open_corpus_arg(args, valid)
    tokenizer, settings.tokenizer_label = _tokenizer(args, args.out, train_corpus)
    finished = sum((Path(args.out) / r.name / RESULT_FILE).exists() for r in runs)
    status(args, f"scaling grid: {len(runs)} runs ({len(shapes)} sizes × {len(budgets)} token budgets), "
                 f"{finished} finished already, into {args.out}")
    results = run_grid(args.out, runs, tokenizer, train_corpus, valid_corpus, settings)
    rows = [[r["name"], f"{r['params']:,}", f"{r['tokens']:,}", f"{r['compute']:.3g}",
             "diverged" if r["loss"] is None else f"{r['loss']:.4f}", f"{r['seconds']:.0f}"] for r in results]
    human = (table(rows, ["run", "N (non-embedding)", "D (tokens)", "C = 6ND", "held-out loss", "seconds"])
             + f"\nnext: lmlab scaling fit {args.out}")
    emit(args, {"runs_dir": str(args.out), "runs": results, "skipped": finished}, human)
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..core.io import write_json
    from ..eval.scaling_law import fit_runs, plot_law
    from ..train.scaling import read_results

    check_outputs(args, files=("plot",))
    results = read_results(args.runs)
    if args.holdout is not None and args.holdout_runs is not None:
        raise ConfigError("--holdout and --holdout-runs both choose the held-out runs", "give one of them")
    holdout = [n for n in args.holdout_runs.split(",") if n] if args.holdout_runs else \
        (3 if args.holdout is None else args.holdout)
    status(args, f"fitting the law to {len(results)} runs (L-BFGS from 4,500 starting points)")
    report = fit_runs(results, holdout=holdout, budget=optional_count(args.budget, "--budget"))
    report["runs"] = sorted(r["name"] for r in results)
    plot = args.plot or str(Path(args.runs) / PLOT_FILE)
    report["plot"] = plot_law(report, plot)
    write_json(Path(args.runs) / FIT_FILE, report)
    emit(args, report, _fit_text(report))
    return 0


def _fit_text(report: dict) -> str:
    c = report["chinchilla"]
    lines = [f"L(N, D) = {report['E']:.3f} + {report['A']:.4g}/N^{report['alpha']:.3f} + "
             f"{report['B']:.4g}/D^{report['beta']:.3f}   (fitted on {report['runs_fitted']} runs; N: "
             f"{report['params_convention']})",
             f"Chinchilla (Hoffmann et al. 2022): E = {c['E']}, A = {c['A']}, B = {c['B']}, alpha = {c['alpha']}, "
             f"beta = {c['beta']}"]
    if report["heldout"]:
        lines.append(f"held-out runs ({report['runs_heldout']}): mean |error| {report['heldout_error']:.4f} nats "
                     f"({100 * report['heldout_relative_error']:.2f}%), max {report['heldout_max_error']:.4f}")
        lines += [f"  {r['name']}: loss {r['loss']:.4f}, predicted {r['predicted']:.4f}" for r in report["heldout"]]
    if "optimum" in report:
        o = report["optimum"]
        lines.append(f"compute-optimal for C = {o['compute']:.3g}: N = {o['params']:.4g}, D = {o['tokens']:.4g} "
                     f"({o['tokens_per_param']:.1f} tokens/parameter), predicted loss {o['loss']:.4f}")
    lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.errors import ConfigError, InputError
    from ..core.io import read_json
    from ..eval.scaling_law import ScalingLaw, optimum_report
    from ..train.scaling import read_results

    path = Path(args.runs) / FIT_FILE
    if not path.exists():
        raise InputError(f"{args.runs} has no fitted law ({FIT_FILE})", f"run: lmlab scaling fit {args.runs}")
    report = read_json(path, "the fitted scaling law")
    now = sorted(r["name"] for r in read_results(args.runs))
    if now != report.get("runs"):
        raise ConfigError(f"{path} was fitted on {len(report.get('runs') or [])} runs, and {args.runs} now holds "
                          f"{len(now)} finished runs", f"refit: lmlab scaling fit {args.runs}")
    law = ScalingLaw(**{k: report[k] for k in ("E", "A", "B", "alpha", "beta")})
    compute = optional_count(args.compute, "--compute")
    params, tokens = optional_count(args.params, "--params"), optional_count(args.tokens, "--tokens")
    if (args.params is None) != (args.tokens is None):
        raise ConfigError("--params and --tokens go together", "give both (the loss at N and D) or --compute alone")
    if args.compute is None and args.params is None:
        raise ConfigError("nothing to predict", "pass --compute FLOPS, or --params N --tokens D")
    if args.compute is not None and args.params is not None:
        raise ConfigError("--compute and --params/--tokens ask two questions", "give one of them")
    if compute is not None:
        result = optimum_report(law, compute)
        human = (f"compute-optimal for C = {compute:.3g}: N = {result['params']:.4g}, D = {result['tokens']:.4g} "
                 f"({result['tokens_per_param']:.1f} tokens/parameter), predicted loss {result['loss']:.4f}")
    else:
        loss = float(law.loss(params, tokens))
        result = {"params": params, "tokens": tokens, "compute": 6 * params * tokens, "loss": loss}
        human = f"predicted loss at N = {params:.4g}, D = {tokens:.4g}: {loss:.4f} nats/token"
    emit(args, {**result, "law": law.to_dict()}, human)
    return 0
