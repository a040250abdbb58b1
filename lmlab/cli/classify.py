"""``lmlab classify train|eval|predict``: text classifiers from naive Bayes to fine-tuned transformers."""

from __future__ import annotations

import argparse
import time

from .common import add_common, emit, input_lines, status, table

KINDS = ["logistic", "naive-bayes", "cbow", "fasttext", "finetune"]
DEFAULT_LR = {"cbow": 1e-2, "fasttext": 0.1, "finetune": 5e-5}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="train, evaluate and apply text classifiers")
    verbs = p.add_subparsers(dest="classify_verb", metavar="ACTION", required=True)

    t = verbs.add_parser("train", help="train a classifier on labelled texts")
    t.add_argument("--data", required=True, help="NAME:SPLIT (sst2:train, agnews:train) or a text<TAB>label file")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--kind", "--model", dest="kind", default="logistic", choices=KINDS)
    t.add_argument("--eval", dest="eval_data", help="also report metrics on this labelled set")
    t.add_argument("--class-weight", default="none", choices=["none", "balanced"])
    g = t.add_argument_group("logistic / naive Bayes")
    g.add_argument("--weighting", default="tfidf", choices=["tfidf", "count", "binary"], help="logistic features")
    g.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (logistic)")
    g.add_argument("--alpha", type=float, default=1.0, help="additive smoothing (naive Bayes)")
    g = t.add_argument_group("cbow / fasttext / finetune")
    g.add_argument("--dim", type=int, default=None, help="embedding size (default: 100 cbow, 10 fasttext)")
    g.add_argument("--epochs", type=int, default=None, help="passes over the data (default: 5, finetune 1)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-2 cbow, 0.1 fasttext, "
                   "5e-5 finetune)")
    g.add_argument("--sampler", default="shuffle", choices=["shuffle", "balanced"],
                   help="cbow / finetune: shuffled batches or class-balanced draws")
    g.add_argument("--vectors", help="cbow: initialise embeddings from these word vectors")
    g.add_argument("--word-ngrams", type=int, default=2, help="fasttext: longest hashed word n-gram")
    g.add_argument("--buckets", type=int, default=2_000_000, help="fasttext: hash buckets")
    g.add_argument("--seed", type=int, default=0)
    g = t.add_argument_group("finetune (a transformer + classification head on the trainer)")
    g.add_argument("--backbone", default="minilm",
                   help="minilm, smollm2-135m-instruct, or a model directory (lmlab or Hugging Face BERT)")
    g.add_argument("--pooling", default="auto", choices=["auto", "mean", "last"],
                   help="auto: mean for encoders, last token for causal decoders")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--max-length", type=int, default=64, help="tokens kept per text")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs passes)")
    g.add_argument("--warmup", type=float, default=0.06, help="warm-up share of the steps")
    g.add_argument("--run-dir", help="checkpoints here; training again with the same run dir resumes")
    g.add_argument("--device", default="auto")
    add_common(t)
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="accuracy, macro-F1 and confusion matrix on labelled texts")
    e.add_argument("--model", required=True, help="classifier directory")
    e.add_argument("--data", required=True, help="NAME:SPLIT or a text<TAB>label file")
    e.add_argument("--calibration", action="store_true", help="also ECE, MCE, Brier score and NLL")
    e.add_argument("--held-out", help="labelled set to fit a temperature on (with --calibration)")
    e.add_argument("--reliability", metavar="PNG", help="save a reliability diagram (with --calibration)")
    e.add_argument("--bins", type=int, default=15, help="confidence bins for ECE")
    add_common(e)
    e.set_defaults(func=run_eval)

    pr = verbs.add_parser("predict", help="label texts (arguments, or one per line on stdin / --input)")
    pr.add_argument("--model", required=True, help="classifier directory")
    pr.add_argument("texts", nargs="*")
    pr.add_argument("--input", help="a file with one text per line ('-' for stdin)")
    add_common(pr)
    pr.set_defaults(func=run_predict)


