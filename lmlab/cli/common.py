"""Shared CLI plumbing: common flags, corpus and model options, and result printing."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def add_common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags every leaf command takes: --json, --quiet, --debug."""
    g = parser.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print one JSON object as the result")
    g.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    g.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """How corpus files are read (applies to every corpus argument of the command)."""
    g = parser.add_argument_group("corpus reading")
    g.add_argument("--format", default="auto", choices=["auto", "lines", "blocks", "file", "jsonl", "files"],
                   help="one document per line (default), per blank-line block, per file, or JSONL")
    g.add_argument("--field", default="text", help="text field of JSONL records (default: text)")
    g.add_argument("--errors", default="strict", choices=["strict", "replace"],
                   help="undecodable bytes: stop with an error (default) or replace with U+FFFD")


def check_outputs(args: argparse.Namespace, *, files: tuple[str, ...] = (), dirs: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, output paths (the options named, when given) that cannot be written."""
    from ..core.io import check_writable

    for names, directory in ((files, False), (dirs, True)):
        for name in names:
            value = getattr(args, name, None)
            if value:
                check_writable(value, directory=directory, what=f"--{name.replace('_', '-')}")


def open_corpus_arg(args: argparse.Namespace, spec: str):
    from ..data import open_corpus

    return open_corpus(spec, format=args.format, field=args.field, errors=args.errors)


def add_model_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """A saved model (directory or built-in name), or a unigram model trained on the fly."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=required,
                   help="a model directory, a built-in model name, or 'unigram' to train one from --train")
    g.add_argument("--tokenizer", default=None,
                   help="word, char, or a tokenizer.json / model directory (default: the model's own; word for unigram)")
    g.add_argument("--train", help="training corpus for --model unigram (a file, a directory or NAME:SPLIT)")
    g.add_argument("--smoothing", default=None, help="unigram smoothing: mle or add-k (default add-k)")
    g.add_argument("--k", type=float, default=None, help="unigram add-k constant, > 0 (default 1 = Laplace)")
    g.add_argument("--min-count", type=int, default=None,
                   help="unigram vocabulary cut-off for word/char tokenizers (default 1)")
    g.add_argument("--save", help="also save the trained unigram model as a directory here")
    g.add_argument("--adapter", help="a fine-tuned adapter directory (lmlab finetune --out) applied to the model")


def add_decoding_options(parser: argparse.ArgumentParser, *, max_new_tokens: int = 40, temperature: float = 1.0,
                         top_p: float | None = None, search: bool = True) -> None:
    """The decoding flags (``lmlab.generate.settings.DecodingSettings``): limits and strategy, then the
    logits processors; ``search`` adds samples, best-of and the beam searches."""
    g = parser.add_argument_group("decoding: strategy and limits")
    g.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    g.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable); not part of the output")
    g.add_argument("--stop-id", type=int, action="append", default=None, help="stop token id (default: the EOS)")
    if search:
        g.add_argument("--num-samples", type=int, default=1, help="continuations to return (samples or beams)")
        g.add_argument("--best-of", type=int, default=None, help="sample N and keep the best by mean log-probability")
        g.add_argument("--beam-size", type=int, default=None, help="beam search with this many beams")
        g.add_argument("--length-penalty", type=float, default=1.0, help="beam score = sum log p / length^α")
        g.add_argument("--no-early-stopping", action="store_true",
                       help="beam search runs until no beam can improve")
        g.add_argument("--diverse-groups", type=int, default=None, help="diverse beam search with this many groups")
        g.add_argument("--diversity-penalty", type=float, default=0.5)
        g.add_argument("--stochastic-beam", action="store_true",
                       help="stochastic beam search (sampling without replacement)")
    q = parser.add_argument_group("decoding: logits processors")
    q.add_argument("--temperature", type=float, default=temperature, help=">= 0; 0 means greedy")
    q.add_argument("--top-k", type=int, default=None)
    q.add_argument("--top-p", type=float, default=top_p, help="nucleus mass in (0, 1]")
    q.add_argument("--min-p", type=float, default=None)
    q.add_argument("--typical-p", type=float, default=None)
    q.add_argument("--epsilon", type=float, default=None, help="epsilon sampling cut-off")
    q.add_argument("--eta", type=float, default=None, help="eta sampling cut-off")
    q.add_argument("--repetition-penalty", type=float, default=None, help="CTRL's penalty on raw logits (> 1 penalises)")
    q.add_argument("--frequency-penalty", type=float, default=0.0)
    q.add_argument("--presence-penalty", type=float, default=0.0)
    q.add_argument("--no-repeat-ngram-size", type=int, default=None, help="never repeat an n-gram of this size")
    add_kv_options(parser)


