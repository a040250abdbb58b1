"""``lmlab detect``: score documents for machine authorship (perplexity, burstiness, likelihood ratios) and,
with ``--eval``, measure each detector's AUROC on human/machine-labelled documents."""

from __future__ import annotations

import argparse

from .common import add_common, check_outputs, emit, helper_model, model_from_args, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="machine-text detection: per-document scores, or AUROC with --eval")
    p.add_argument("file", help="documents: one per line, or a .jsonl of {'text', 'label': human|machine}")
    p.add_argument("--model", required=True, help="the scoring model (directory or built-in name)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json or model directory (default: the model's own)")
    p.add_argument("--reference-model", default=None,
                   help="a second model sharing the tokenizer: adds the likelihood ratio and Binoculars scores")
    p.add_argument("--min-tokens", type=int, default=8, help="refuse documents shorter than this (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="documents scored at once (default 16)")
    p.add_argument("--eval", action="store_true", help="report each detector's AUROC (the file must carry labels)")
    p.add_argument("--plot", default=None, help="with --eval: save the ROC curves as this PNG")
    add_common(p)
    p.set_defaults(func=run, train=None, smoothing=None, k=None, min_count=None, save=None, adapter=None)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..eval.detect import (
        DETECTORS,
        detection_auroc,
        detector_scores,
        read_documents,
        score_documents,
    )
    from ..eval.roc import plot_roc

    check_number("--min-tokens", args.min_tokens, low=2, integer=True)
    check_number("--batch-size", args.batch_size, low=1, integer=True)
    if args.plot and not args.eval:
        raise ConfigError("--plot draws the ROC curves of --eval", "add --eval (and labels in the file)")
    check_outputs(args, files=("plot",))
    texts, labels = read_documents(args.file)
    if args.eval and labels is None:
        raise ConfigError(f"--eval needs a label on every document of {args.file}",
                          'use a .jsonl file of {"text": ..., "label": "human" or "machine"}')
    lm, tokenizer, desc = model_from_args(args)
    reference = helper_model("reference", args.reference_model, tokenizer) if args.reference_model else None
    status(args, f"scoring {len(texts)} documents with {desc}")
    docs = score_documents(lm, tokenizer, texts, reference=reference, min_tokens=args.min_tokens,
                           batch_size=args.batch_size)
    result = {"model": desc, "reference_model": args.reference_model, "documents": docs}
    names = [n for n in DETECTORS if any(d.get(n) is not None for d in docs)]
    rows = [[d["index"], d["tokens"], *(("-" if d.get(n) is None else f"{d[n]:.4f}") for n in names)] for d in docs]
    human = table(rows, ["doc", "tokens", *names])
    if args.eval:
        result["auroc"] = detection_auroc(docs, labels)
        human += "\n\n" + table([[n, "-" if v["auroc"] is None else f"{v['auroc']:.4f}", v["documents"]] for n, v in result["auroc"].items()],
                                ["detector", "AUROC", "documents"])
        if args.plot:
            curves = {n: c for n, c in detector_scores(docs, labels).items() if result["auroc"][n]["auroc"] is not None}
            result["plot"] = plot_roc(curves, args.plot,
                                      title=f"machine-text detection ({desc})")
    emit(args, result, human)
    return 0
