"""``lmlab vae``: train a sentence VAE (Bowman et al., 2016) with KL annealing, free bits and word dropout,
and report the NLL bound, KL and active units on validation sentences (``lmlab.train.vae``)."""

from __future__ import annotations

import argparse

from .common import add_common, add_corpus_options, check_outputs, emit, open_corpus_arg, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vae", help="train a sentence VAE (KL annealing, free bits, word dropout)",
                       description="Train a sentence VAE on one sentence per line (e.g. ptb:train) into a run "
                                   "directory (RUN/model is the model directory), then report the NLL bound per "
                                   "token, its perplexity, the KL per sentence and the active units on --valid.")
    p.add_argument("train", help="training sentences: a file (one per line), a directory or NAME:SPLIT (ptb:train)")
    p.add_argument("--valid", help="validation sentences (default: the training ones)")
    p.add_argument("--out", required=True, help="run directory (metrics, checkpoint, the model in OUT/model)")
    p.add_argument("--tokenizer", help="a tokenizer.json / model directory (default: words of the training text)")
    g = p.add_argument_group("model")
    g.add_argument("--d-embed", type=int, default=128)
    g.add_argument("--d-hidden", type=int, default=256)
    g.add_argument("--d-latent", type=int, default=16)
    g.add_argument("--dropout", type=float, default=0.2)
    g.add_argument("--latent-type", default="gaussian", choices=["gaussian", "categorical"],
                   help="categorical: --d-latent variables of --categories values each, sampled by straight-through "
                        "Gumbel-softmax at temperature --tau, uniform prior")
    g.add_argument("--categories", type=int, default=10, help="categorical: values per latent variable")
    g.add_argument("--tau", type=float, default=1.0, help="categorical: Gumbel-softmax temperature")
    g.add_argument("--no-latent", dest="latent", action="store_false",
                   help="train the same decoder as a plain LSTM LM (z = 0, no KL): the baseline of the bound")
    g = p.add_argument_group("objective")
    g.add_argument("--kl-schedule", default="none", choices=["none", "linear", "cyclical"],
                   help="KL weight: 1 throughout, 0→1 linearly (Bowman et al.), or cyclical (Fu et al.)")
    g.add_argument("--anneal-steps", type=int, default=None, help="linear: steps to reach 1 (default half the run)")
    g.add_argument("--cycles", type=int, default=None, help="cyclical: number of cycles (default 4)")
    g.add_argument("--ratio", type=float, default=None, help="cyclical: share of each cycle spent rising (default 0.5)")
    g.add_argument("--free-bits", type=float, default=0.0, help="nats of KL each latent dimension keeps for free")
    g.add_argument("--word-dropout", type=float, default=0.0, help="decoder inputs replaced by UNK at this rate")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--interpolate", nargs=2, metavar=("FIRST", "SECOND"),
                   help="after training, decode codes evenly spaced between these two sentences' codes")
    p.add_argument("--interpolation-steps", type=int, default=5, help="sentences on the path, ends included")
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..tokenizers import load
    from ..train.vae import fit_sentence_vae

    check_outputs(args, dirs=("out",))
    for name in ("steps", "batch_size", "d_embed", "d_hidden", "d_latent"):
        check_number(name, getattr(args, name), low=1, integer=True)
    check_number("--categories", args.categories, low=2, integer=True)
    check_number("--tau", args.tau, low=0.0, low_inclusive=False)
    check_number("--interpolation-steps", args.interpolation_steps, low=2, integer=True)
    if args.interpolate and not args.latent:
        raise ConfigError("--interpolate walks between two codes; --no-latent trains a model without one",
                          "leave --interpolate or --no-latent out")
    if not args.latent and (args.kl_schedule != "none" or args.free_bits or args.word_dropout):
        raise ConfigError("--no-latent trains a plain LSTM LM: there is no KL to anneal or free",
                          "leave --kl-schedule, --free-bits and --word-dropout out with --no-latent")
    for name, schedule in (("anneal_steps", "linear"), ("cycles", "cyclical"), ("ratio", "cyclical")):
        if getattr(args, name) is not None and args.kl_schedule != schedule:
            raise ConfigError(f"--{name.replace('_', '-')} applies to --kl-schedule {schedule}",
                              f"add --kl-schedule {schedule}, or leave --{name.replace('_', '-')} out")
    texts = list(open_corpus_arg(args, args.train))
    valid = list(open_corpus_arg(args, args.valid)) if args.valid else None
    tokenizer = load(args.tokenizer) if args.tokenizer else None
    status(args, f"training a sentence {'VAE' if args.latent else 'LSTM LM'} on {len(texts)} sentences into {args.out}")
    run_ = fit_sentence_vae(texts, args.out, valid=valid, tokenizer=tokenizer, d_embed=args.d_embed,
                            d_hidden=args.d_hidden, d_latent=args.d_latent, dropout=args.dropout, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr, schedule=args.kl_schedule,
                            anneal_steps=args.anneal_steps, cycles=4 if args.cycles is None else args.cycles,
                            ratio=0.5 if args.ratio is None else args.ratio,
                            free_bits=args.free_bits, word_dropout=args.word_dropout, latent=args.latent,
                            latent_type=args.latent_type, n_categories=args.categories, tau=args.tau, seed=args.seed)
    s = run_.scores
    summary = {"model_dir": str(run_.model_dir), "steps": run_.train.steps, "final_train_loss": run_.train.final_loss,
               "seconds": run_.train.seconds, "latent": args.latent, "kl_schedule": args.kl_schedule,
               "free_bits": args.free_bits, "word_dropout": args.word_dropout, **s}
    human = (f"trained {run_.train.steps} steps in {run_.train.seconds:.1f} s\n"
             f"validation: NLL bound {s['nll_bound_per_token']:.4f} nats/token (perplexity ≤ {s['perplexity_bound']:.1f}), "
             f"KL {s['kl_per_sentence']:.3f} nats/sentence, active units {s['active_units']}/{args.d_latent}\n"
             f"model: {run_.model_dir}")
    if args.interpolate:
        from ..generate.latent import interpolate

        path = interpolate(run_.model, run_.tokenizer, *args.interpolate, steps=args.interpolation_steps)
        summary["interpolation"] = path
        human += "\ninterpolation:\n" + "\n".join(f"  {i / (len(path) - 1):.2f}  {text}" for i, text in enumerate(path))
    emit(args, summary, human)
    return 0