def add_kv_options(parser: argparse.ArgumentParser) -> None:
    """The KV-cache flags (``lmlab.kvcache.settings.cache_settings``): a policy with its budget and
    options, and a quantization of what the cache keeps."""
    from ..kvcache.options import POLICY_OPTIONS  # no torch: every verb's parser is built at start

    g = parser.add_argument_group("KV cache (policy, budget, quantization)")
    g.add_argument("--kv-policy", default=None, choices=list(POLICY_OPTIONS),
                   help="what the cache keeps: full (default), window, streaming (sinks + window, in-cache "
                        "positions), h2o, snapkv, pyramidkv, tova, knorm")
    g.add_argument("--kv-budget", type=_budget, default=None,
                   help="tokens each row keeps per layer and head, or a fraction of the prompt in (0, 1)")
    g.add_argument("--kv-sinks", type=int, default=None, help="streaming: attention-sink tokens kept (default 4)")
    g.add_argument("--kv-window", type=int, default=None,
                   help="streaming: recent tokens kept (default budget - sinks); snapkv/pyramidkv: the "
                        "observation window (default 32)")
    g.add_argument("--kv-recent", type=int, default=None, help="h2o: recent tokens kept (default half the budget)")
    g.add_argument("--kv-normalize", action="store_true", default=None,
                   help="h2o: rank by mean instead of summed attention (kvpress's ObservedAttentionPress)")
    g.add_argument("--kv-kernel", type=int, default=None, help="snapkv/pyramidkv: pooling kernel (odd, default 5)")
    g.add_argument("--kv-beta", type=int, default=None, help="pyramidkv: slope of the layer budgets (default 20)")
    g.add_argument("--kv-quant", default=None, choices=["int8", "int4"],
                   help="store the kept keys/values quantized (KIVI; stacks on any policy)")
    g.add_argument("--kv-key-axis", default=None, choices=["channel", "token"], help="key ranges (default channel)")
    g.add_argument("--kv-value-axis", default=None, choices=["token", "channel"], help="value ranges (default token)")
    g.add_argument("--kv-group", type=int, default=None,
                   help="tokens per per-channel range, and the full-precision residual (default 32)")


