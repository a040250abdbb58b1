"""``lmlab classify train|eval|predict``: text classifiers from naive Bayes to fine-tuned transformers."""

from __future__ import annotations

import argparse
import time

from .common import add_common, check_outputs, emit, input_lines, status, table

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
    g.add_argument("--weighting", choices=["tfidf", "count", "binary"], help="logistic features (default tfidf)")
    g.add_argument("--C", type=float, help="inverse L2 strength, > 0 (logistic; default 1)")
    g.add_argument("--alpha", type=float, help="additive smoothing, > 0 (naive Bayes; default 1)")
    g = t.add_argument_group("cbow / fasttext / finetune")
    g.add_argument("--dim", type=int, help="embedding size (default: 100 cbow, 10 fasttext)")
    g.add_argument("--epochs", type=int, help="passes over the data (default: 5, finetune 1)")
    g.add_argument("--lr", type=float, help="learning rate (default: 1e-2 cbow, 0.1 fasttext, 5e-5 finetune)")
    g.add_argument("--sampler", choices=["shuffle", "balanced"],
                   help="cbow / finetune: shuffled batches (default) or class-balanced draws")
    g.add_argument("--vectors", help="cbow: initialise embeddings from these word vectors")
    g.add_argument("--word-ngrams", type=int, help="fasttext: longest hashed word n-gram (default 2)")
    g.add_argument("--buckets", type=int, help="fasttext: hash buckets (default 2,000,000)")
    g.add_argument("--seed", type=int, help="cbow / fasttext / finetune (default 0)")
    g = t.add_argument_group("finetune (a transformer + classification head on the trainer)")
    g.add_argument("--backbone",
                   help="minilm (default), smollm2-135m-instruct, or a model directory (lmlab or Hugging Face BERT)")
    g.add_argument("--pooling", choices=["auto", "mean", "last"],
                   help="auto (default): mean for encoders, last token for causal decoders")
    g.add_argument("--batch-size", type=int, help="texts per step (default 32)")
    g.add_argument("--max-length", type=int, help="tokens kept per text (default 64)")
    g.add_argument("--steps", type=int, help="optimizer steps (default: --epochs passes)")
    g.add_argument("--warmup", type=float, help="warm-up share of the steps, in [0, 1) (default 0.06)")
    g.add_argument("--run-dir", help="checkpoints here; training again with the same run dir resumes")
    g.add_argument("--device", help="finetune: cpu, cuda, … (default auto)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="finetune: deterministic kernels only, so a run on several threads reproduces bit for bit "
                        "(same thread count; default on, --no-deterministic allows the others)")
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


#: the kind-specific options of `classify train`: the kinds that use each and its default (None: by kind)
KIND_OPTIONS = {
    "weighting": (("logistic",), "tfidf"), "C": (("logistic",), 1.0), "alpha": (("naive-bayes",), 1.0),
    "dim": (("cbow", "fasttext"), None), "epochs": (("cbow", "fasttext", "finetune"), None),
    "lr": (("cbow", "fasttext", "finetune"), None), "sampler": (("cbow", "finetune"), "shuffle"),
    "vectors": (("cbow",), None), "word_ngrams": (("fasttext",), 2), "buckets": (("fasttext",), 2_000_000),
    "seed": (("cbow", "fasttext", "finetune"), 0), "backbone": (("finetune",), "minilm"),
    "pooling": (("finetune",), "auto"), "batch_size": (("finetune",), 32), "max_length": (("finetune",), 64),
    "steps": (("finetune",), None), "warmup": (("finetune",), 0.06), "run_dir": (("finetune",), None),
    "device": (("finetune",), "auto"), "deterministic": (("finetune",), True),
}
#: (low, integer) bounds of the numeric ones; learning rate, C and alpha must be above 0
POSITIVE = ("C", "alpha", "lr")
AT_LEAST_ONE = ("dim", "epochs", "word_ngrams", "buckets", "batch_size", "max_length", "steps")


def kind_settings(args: argparse.Namespace) -> None:
    """Refuse kind-specific options the chosen --kind does not use, check the numbers, fill in defaults."""
    from ..core.errors import ConfigError
    from ..core.validate import check_number

    for name, (kinds, default) in KIND_OPTIONS.items():
        flag = f"--{name.replace('_', '-')}"
        value = getattr(args, name)
        if value is None:
            setattr(args, name, default)
            continue
        if args.kind not in kinds:
            raise ConfigError(f"{flag} does not apply to --kind {args.kind}", f"it is for {' / '.join(kinds)}; leave it out")
        if name in POSITIVE:
            check_number(flag, value, low=0.0, low_inclusive=False)
        elif name in AT_LEAST_ONE:
            check_number(flag, value, low=1, integer=True)
        elif name == "seed":
            check_number(flag, value, low=0, integer=True)
        elif name == "warmup":
            check_number(flag, value, low=0.0, high=1.0, high_inclusive=False)


def build(args: argparse.Namespace):
    """The untrained classifier the options ask for (after ``kind_settings``)."""
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
                                   run_dir=args.run_dir, device=args.device, seed=args.seed,
                                   deterministic=args.deterministic)
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

    kind_settings(args)
    check_outputs(args, dirs=("out", "run_dir"))
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
    check_outputs(args, files=("reliability",))
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