def build(args: argparse.Namespace):
    from ..classify import (
        CBOWClassifier,
        FastTextClassifier,
        FineTunedClassifier,
        LogisticRegression,
        NaiveBayes,
    )

    lr = args.lr or DEFAULT_LR.get(args.kind)
    if args.kind == "finetune":
        return FineTunedClassifier(args.backbone, pooling=args.pooling, epochs=args.epochs or 1, steps=args.steps,
                                   lr=lr, batch_size=args.batch_size, max_length=args.max_length,
                                   warmup=args.warmup, class_weight=args.class_weight, sampler=args.sampler,
                                   run_dir=args.run_dir, device=args.device, seed=args.seed)
    epochs = args.epochs or 5
    if args.kind == "logistic":
        return LogisticRegression(C=args.C, weighting=args.weighting, class_weight=args.class_weight)
    if args.kind == "naive-bayes":
        return NaiveBayes(alpha=args.alpha, prior="uniform" if args.class_weight == "balanced" else "empirical")
    if args.kind == "cbow":
        vectors = None
        if args.vectors:
            from ..embeddings.store import load_vectors

            vectors = load_vectors(args.vectors)
        dim = args.dim or (vectors.dim if vectors is not None else 100)
        return CBOWClassifier(dim=dim, epochs=epochs, lr=lr, class_weight=args.class_weight, vectors=vectors,
                              sampler=args.sampler, seed=args.seed)
    return FastTextClassifier(dim=args.dim or 10, epochs=epochs, lr=lr,
                              word_ngrams=args.word_ngrams, buckets=args.buckets,
                              class_weight=args.class_weight, seed=args.seed)


def _report_text(rep: dict) -> str:
    rows = [[lab] + row for lab, row in zip(rep["labels"], rep["confusion_matrix"], strict=True)]
    return (f"accuracy  {rep['accuracy']:.4f}\nmacro-F1  {rep['macro_f1']:.4f}\n"
            f"confusion (rows: true, columns: predicted)\n" + table(rows, ["true \\ predicted"] + rep["labels"]))


def run_train(args: argparse.Namespace) -> int:
    from ..classify import load_labeled, report, save_classifier

    texts, labels = load_labeled(args.data)
    model = build(args)
    status(args, f"training {args.kind} on {len(texts)} texts from {args.data}")
    t0 = time.perf_counter()
    model.fit(texts, labels)
    seconds = time.perf_counter() - t0
    save_classifier(args.out, model)
    result = {"out": args.out, "kind": args.kind, "train_items": len(texts), "classes": model.classes,
              "train_seconds": round(seconds, 3)}
    human = f"{args.kind} trained on {len(texts)} texts in {seconds:.1f} s → {args.out}"
    if args.eval_data:
        et, el = load_labeled(args.eval_data)
        rep = report(el, model.predict(et))
        result["eval"] = {"data": args.eval_data, **rep}
        human += f"\n{args.eval_data}:\n" + _report_text(rep)
    emit(args, result, human)
    return 0


def _metrics_line(m: dict) -> str:
    return "  ".join(f"{k} {m[k]:.4f}" for k in ("ece", "mce", "brier", "nll"))


def _calibration_text(cal: dict) -> str:
    text = f"calibration ({cal['bins']} bins)  {_metrics_line(cal)}"
    if "scaled" in cal:
        text += f"\ntemperature {cal['temperature']:.3f}  →  {_metrics_line(cal['scaled'])}"
    if "reliability_png" in cal:
        text += f"\nreliability diagram → {cal['reliability_png']}"
    return text


def run_eval(args: argparse.Namespace) -> int:
    from ..classify import load_classifier, load_labeled, report
    from ..core.errors import ConfigError

    if (args.held_out or args.reliability) and not args.calibration:
        raise ConfigError("--held-out and --reliability belong to --calibration", "add --calibration")
    model = load_classifier(args.model)
    texts, labels = load_labeled(args.data)
    rep = report(labels, model.predict(texts))
    result, human = {"model": args.model, "data": args.data, **rep}, _report_text(rep)
    if args.calibration:
        from ..classify.calibrate import calibration_report

        held = load_labeled(args.held_out) if args.held_out else None
        cal = calibration_report(model, texts, labels, held_out=held, n_bins=args.bins,
                                 reliability_png=args.reliability)
        result["calibration"] = cal
        human += "\n" + _calibration_text(cal)
    emit(args, result, human)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..classify import load_classifier
    from ..core.errors import ConfigError

    texts = input_lines(args.texts, args.input)
    if not texts:
        raise ConfigError("no texts to classify", "pass texts as arguments or --input FILE")
    model = load_classifier(args.model)
    proba = model.predict_proba(texts)
    out = [{"text": t, "label": model.classes[int(p.argmax())], "probability": float(p.max())}
           for t, p in zip(texts, proba, strict=True)]
    emit(args, {"model": args.model, "predictions": out},
         table([[o["label"], f"{o['probability']:.3f}", o["text"][:70]] for o in out], ["label", "p", "text"]))
    return 0