def _budget(text: str) -> int | float:
    """--kv-budget: an integer (tokens) or a fraction."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def kv_from_args(args: argparse.Namespace) -> Any:
    """The ``KVCacheSettings`` the KV-cache flags ask for (None: the plain cache)."""
    from ..kvcache.settings import cache_settings

    if not hasattr(args, "kv_policy"):
        return None
    return cache_settings(args.kv_policy, args.kv_budget, quant=args.kv_quant, key_axis=args.kv_key_axis,
                          value_axis=args.kv_value_axis, group=args.kv_group, sinks=args.kv_sinks,
                          window=args.kv_window, recent=args.kv_recent, normalize=args.kv_normalize,
                          kernel=args.kv_kernel, beta=args.kv_beta)


def add_constraint_options(parser: argparse.ArgumentParser) -> None:
    """``--regex``, ``--json-schema FILE``, ``--grammar FILE``: the output must match (one of them)."""
    g = parser.add_argument_group("decoding: constrained output (lmlab.generate.constrain)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--regex", default=None, help="the whole output matches this regular expression")
    x.add_argument("--json-schema", default=None, metavar="FILE", help="the output is JSON valid under this schema")
    x.add_argument("--grammar", default=None, metavar="FILE", help="the output matches this GBNF grammar (root rule)")


def constraint_from_args(args: argparse.Namespace) -> tuple[str, Any] | None:
    """(kind, source) of the constraint flags, read and parsed now so a bad file fails before the model
    loads; None without one."""
    import json

    from ..core.errors import ConfigError, InputError
    from ..generate.constrain import constraint_grammar

    for kind, flag in (("regex", "regex"), ("json_schema", "json_schema"), ("grammar", "grammar")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        source: Any = value
        if kind != "regex":
            try:
                with open(value, encoding="utf-8") as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read --{flag.replace('_', '-')} file {value}: {exc}",
                                 "give the path of a UTF-8 text file") from None
        if kind == "json_schema":
            try:
                source = json.loads(source)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{value} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                                  "write the schema as a JSON object") from None
        constraint_grammar(kind, source)  # syntax and schema errors now, with their position
        return kind, source
    return None


def constrained(settings: Any, spec: tuple[str, Any] | None, lm: Any, tokenizer: Any) -> Any:
    """``settings`` with the constraint of ``spec`` compiled against the model's vocabulary."""
    if spec is None:
        return settings
    from ..core.errors import ConfigError
    from ..generate.constrain import constraint_processor

    if tokenizer is None:
        raise ConfigError("constrained decoding needs the model's tokenizer", "load a model with a tokenizer")
    eos = getattr(lm, "eos_id", None)
    eos = tokenizer.eos_id if eos is None else eos
    ends = settings.stop_ids if settings.stop_ids is not None else ((eos,) if eos is not None else ())
    # the loop stops on the same ids the constraint allows at the end (the tokenizer's EOS for a model without one)
    return settings.with_(constraint=constraint_processor(*spec, tokenizer, ends), stop_ids=tuple(ends))


def add_method_options(parser: argparse.ArgumentParser, *, search: bool = True) -> None:
    """Decoding methods that bring a model or a rule of their own (``lmlab.generate.speculative``, ``guided``,
    ``contrastive_search``, ``select``); ``search`` adds the sample-then-select rules."""
    g = parser.add_argument_group("decoding: methods")
    g.add_argument("--speculative", default=None, metavar="MODEL|ngram|prompt-lookup",
                   help="speculative decoding with a draft model (a directory or name sharing the tokenizer), an "
                        "n-gram model trained on the prompt, or prompt lookup")
    g.add_argument("--draft-tokens", type=int, default=None, help="tokens drafted per step (default 4)")
    g.add_argument("--adaptive-draft", action="store_true", help="adapt the draft length per row (+2 / -1)")
    g.add_argument("--lookup-ngram", type=int, default=None, help="prompt lookup: longest n-gram matched (default 2)")
    g.add_argument("--contrastive-amateur", default=None, metavar="MODEL",
                   help="contrastive decoding against this amateur model (sharing the tokenizer)")
    g.add_argument("--alpha", type=float, default=None,
                   help="contrastive decoding's plausibility threshold α (default 0.1)")
    g.add_argument("--amateur-temperature", type=float, default=None,
                   help="temperature of the amateur's scores (default 1)")
    g.add_argument("--penalty-alpha", type=float, default=None,
                   help="contrastive search with this degeneration penalty α (k from --top-k, default 4)")
    g.add_argument("--fudge", default=None, metavar="CLASSIFIER",
                   help="FUDGE: steer toward --fudge-label of this saved classifier (lmlab classify train --out)")
    g.add_argument("--fudge-label", default=None, help="the label to steer toward (default: the classifier's last)")
    g.add_argument("--strength", type=float, default=None, help="FUDGE's strength λ (0: no steering; default 1)")
    g.add_argument("--fudge-top-k", type=int, default=None, help="candidates FUDGE reweights per step (default 20)")
    if search:
        g.add_argument("--mbr", default=None, choices=["bleu", "chrf", "rouge", "bertscore"],
                       help="minimum Bayes risk: the hypothesis of highest expected utility under this metric")
        g.add_argument("--samples", type=int, default=None, help="hypotheses for --mbr (default 16)")
        g.add_argument("--mbr-evidence", default=None, choices=["sample", "beam"],
                       help="--mbr hypotheses: sampled (default) or a beam's n-best")
        g.add_argument("--self-consistency", type=int, default=None, metavar="N",
                       help="sample N answers and keep the majority answer (by --answer-task's rules)")
        g.add_argument("--answer-task", default=None,
                       help="answer extraction rules for --self-consistency (default gsm8k)")
        g.add_argument("--reward", default=None, metavar="CLASSIFIER",
                       help="with --best-of N: keep the sample the classifier scores highest for --reward-label")
        g.add_argument("--reward-label", default=None, help="the label --reward scores (default: the classifier's last)")


