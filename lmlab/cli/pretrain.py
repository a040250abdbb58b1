"""``lmlab pretrain``: train a neural LM from text — a preset or a config file, ``--key value``
overrides for any model or training setting, a run directory, and ``--resume``."""

from __future__ import annotations

import argparse
import json

from .common import add_common, add_corpus_options, check_outputs, emit, open_corpus_arg, status

#: settings passed to ``pretrain`` itself (the rest go to the model or the trainer)
RUN_KEYS = ("batch_size", "context", "eval_batches", "scheduled_sampling", "label_smoothing",
            "objective", "mask_rate", "whole_word", "nsp", "sop")
FLAGS = ("nsp", "sop", "activation_checkpointing", "compile", "deterministic")  # may be given bare (--nsp = --nsp true)


def _value(text: str):
    """A command-line value as JSON when it parses (numbers, true/false, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def setting_keys() -> tuple[list[str], list[str]]:
    """(model setting names of every family, training setting names)."""
    import inspect
    from dataclasses import fields

    from ..models.config import TransformerConfig
    from ..models.feedforward import FeedForwardLM
    from ..models.recurrent import RecurrentLM
    from ..models.rnn_seq2seq import RNNEncoderDecoder
    from ..train import TrainConfig

    model = {f.name for f in fields(TransformerConfig)} - {"vocab_size"}
    for cls in (RecurrentLM, FeedForwardLM, RNNEncoderDecoder):
        model |= {n for n, p in inspect.signature(cls).parameters.items()
                  if p.kind is p.KEYWORD_ONLY and (n != "cell" or cls is RNNEncoderDecoder)}
    return sorted(model), [f.name for f in fields(TrainConfig)]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="train a neural language model (transformer, LSTM/GRU/RNN, feed-forward)",
                       description="Train a neural LM from text into a run directory (RUN/model is the "
                                   "trained model directory). Any model or training setting can be set "
                                   "as --key value, e.g. --d-model 128 --n-layers 4 --lr 1e-3 --steps 2000.")
    p.add_argument("--config", help="a JSON file of settings (the shape of a run's run.json)")
    p.add_argument("--train", help="training corpus (file, directory, NAME:SPLIT or embedded:train)")
    p.add_argument("--valid", help="validation corpus for periodic evaluation")
    p.add_argument("--tokenizer", default="char",
                   help="char or word (trained on --train), or a tokenizer.json / model directory (default char)")
    p.add_argument("--min-count", type=int, default=1, help="vocabulary cut-off for word/char tokenizers")
    p.add_argument("--out", help="run directory (checkpoints, metrics, the final model in OUT/model)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last checkpoint")
    g = p.add_argument_group("parallel data (--objective seq2seq)")
    g.add_argument("--pair", metavar="SRC-TGT",
                   help="language pair: --train/--valid are prefixes, e.g. --train multi30k:train --pair de-en "
                        "reads train.de → train.en (a path prefix data/train reads data/train.de, data/train.en)")
    g.add_argument("--both-directions", action="store_true",
                   help="multilingual: train SRC→TGT and TGT→SRC in one model, each source led by a target-language "
                        "tag (<2en>, <2de>); needs --pair; translate with lmlab translate --target-language")
    g.add_argument("--source-tokenizer", help="rnn-seq2seq: a separate source-side vocabulary — word or char "
                   "(trained on the sources; --tokenizer word|char then learns the targets only) or a tokenizer.json")
    g.add_argument("--source", help="training source file, one sentence per line (with --target)")
    g.add_argument("--target", help="training target file, line-aligned with --source")
    g.add_argument("--valid-source", help="validation source file (with --valid-target)")
    g.add_argument("--valid-target", help="validation target file")
    add_corpus_options(p)
    add_common(p)
    p.set_defaults(func=run)


def complete(p: argparse.ArgumentParser) -> None:
    """--family and one --key option per model, training and data setting (they import the library)."""
    from ..train import FAMILIES

    p.add_argument("--family", choices=FAMILIES, default=None,
                   help="model family: a transformer preset (vaswani, gpt2, llama; bert, albert; t5, bart) or lstm, "
                        "gru, rnn, elmo (--objective bilm), feedforward, rnn-seq2seq (--attention "
                        "bahdanau|dot|general|none, --copy). --objective mlm|electra (encoders; --nsp, or --sop "
                        "for albert), span|denoise|seq2seq (t5, bart, rnn-seq2seq), bilm (elmo). Transformers take "
                        "--attention full|sliding_window|strided|adaptive_span|lsh (decoders), linformer|nystrom "
                        "(encoders), --memory-length N (Transformer-XL; --positions transformer_xl for its relative "
                        "encoding) and --compressed-memory C --compression mean|max|conv; see docs/long_attention.md")
    model_keys, train_keys = setting_keys()
    groups = [("model settings", model_keys), ("training settings", train_keys), ("data settings", RUN_KEYS)]
    for title, keys in groups:
        g = p.add_argument_group(title)
        for key in keys:
            g.add_argument(f"--{key.replace('_', '-')}", dest=f"set_{key}", type=_value, default=None,
                           metavar="V", **({"nargs": "?", "const": True} if key in FLAGS else {}))


def collect_settings(args: argparse.Namespace) -> dict:
    """The run's settings: the config file (if any), then command-line overrides on top."""
    from ..core.errors import ConfigError
    from ..core.io import read_json
    from ..train import read_run

    settings: dict = {"model": {}, "training": {}}
    if args.resume:
        settings = read_run(args.resume)
    elif args.config:
        given = read_json(args.config, "--config")
        if not isinstance(given, dict):
            raise ConfigError(f"--config {args.config} holds a {type(given).__name__}, not a JSON object of settings",
                              "write the settings as a run.json does: {\"family\": …, \"model\": {…}, \"training\": {…}}")
        settings = {"model": {}, "training": {}, **given}
    if args.family:
        settings["family"] = args.family
    model_keys, train_keys = setting_keys()
    for key, value in vars(args).items():
        if not key.startswith("set_") or value is None:
            continue
        name = key[4:]
        if args.resume and name not in train_keys:
            raise ConfigError(f"--{name.replace('_', '-')} cannot change when resuming",
                              "only training settings (e.g. --steps) may be overridden with --resume")
        if name in RUN_KEYS:
            settings[name] = value
        elif name in train_keys:
            settings["training"][name] = value
        else:
            settings["model"][name] = value
    settings.setdefault("family", "gpt2")
    return settings


