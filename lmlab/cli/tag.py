"""``lmlab tag train|eval|predict``: sequence labelling (NER, POS) with a BiLSTM or a fine-tuned
encoder, a softmax or a CRF with BIO constraints, on CoNLL column files."""

from __future__ import annotations

import argparse
import time

from .common import add_common, check_outputs, emit, input_lines, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tag", help="train, evaluate and apply sequence labellers (NER, POS)")
    verbs = p.add_subparsers(dest="tag_verb", metavar="ACTION", required=True)

    t = verbs.add_parser("train", help="train a tagger on a CoNLL file",
                         description="Train a tagger on CoNLL column data (conll2003:train or a file).")
    t.add_argument("data", help="CoNLL file or NAME:SPLIT (conll2003:train)")
    t.add_argument("--column", default="ner", help="tag column: ner, pos, chunk or a number (default ner)")
    t.add_argument("--out", required=True, help="tagger directory to write")
    t.add_argument("--kind", default="bilstm", choices=["bilstm", "encoder"],
                   help="BiLSTM over words and characters, or a pretrained encoder (--backbone)")
    t.add_argument("--backbone", default="minilm", help="encoder: minilm, a BERT directory or an lmlab model")
    t.add_argument("--no-crf", dest="crf", action="store_false", help="a per-word softmax instead of the CRF")
    t.add_argument("--constraints", default="auto", choices=["auto", "bio", "none"],
                   help="CRF transitions: BIO-constrained when the tags are BIO (auto), always, or never")
    t.add_argument("--eval", dest="eval_data", help="also evaluate on this CoNLL file / split")
    g = t.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help="passes over the data (default 8 bilstm, 3 encoder)")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs passes)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3 bilstm, 5e-5 encoder)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--dropout", type=float, default=None)
    g.add_argument("--crf-lr-scale", type=float, default=None,
                   help="the CRF learns this many times faster (default 1 bilstm, 100 encoder)")
    g.add_argument("--limit", type=int, default=None, help="train on the first N sentences only")
    g.add_argument("--run-dir", help="checkpoints here; training again with the same run dir resumes")
    g.add_argument("--device", default="auto")
    g.add_argument("--seed", type=int, default=0)
    add_common(t)
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="entity P/R/F1 (BIO tags) and token accuracy on a CoNLL file")
    e.add_argument("--model", required=True, help="tagger directory")
    e.add_argument("data", help="CoNLL file or NAME:SPLIT (conll2003:test)")
    e.add_argument("--column", default=None, help="tag column (default: the one the tagger was trained on)")
    e.add_argument("--predictions", help="write word, gold and predicted tag per line here (conlleval's input)")
    add_common(e)
    e.set_defaults(func=run_eval)

    pr = verbs.add_parser("predict", help="tag sentences (arguments, or one per line on stdin / --input)")
    pr.add_argument("--model", required=True, help="tagger directory")
    pr.add_argument("texts", nargs="*", help="sentences; words are split at whitespace")
    pr.add_argument("--input", help="a file with one sentence per line ('-' for stdin)")
    add_common(pr)
    pr.set_defaults(func=run_predict)


def _scores_text(r: dict) -> str:
    text = f"token accuracy {r['accuracy']:.4f}"
    if "f1" in r:
        text += f"\nentities: precision {r['precision']:.4f}  recall {r['recall']:.4f}  F1 {r['f1']:.4f}\n"
        rows = [[k, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
                for k, v in r["per_type"].items()]
        text += table(rows, ["type", "precision", "recall", "F1", "support"])
    return text


def run_train(args: argparse.Namespace) -> int:
    from ..data.conll import read_conll
    from ..tagging import Tagger

    check_outputs(args, dirs=("out", "run_dir"))
    sentences = read_conll(args.data, args.column)
    sentences = sentences[:args.limit] if args.limit else sentences
    tagger = Tagger(args.kind, backbone=args.backbone, crf=args.crf, constraints=args.constraints,
                    epochs=args.epochs, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                    dropout=args.dropout, crf_lr_scale=args.crf_lr_scale, column=args.column, device=args.device,
                    seed=args.seed, run_dir=args.run_dir)
    status(args, f"training a {args.kind}{' + CRF' if args.crf else ''} tagger on {len(sentences)} sentences "
                 f"from {args.data} (column {args.column})")
    t0 = time.perf_counter()
    tagger.fit(sentences)
    seconds = time.perf_counter() - t0
    tagger.save(args.out)
    result = {"out": args.out, "kind": args.kind, "crf": args.crf, "bio_constrained": tagger.bio_constrained,
              "tags": tagger.tags, "sentences": len(sentences), "steps": tagger.train_result.steps,
              "final_loss": tagger.train_result.final_loss, "train_seconds": round(seconds, 1)}
    human = f"{args.kind} tagger trained on {len(sentences)} sentences in {seconds:.1f} s → {args.out}"
    if args.eval_data:
        scores = tagger.evaluate(read_conll(args.eval_data, args.column))
        result["eval"] = {"data": args.eval_data, **scores}
        human += f"\n{args.eval_data}: " + _scores_text(scores)
    emit(args, result, human)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..core.io import atomic_write
    from ..data.conll import read_conll
    from ..tagging import Tagger

    check_outputs(args, files=("predictions",))
    tagger = Tagger.load(args.model)
    column = args.column or tagger.column
    sentences = read_conll(args.data, column)
    t0 = time.perf_counter()
    scores = tagger.evaluate(sentences)
    scores["seconds"] = round(time.perf_counter() - t0, 2)
    if args.predictions:
        predicted = tagger.predict([w for w, _ in sentences])
        with atomic_write(args.predictions) as fh:
            for (words, gold), tags in zip(sentences, predicted, strict=True):
                fh.write("".join(f"{w} {g} {p}\n" for w, g, p in zip(words, gold, tags, strict=True)) + "\n")
    emit(args, {"model": args.model, "data": args.data, "column": column, **scores},
         f"{args.data} ({scores['sentences']} sentences): " + _scores_text(scores))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..tagging import Tagger

    sentences = [line.split() for line in input_lines(args.texts, args.input)]
    if not sentences:
        raise InputError("no sentences to tag", "pass sentences as arguments or --input FILE")
    tagger = Tagger.load(args.model)
    tags = tagger.predict(sentences)
    result = {"model": args.model, "sentences": [{"words": w, "tags": t} for w, t in zip(sentences, tags, strict=True)]}
    emit(args, result, "\n".join(" ".join(f"{w}/{t}" for w, t in zip(ws, ts, strict=True))
                                 for ws, ts in zip(sentences, tags, strict=True)))
    return 0
