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
    g.add_argument("--smoothing", default="add-k", help="unigram smoothing: mle or add-k (default add-k)")
    g.add_argument("--k", type=float, default=1.0, help="add-k constant (default 1 = Laplace)")
    g.add_argument("--min-count", type=int, default=1, help="vocabulary cut-off for word/char tokenizers")
    g.add_argument("--save", help="also save the trained model as a directory here")
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


def add_method_options(parser: argparse.ArgumentParser, *, search: bool = True) -> None:
    """Decoding methods that bring a model or a rule of their own (``lmlab.generate.speculative``, ``guided``,
    ``contrastive_search``, ``select``); ``search`` adds the sample-then-select rules."""
    g = parser.add_argument_group("decoding: methods")
    g.add_argument("--speculative", default=None, metavar="MODEL|ngram|prompt-lookup",
                   help="speculative decoding with a draft model (a directory or name sharing the tokenizer), an "
                        "n-gram model trained on the prompt, or prompt lookup")
    g.add_argument("--draft-tokens", type=int, default=4, help="tokens drafted per step (default 4)")
    g.add_argument("--adaptive-draft", action="store_true", help="adapt the draft length per row (+2 / -1)")
    g.add_argument("--lookup-ngram", type=int, default=2, help="prompt lookup: longest n-gram matched (default 2)")
    g.add_argument("--contrastive-amateur", default=None, metavar="MODEL",
                   help="contrastive decoding against this amateur model (sharing the tokenizer)")
    g.add_argument("--alpha", type=float, default=0.1, help="contrastive decoding's plausibility threshold α")
    g.add_argument("--amateur-temperature", type=float, default=1.0, help="temperature of the amateur's scores")
    g.add_argument("--penalty-alpha", type=float, default=None,
                   help="contrastive search with this degeneration penalty α (k from --top-k, default 4)")
    g.add_argument("--fudge", default=None, metavar="CLASSIFIER",
                   help="FUDGE: steer toward --fudge-label of this saved classifier (lmlab classify train --out)")
    g.add_argument("--fudge-label", default=None, help="the label to steer toward (default: the classifier's last)")
    g.add_argument("--strength", type=float, default=1.0, help="FUDGE's strength λ (0: no steering)")
    g.add_argument("--fudge-top-k", type=int, default=20, help="candidates FUDGE reweights per step")
    if search:
        g.add_argument("--mbr", default=None, choices=["bleu", "chrf", "rouge", "bertscore"],
                       help="minimum Bayes risk: the hypothesis of highest expected utility under this metric")
        g.add_argument("--samples", type=int, default=16, help="hypotheses for --mbr (default 16)")
        g.add_argument("--mbr-evidence", default="sample", choices=["sample", "beam"],
                       help="--mbr hypotheses: sampled (default) or a beam's n-best")
        g.add_argument("--self-consistency", type=int, default=None, metavar="N",
                       help="sample N answers and keep the majority answer (by --answer-task's rules)")
        g.add_argument("--answer-task", default="gsm8k", help="answer extraction rules for --self-consistency")
        g.add_argument("--reward", default=None, metavar="CLASSIFIER",
                       help="with --best-of N: keep the sample the classifier scores highest for --reward-label")
        g.add_argument("--reward-label", default=None, help="the label --reward scores (default: the classifier's last)")


def methods_from_args(args: argparse.Namespace, settings: Any, lm: Any, tokenizer: Any) -> Any:
    """``settings`` with the method and the selection rule the method flags ask for (models loaded here)."""
    from ..core.errors import ConfigError

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

        changes["method"] = Contrastive(helper_model("amateur", args.contrastive_amateur, tokenizer), alpha=args.alpha,
                                        amateur_temperature=args.amateur_temperature)
    elif args.penalty_alpha is not None:
        from ..generate.contrastive_search import ContrastiveSearch

        changes["method"] = ContrastiveSearch(args.penalty_alpha, args.top_k or 4)
    elif args.fudge is not None:
        from ..classify.guidance import prefix_scorer
        from ..generate.guided import Fudge

        classifier = load_classifier_arg(args.fudge)
        label = args.fudge_label if args.fudge_label is not None else str(classifier.classes[-1])
        changes["method"] = Fudge(prefix_scorer(classifier, tokenizer, label), strength=args.strength,
                                  top_k=args.fudge_top_k)
    changes.update(selection_from_args(args, settings))
    return settings.with_(**changes) if changes else settings


def selection_from_args(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """The settings --mbr, --self-consistency and --reward change (none without those flags)."""
    from ..core.errors import ConfigError
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
        if args.mbr_evidence == "beam":
            return {"select": rule, "beam_size": args.samples}
        return {"select": rule, "best_of": args.samples}
    if args.self_consistency is not None:
        from ..eval.utility import task_answer

        if settings.best_of is not None or settings.beam_size is not None:
            raise ConfigError("--self-consistency N sets its own samples", "leave --best-of/--beam-size out")
        return {"select": MajorityVote(task_answer(args.answer_task)), "best_of": args.self_consistency}
    from ..classify.guidance import label_reward

    if settings.best_of is None:
        raise ConfigError("--reward reranks several samples", "add --best-of N")
    classifier = load_classifier_arg(args.reward)
    label = args.reward_label if args.reward_label is not None else str(classifier.classes[-1])
    return {"select": Reward(label_reward(classifier, label))}


def speculative_method(args: argparse.Namespace, lm: Any, tokenizer: Any) -> Any:
    """The speculative method --speculative names (a draft model, 'ngram' or 'prompt-lookup')."""
    from ..generate.speculative import ModelDraft, PromptLookup, PromptNgram, Speculative

    if args.speculative == "prompt-lookup":
        drafter = PromptLookup(max_ngram=args.lookup_ngram)
    elif args.speculative == "ngram":
        drafter = PromptNgram()
    else:
        drafter = ModelDraft(helper_model("draft", args.speculative, tokenizer))
    return Speculative(drafter, draft_tokens=args.draft_tokens, adaptive=args.adaptive_draft)


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
    return settings_from(values)


def model_from_args(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(language model, tokenizer, description) as the model options ask."""
    from ..core.errors import ConfigError
    from ..lm import check_tokenizer
    from ..models import load_model, save_model_dir
    from ..ngram import UnigramLM
    from ..tokenizers import WordLevelTokenizer, load

    if args.model == "unigram":
        if getattr(args, "adapter", None):
            raise ConfigError("--adapter applies to neural models, not unigram", "leave --adapter out")
        if not args.train:
            raise ConfigError("--model unigram needs a training corpus", "pass --train FILE (or NAME:SPLIT)")
        train = open_corpus_arg(args, args.train)
        spec = args.tokenizer or "word"
        if spec in ("word", "char"):
            tokenizer = WordLevelTokenizer(spec, min_count=args.min_count).train(train)
        else:
            tokenizer = load(spec)
        lm = UnigramLM.fit_corpus(train, tokenizer, smoothing=args.smoothing, k=args.k)
        if args.save:
            save_model_dir(args.save, *lm.to_state(), tokenizer=tokenizer)
        desc = f"unigram ({args.smoothing}{'' if args.smoothing == 'mle' else f', k={args.k:g}'}, {spec} tokens)"
        return lm, tokenizer, desc
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