#: each method or selection flag, and the options that only apply with it
METHOD_OPTIONS = {"speculative": ("draft_tokens", "adaptive_draft", "lookup_ngram"),
                  "contrastive_amateur": ("alpha", "amateur_temperature"),
                  "fudge": ("fudge_label", "strength", "fudge_top_k"), "mbr": ("samples", "mbr_evidence"),
                  "self_consistency": ("answer_task",), "reward": ("reward_label",)}


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def refuse_orphans(args: argparse.Namespace, owners: dict[str, tuple[str, ...]]) -> None:
    """Refuse an option given without the option it belongs to (``owners``: owner → its options; an
    option not given is None or False), rather than ignore it."""
    from ..core.errors import ConfigError

    def flag(name: str) -> str:
        return f"--{name.replace('_', '-')}"

    for owner, options in owners.items():
        if getattr(args, owner, None) in (None, False):
            given = [flag(o) for o in options if getattr(args, o, None) not in (None, False)]
            if given:
                raise ConfigError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with "
                                  f"{flag(owner)}", f"add {flag(owner)} or leave {', '.join(given)} out")


def methods_from_args(args: argparse.Namespace, settings: Any, lm: Any, tokenizer: Any) -> Any:
    """``settings`` with the method and the selection rule the method flags ask for (models loaded here)."""
    from ..core.errors import ConfigError
    from ..core.validate import check_number

    refuse_orphans(args, METHOD_OPTIONS)
    methods = [flag for flag, value in (("--speculative", args.speculative),
                                        ("--contrastive-amateur", args.contrastive_amateur),
                                        ("--penalty-alpha", args.penalty_alpha), ("--fudge", args.fudge))
               if value is not None]
    if len(methods) > 1:
        raise ConfigError(f"{' and '.join(methods)} are two decoding methods", "choose one of them")
    changes: dict[str, Any] = {}
    if args.speculative is not None:
        changes["method"] = speculative_method(args, lm, tokenizer)
    elif args.contrastive_amateur is not None:
        from ..generate.guided import Contrastive

        changes["method"] = Contrastive(helper_model("amateur", args.contrastive_amateur, tokenizer),
                                        alpha=_given(args.alpha, 0.1),
                                        amateur_temperature=_given(args.amateur_temperature, 1.0))
    elif args.penalty_alpha is not None:
        from ..generate.contrastive_search import ContrastiveSearch

        changes["method"] = ContrastiveSearch(args.penalty_alpha, args.top_k or 4)
    elif args.fudge is not None:
        from ..classify.guidance import prefix_scorer
        from ..generate.guided import Fudge

        classifier = load_classifier_arg(args.fudge)
        label = args.fudge_label if args.fudge_label is not None else str(classifier.classes[-1])
        changes["method"] = Fudge(prefix_scorer(classifier, tokenizer, label), strength=_given(args.strength, 1.0),
                                  top_k=check_number("--fudge-top-k", _given(args.fudge_top_k, 20), low=1,
                                                     integer=True))
    changes.update(selection_from_args(args, settings))
    return settings.with_(**changes) if changes else settings