def _corpus_args(args: argparse.Namespace, *, valid: bool, required: bool):
    """The --train (or --valid) corpus, or None."""
    from ..core.errors import ConfigError

    spec = args.valid if valid else args.train
    if spec is None and required:
        raise ConfigError("no training corpus", "pass --train FILE (or NAME:SPLIT, or embedded:train)")
    return None if spec is None else open_corpus_arg(args, spec)


def parallel_args(args: argparse.Namespace, *, valid: bool, required: bool):
    """(source, target) corpora from --train/--valid with --pair, or --source/--target (--valid-*), or None."""
    from ..core.errors import ConfigError
    from ..data.parallel import both_directions, parallel_corpora

    if getattr(args, "both_directions", False) and (args.pair is None or args.source is not None):
        raise ConfigError("--both-directions names its languages through --pair",
                          "pass --train PREFIX --pair de-en (not --source/--target files)")
    prefix = args.valid if valid else args.train
    source, target = (args.valid_source, args.valid_target) if valid else (args.source, args.target)
    if source is not None or target is not None:
        if source is None or target is None:
            side = "--valid-" if valid else "--"
            raise ConfigError("only one side of the parallel data was given",
                              f"pass both {side}source and {side}target")
        return parallel_corpora(source, target)
    if prefix is not None:
        corpora = parallel_corpora(prefix, pair=args.pair)
        return both_directions(corpora, args.pair) if args.both_directions else corpora
    if required:
        raise ConfigError("no parallel training data",
                          "pass --train multi30k:train --pair de-en, or --source FILE --target FILE")
    return None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.errors import ConfigError
    from ..data.corpus import from_texts
    from ..tokenizers import WordLevelTokenizer, load
    from ..train import pretrain
    from ..train.pretrain import SOURCE_DIR

    settings = collect_settings(args)
    out = args.resume or args.out
    if not out:
        raise ConfigError("no run directory", "pass --out DIR (or --resume DIR)")
    check_outputs(args, dirs=("out", "resume"))
    paired = settings.get("objective") == "seq2seq"
    parallel = [f"--{n.replace('_', '-')}" for n in ("pair", "source", "target", "valid_source", "valid_target")
                if getattr(args, n) is not None]
    if parallel and not paired:
        raise ConfigError(f"{', '.join(parallel)} apply to --objective seq2seq", "leave them out, or add --objective seq2seq")
    corpus = parallel_args if paired else _corpus_args
    source_tokenizer = None
    if args.source_tokenizer and not paired:
        raise ConfigError("--source-tokenizer is for translation", "use it with --objective seq2seq")
    if args.resume:
        tokenizer = load(out)
        if (Path(out) / SOURCE_DIR / "tokenizer.json").is_file():
            source_tokenizer = load(Path(out) / SOURCE_DIR)
        train, valid = corpus(args, valid=False, required=False), corpus(args, valid=True, required=False)
    else:
        train, valid = corpus(args, valid=False, required=True), corpus(args, valid=True, required=False)
        if args.source_tokenizer in ("char", "word"):
            source_tokenizer = WordLevelTokenizer(args.source_tokenizer, min_count=args.min_count).train(train[0])
        elif args.source_tokenizer:
            source_tokenizer = load(args.source_tokenizer)
        if args.tokenizer in ("char", "word"):
            status(args, f"training a {args.tokenizer}-level vocabulary on {args.train or args.source}")
            texts = train if not paired else train[1] if source_tokenizer is not None else from_texts(
                [*train[0], *train[1]], "pairs")
            tokenizer = WordLevelTokenizer(args.tokenizer, min_count=args.min_count).train(texts)
        else:
            tokenizer = load(args.tokenizer)
    kwargs = {k: settings[k] for k in RUN_KEYS if k in settings}
    status(args, f"pretraining a {settings['family']} model into {out}")
    result = pretrain(settings["family"], train, tokenizer, out, model=settings["model"],
                      training=settings["training"], valid=valid, resume=bool(args.resume),
                      source_tokenizer=source_tokenizer, **kwargs)
    summary = {"family": settings["family"], "run_dir": str(out), "model_dir": str(result.model_dir),
               "steps": result.train.steps, "final_train_loss": result.train.final_loss,
               "valid_loss": result.valid_loss, "stopped_early": result.train.stopped_early,
               "seconds": result.train.seconds, "tokens": result.train.tokens,
               "parameters": sum(p.numel() for p in result.model.parameters())}
    valid_text = "" if result.valid_loss is None else f", validation loss {result.valid_loss:.4f}"
    human = (f"trained {summary['parameters']:,} parameters for {result.train.steps} steps in "
             f"{result.train.seconds:.1f} s: train loss {result.train.final_loss:.4f}{valid_text}\n"
             f"model: {result.model_dir}   (try: lmlab generate --model {result.model_dir})")
    emit(args, summary, human)
    return 0
