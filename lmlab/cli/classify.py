"""``lmlab classify train|eval|predict``: text classifiers from naive Bayes to fastText-style."""

from __future__ import annotations

import argparse
import sys
import time

from .common import add_common, emit, status, table

KINDS = ["logistic", "naive-bayes", "cbow", "fasttext"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="train, evaluate and apply text classifiers")
    verbs = p.add_subparsers(dest="classify_verb", metavar="ACTION", required=True)

    t = verbs.add_parser("train", help="train a classifier on labelled texts")
    t.add_argument("--data", required=True, help="NAME:SPLIT (sst2:train, agnews:train) or a text<TAB>label file")
    t.add_argument("--out", required=True, help="model directory to write")
    t.add_argument("--kind", default="logistic", choices=KINDS)
    t.add_argument("--eval", dest="eval_data", help="also report metrics on this labelled set")
    t.add_argument("--class-weight", default="none", choices=["none", "balanced"])
    g = t.add_argument_group("logistic / naive Bayes")
    g.add_argument("--weighting", default="tfidf", choices=["tfidf", "count", "binary"], help="logistic features")
    g.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (logistic)")
    g.add_argument("--alpha", type=float, default=1.0, help="additive smoothing (naive Bayes)")
    g = t.add_argument_group("cbow / fasttext")
    g.add_argument("--dim", type=int, default=None, help="embedding size (default: 100 cbow, 10 fasttext)")
    g.add_argument("--epochs", type=int, default=5)
    g.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-2 cbow, 0.1 fasttext)")
    g.add_argument("--vectors", help="cbow: initialise embeddings from these word vectors")
    g.add_argument("--word-ngrams", type=int, default=2, help="fasttext: longest hashed word n-gram")
    g.add_argument("--buckets", type=int, default=2_000_000, help="fasttext: hash buckets")
    g.add_argument("--seed", type=int, default=0)
    add_common(t)
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="accuracy, macro-F1 and confusion matrix on labelled texts")
    e.add_argument("--model", required=True, help="classifier directory")
    e.add_argument("--data", required=True, help="NAME:SPLIT or a text<TAB>label file")
    add_common(e)
    e.set_defaults(func=run_eval)

    pr = verbs.add_parser("predict", help="label texts (arguments, or one per line on stdin / --input)")
    pr.add_argument("--model", required=True, help="classifier directory")
    pr.add_argument("texts", nargs="*")
    pr.add_argument("--input", help="a file with one text per line ('-' for stdin)")
    add_common(pr)
    pr.set_defaults(func=run_predict)


def build(args: argparse.Namespace):
    from ..classify import CBOWClassifier, FastTextClassifier, LogisticRegression, NaiveBayes

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
        return CBOWClassifier(dim=dim, epochs=args.epochs, lr=args.lr or 1e-2, class_weight=args.class_weight,
                              vectors=vectors, seed=args.seed)
    return FastTextClassifier(dim=args.dim or 10, epochs=args.epochs, lr=args.lr or 0.1,
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


def run_eval(args: argparse.Namespace) -> int:
    from ..classify import load_classifier, load_labeled, report

    model = load_classifier(args.model)
    texts, labels = load_labeled(args.data)
    rep = report(labels, model.predict(texts))
    emit(args, {"model": args.model, "data": args.data, **rep}, _report_text(rep))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..classify import load_classifier
    from ..core.errors import ConfigError

    texts = list(args.texts)
    if args.input:
        fh = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
        with fh:
            texts += [line.rstrip("\n") for line in fh if line.strip()]
    if not texts:
        raise ConfigError("no texts to classify", "pass texts as arguments or --input FILE")
    model = load_classifier(args.model)
    proba = model.predict_proba(texts)
    out = [{"text": t, "label": model.classes[int(p.argmax())], "probability": float(p.max())}
           for t, p in zip(texts, proba, strict=True)]
    emit(args, {"model": args.model, "predictions": out},
         table([[o["label"], f"{o['probability']:.3f}", o["text"][:70]] for o in out], ["label", "p", "text"]))
    return 0