def selection_from_args(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """The settings --mbr, --self-consistency and --reward change (none without those flags)."""
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..generate.select import MBR, MajorityVote, Reward

    rules = [flag for flag, value in (("--mbr", getattr(args, "mbr", None)),
                                      ("--self-consistency", getattr(args, "self_consistency", None)),
                                      ("--reward", getattr(args, "reward", None))) if value is not None]
    if not rules:
        return {}
    if len(rules) > 1:
        raise ConfigError(f"{' and '.join(rules)} are two selection rules", "choose one of them")
    if args.mbr is not None:
        from ..eval.utility import utility

        if settings.best_of is not None or settings.beam_size is not None:
            raise ConfigError("--mbr sets its own hypotheses", "give their number with --samples N, not "
                              "--best-of/--beam-size")
        rule = MBR(utility(args.mbr), metric=args.mbr)
        samples = check_number("--samples", _given(args.samples, 16), low=1, integer=True)
        return {"select": rule, "beam_size" if args.mbr_evidence == "beam" else "best_of": samples}
    if args.self_consistency is not None:
        from ..eval.utility import task_answer

        if settings.best_of is not None or settings.beam_size is not None:
            raise ConfigError("--self-consistency N sets its own samples", "leave --best-of/--beam-size out")
        return {"select": MajorityVote(task_answer(_given(args.answer_task, "gsm8k"))), "best_of": args.self_consistency}
    from ..classify.guidance import label_reward

    if settings.best_of is None:
        raise ConfigError("--reward reranks several samples", "add --best-of N")
    classifier = load_classifier_arg(args.reward)
    label = args.reward_label if args.reward_label is not None else str(classifier.classes[-1])
    return {"select": Reward(label_reward(classifier, label))}


def speculative_method(args: argparse.Namespace, lm: Any, tokenizer: Any) -> Any:
    """The speculative method --speculative names (a draft model, 'ngram' or 'prompt-lookup')."""
    from ..core.validate import check_number
    from ..generate.speculative import ModelDraft, PromptLookup, PromptNgram, Speculative

    if args.speculative == "prompt-lookup":
        drafter = PromptLookup(max_ngram=check_number("--lookup-ngram", _given(args.lookup_ngram, 2), low=1,
                                                      integer=True))
    elif args.speculative == "ngram":
        drafter = PromptNgram()
    else:
        drafter = ModelDraft(helper_model("draft", args.speculative, tokenizer))
    return Speculative(drafter, draft_tokens=_given(args.draft_tokens, 4), adaptive=args.adaptive_draft)


def helper_model(role: str, spec: str, tokenizer: Any) -> Any:
    """A draft or amateur model (a directory, a built-in name or an ARPA file) that must share ``tokenizer``."""
    from ..lm import check_shared_tokenizer
    from ..models import load_model
    from ..ngram.files import is_arpa_path, load_ngram

    helper, helper_tokenizer = load_ngram(spec) if is_arpa_path(spec) else load_model(spec)
    if helper_tokenizer is not None:
        check_shared_tokenizer(role, helper_tokenizer, tokenizer)
    return helper.eval() if hasattr(helper, "eval") else helper


def load_classifier_arg(path: str) -> Any:
    from ..classify import load_classifier

    return load_classifier(path)


#: argparse names of the decoding flags that are settings under another name
RENAMED = {"num_samples": "n", "stop_id": "stop_ids"}


def in_flag_terms(exc: Exception, args: argparse.Namespace) -> str:
    """The message of ``exc`` with the library's name for what was refused written as the flag the user
    typed: a ``SettingError``'s ``setting`` (``n``, ``length_penalty`` → ``--num-samples``,
    ``--length-penalty``), or the name a ``check_number``/``check_choice`` message starts with
    (``margin must be finite`` → ``--margin must be finite``) when it is one of this verb's options and
    was given (a library name that only matches an option not given came from another one)."""
    import re

    text = str(exc)
    setting = getattr(exc, "setting", None)
    dest = {v: k for k, v in RENAMED.items()}.get(setting, setting)
    if setting is None:
        match = re.match(r"([a-z][a-z0-9_]*) (?:= |must be )", text)
        setting = dest = match.group(1) if match else None
        if getattr(args, dest or "", None) is None:
            return text
    if not setting or not hasattr(args, dest):
        return text
    return re.sub(rf"(?<![\w-]){re.escape(setting)}(?!\w)", f"--{dest.replace('_', '-')}", text)


def decoding_from_args(args: argparse.Namespace) -> Any:
    """The ``DecodingSettings`` the decoding flags ask for (checked by the one validator)."""
    from dataclasses import fields

    from ..generate.settings import DecodingSettings, settings_from

    names = {f.name for f in fields(DecodingSettings)}
    values = {}
    for name, value in vars(args).items():
        setting = RENAMED.get(name, name)
        if setting in names:
            values[setting] = tuple(value) if isinstance(value, list) else value
    if getattr(args, "no_early_stopping", False):
        values["early_stopping"] = False
    values["greedy"] = bool(values.get("greedy"))
    values["kv_cache"] = kv_from_args(args)
    return settings_from(values)
#: the model options that only train a unigram on the fly (refused with any other --model)
UNIGRAM_OPTIONS = ("train", "smoothing", "k", "min_count", "save")


def model_from_args(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(language model, tokenizer, description) as the model options ask."""
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..lm import check_tokenizer
    from ..models import load_model, save_model_dir
    from ..ngram import UnigramLM
    from ..tokenizers import WordLevelTokenizer, load

    check_outputs(args, dirs=("save",))
    if args.model == "unigram":
        if getattr(args, "adapter", None):
            raise ConfigError("--adapter applies to neural models, not unigram", "leave --adapter out")
        if not args.train:
            raise ConfigError("--model unigram needs a training corpus", "pass --train FILE (or NAME:SPLIT)")
        smoothing = args.smoothing or "add-k"
        if smoothing == "mle" and args.k is not None:
            raise ConfigError("--k applies to --smoothing add-k, not mle", "leave --k out")
        k = 1.0 if args.k is None else check_number("--k", args.k, low=0.0, low_inclusive=False)
        min_count = 1 if args.min_count is None else check_number("--min-count", args.min_count, low=1, integer=True)
        train = open_corpus_arg(args, args.train)
        spec = args.tokenizer or "word"
        if spec in ("word", "char"):
            tokenizer = WordLevelTokenizer(spec, min_count=min_count).train(train)
        else:
            tokenizer = load(spec)
        lm = UnigramLM.fit_corpus(train, tokenizer, smoothing=smoothing, k=k)
        if args.save:
            save_model_dir(args.save, *lm.to_state(), tokenizer=tokenizer)
        desc = f"unigram ({smoothing}{'' if smoothing == 'mle' else f', k={k:g}'}, {spec} tokens)"
        return lm, tokenizer, desc
    unused = [f"--{name.replace('_', '-')}" for name in UNIGRAM_OPTIONS if getattr(args, name, None) is not None]
    if unused:
        raise ConfigError(f"{', '.join(unused)} only apply to --model unigram, not to {args.model}",
                          "leave them out")
    lm, tokenizer = load_model(args.model)
    if getattr(args, "adapter", None):
        lm = with_adapter(lm, args.adapter)
    if args.tokenizer:
        tokenizer = load(args.tokenizer)
    if tokenizer is None:
        raise ConfigError(f"model {args.model} has no tokenizer.json", "pass --tokenizer PATH")
    check_tokenizer(lm, tokenizer)
    return lm, tokenizer, str(args.model)


def with_adapter(lm: Any, path: str) -> Any:
    """``lm`` with the PEFT adapter saved in ``path`` (refused if it was trained on another base model)."""
    from ..core.errors import ConfigError
    from ..peft import load_adapter

    if not hasattr(lm, "parameters"):
        raise ConfigError(f"--adapter applies to neural models, not a {type(lm).__name__}", "leave --adapter out")
    load_adapter(lm, path)
    return lm.eval()


def input_lines(texts: list[str], path: str | None) -> list[str]:
    """The texts given as arguments, then the lines of ``path`` ('-' = stdin), blank lines dropped."""
    from ..data.corpus import text_file

    lines = list(texts)
    if path == "-":
        lines += [line.rstrip("\n") for line in sys.stdin]
    elif path:
        lines += list(text_file(path))  # a missing, binary or non-UTF-8 file is one clear error
    return [line for line in lines if line.strip()]


def _clean(obj: Any) -> Any:
    """JSON cannot carry inf/nan: write them as strings rather than invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit(args: argparse.Namespace, result: dict, human: str) -> None:
    """Print ``result`` as one JSON line with --json, else the human-readable text."""
    if getattr(args, "json", False):
        print(json.dumps(_clean(result), ensure_ascii=False))
    else:
        print(human)
    sys.stdout.flush()


def status(args: argparse.Namespace, message: str) -> None:
    """A progress line on stderr for people (silent with --quiet or --json)."""
    if not (getattr(args, "quiet", False) or getattr(args, "json", False)):
        print(message, file=sys.stderr, flush=True)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
