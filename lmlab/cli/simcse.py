"""``lmlab simcse``: contrastive sentence embeddings (Gao, Yao & Chen, 2021) — train an encoder with InfoNCE
over in-batch negatives, unsupervised (two dropout views of each text) or supervised (line-aligned
positives), and save it as an encoder directory that ``lmlab embed --model`` reads (``lmlab.train.contrastive``)."""

from __future__ import annotations

import argparse

from .common import add_common, add_corpus_options, check_outputs, emit, open_corpus_arg, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simcse", help="train sentence embeddings with SimCSE (InfoNCE, in-batch negatives)",
                       description="Train a bidirectional encoder (all-MiniLM-L6-v2 by default) with SimCSE on "
                                   "texts (a file, one per line, or NAME:SPLIT such as scifact:corpus) into a run "
                                   "directory; RUN/model is the trained encoder (lmlab embed --model RUN/model --text TEXT).")
    p.add_argument("texts", help="training texts: a file, a directory or NAME:SPLIT (scifact:corpus)")
    p.add_argument("--positives", help="supervised SimCSE: one positive per text, line-aligned (default: "
                                       "unsupervised, each text's second dropout view)")
    p.add_argument("--model", default="minilm", help="encoder: minilm, a BERT directory or an lmlab encoder")
    p.add_argument("--out", required=True, help="run directory (metrics, checkpoint, the encoder in OUT/model)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N texts only")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=3e-5)
    g.add_argument("--temperature", type=float, default=0.05)
    g.add_argument("--max-length", type=int, default=32, help="tokens per training text")
    g.add_argument("--dropout", type=float, default=0.1, help="the encoder's dropout while training (the views)")
    g.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"])
    g.add_argument("--seed", type=int, default=0)
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.validate import check_number
    from ..models.backbone import load_backbone
    from ..models.directory import save_model_dir
    from ..train.contrastive import simcse

    check_outputs(args, dirs=("out",))
    for name in ("steps", "max_length"):
        check_number(name, getattr(args, name), low=1, integer=True)
    if args.limit is not None:
        check_number("limit", args.limit, low=1, integer=True)
    texts = list(open_corpus_arg(args, args.texts))[:args.limit]
    positives = list(open_corpus_arg(args, args.positives))[:args.limit] if args.positives else None
    encoder, tokenizer = load_backbone(args.model)
    mode = "supervised" if positives is not None else "unsupervised"
    status(args, f"{mode} SimCSE on {len(texts)} texts from {args.model} into {args.out}")
    trained, result = simcse(encoder, tokenizer, texts, Path(args.out), positives=positives, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, temperature=args.temperature,
                             max_length=args.max_length, dropout=args.dropout, pooling=args.pooling, seed=args.seed)
    config, tensors = trained.to_state()
    model_dir = save_model_dir(Path(args.out) / "model", {**config, "dropout": 0.0}, tensors, tokenizer=tokenizer)
    summary = {"mode": mode, "texts": len(texts), "steps": result.steps, "final_loss": result.final_loss,
               "seconds": result.seconds, "model_dir": str(model_dir)}
    emit(args, summary, f"{mode} SimCSE: {result.steps} steps in {result.seconds:.1f} s, final loss "
                        f"{result.final_loss:.4f}\nencoder: {model_dir}   (try: lmlab embed --model {model_dir} --text TEXT)")
    return 0
