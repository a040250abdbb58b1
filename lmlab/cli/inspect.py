"""``lmlab inspect``: look inside a transformer — attention maps, the logit lens, activation and path
patching, head ablation, steering vectors, linear probes and sparse autoencoders (``lmlab.interp``)."""

from __future__ import annotations

import argparse

from .common import add_common, check_outputs, emit, status, table

PATCH_CHOICES = ("resid_pre", "resid_post", "attn_out", "mlp_out", "heads", "ablation")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="interpretability: attention maps, logit lens, patching, steering, probes, SAEs")
    verbs = p.add_subparsers(dest="inspect_verb", metavar="ACTION", required=True)

    a = verbs.add_parser("attention", help="one layer's attention weights as a PNG heat map")
    _model(a)
    a.add_argument("--prompt", required=True, help="the text whose attention to draw")
    a.add_argument("--layer", type=int, required=True, help="layer (0-based)")
    a.add_argument("--head", type=int, help="one head (default: the mean over heads)")
    a.add_argument("--out", required=True, help="the .png file to write")
    add_common(a).set_defaults(func=run_attention)

    lens = verbs.add_parser("logit-lens", help="each layer's top next tokens (residual stream through the output head)")
    _model(lens)
    lens.add_argument("--prompt", required=True, help="the text to read")
    lens.add_argument("--top", type=int, default=5, help="tokens shown per layer (default 5)")
    lens.add_argument("--position", type=int, default=-1, help="token position to read (default -1: the last)")
    add_common(lens).set_defaults(func=run_logit_lens)

    pt = verbs.add_parser("patch", help="activation patching, path patching or head ablation between two prompts")
    _model(pt)
    pt.add_argument("--clean", required=True, help="the clean prompt")
    pt.add_argument("--corrupted", required=True, help="the corrupted prompt (same number of tokens)")
    pt.add_argument("--right", required=True, help="the answer the clean prompt should give (one token)")
    pt.add_argument("--wrong", required=True, help="the answer the corrupted prompt gives (one token)")
    pt.add_argument("--site", choices=PATCH_CHOICES, default="resid_pre",
                    help="what to patch clean→corrupted per (layer, position): a stream site, each head's "
                         "output (heads), or zero-ablate each head on the clean prompt (ablation)")
    pt.add_argument("--sender", help="path patching instead: the sender head LAYER.HEAD (corrupted → clean)")
    pt.add_argument("--receiver", type=int, help="path patching: the receiving layer (default: the logits)")
    add_common(pt).set_defaults(func=run_patch)

    st = verbs.add_parser("steer", help="add a steering vector (difference of mean activations) while generating")
    _model(st)
    st.add_argument("--positive", action="append", required=True, help="a prompt on the side to steer towards (repeatable)")
    st.add_argument("--negative", action="append", required=True, help="a prompt on the side to steer away from (repeatable)")
    st.add_argument("--layer", type=int, required=True, help="the layer whose input stream gets the vector")
    st.add_argument("--scale", type=float, default=4.0, help="multiple of the vector added (default 4)")
    st.add_argument("--prompt", required=True, help="the prompt to continue, with and without steering")
    st.add_argument("--max-new-tokens", type=int, default=30, help="tokens generated (greedy, default 30)")
    add_common(st).set_defaults(func=run_steer)

    pr = verbs.add_parser("probe", help="linear probes on cached activations, layer by layer")
    _model(pr)
    pr.add_argument("--data", required=True, help="NAME:SPLIT (sst2:dev, agnews:test) or a text<TAB>label file")
    pr.add_argument("--limit", type=int, default=400, help="labelled texts used, from the start (default 400)")
    pr.add_argument("--layer", type=int, action="append", help="a layer to probe (repeatable; default: every layer)")
    pr.add_argument("--pool", choices=("last", "mean"), default="last", help="each text's last token or mean (default last)")
    pr.add_argument("--test-fraction", type=float, default=0.25, help="held-out share of the rows (default 0.25)")
    pr.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression (default 1)")
    pr.add_argument("--max-tokens", type=int, default=128, help="tokens kept per text (default 128)")
    add_common(pr).set_defaults(func=run_probe)

    sa = verbs.add_parser("sae", help="train a sparse autoencoder on one layer's residual stream")
    _model(sa)
    sa.add_argument("--data", required=True, help="a text file, one text per line")
    sa.add_argument("--layer", type=int, required=True, help="the layer whose input stream (resid_pre) to learn")
    sa.add_argument("--features", type=int, required=True, help="dictionary size (at least d_model)")
    sa.add_argument("--sparsity", choices=("topk", "l1"), default="topk", help="top-k (default) or an L1 penalty")
    sa.add_argument("--k", type=int, default=32, help="active features per token for top-k (default 32)")
    sa.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (default 5)")
    sa.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    sa.add_argument("--batch-size", type=int, default=256, help="activation rows per step (default 256)")
    sa.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate (default 4e-4)")
    sa.add_argument("--resample-every", type=int, default=500, help="resample dead features every N steps (0: never)")
    sa.add_argument("--allow-undercomplete", action="store_true", help="allow fewer features than d_model")
    sa.add_argument("--max-texts", type=int, default=2000, help="texts read from --data (default 2000)")
    sa.add_argument("--max-tokens", type=int, default=128, help="tokens kept per text (default 128)")
    sa.add_argument("--show", type=int, default=5, help="features shown with their top examples (default 5)")
    sa.add_argument("--out", required=True, help="directory for the SAE, its training metrics and examples")
    sa.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_common(sa).set_defaults(func=run_sae)


def _model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a transformer model directory or a built-in name "
                                                       "(e.g. smollm2-135m-instruct)")


def _load(args: argparse.Namespace):
    from ..core.errors import ModelError
    from ..models import load_model

    status(args, f"loading {args.model}")
    lm, tokenizer = load_model(args.model)
    if not hasattr(lm, "blocks") or not hasattr(lm, "add_hook"):
        raise ModelError(f"{args.model} is a {type(lm).__name__}, which has no hook points",
                         "inspect a transformer model")
    if tokenizer is None:
        raise ModelError(f"{args.model} has no tokenizer.json", "save the model with its tokenizer")
    return lm.eval(), tokenizer


def _ids(tokenizer, text: str, what: str, limit: int | None = None) -> list[int]:
    from ..core.errors import InputError

    ids = tokenizer.encode(text)
    if not ids:
        raise InputError(f"the {what} has no tokens", f"give a non-empty {what}")
    return ids[:limit] if limit else ids


def _one_token(tokenizer, text: str, what: str) -> int:
    from ..core.errors import InputError

    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise InputError(f"--{what} {text!r} is {len(ids)} tokens, not one",
                         "give an answer that is a single token (often with a leading space, e.g. ' Paris')")
    return ids[0]


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def run_attention(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..interp.attention import attention_patterns, plot_attention

    check_outputs(args, files=("out",))
    lm, tokenizer = _load(args)
    ids = _ids(tokenizer, args.prompt, "prompt")
    patterns = attention_patterns(lm, ids, args.layer)
    if args.head is not None:
        check_number("--head", args.head, low=0, high=patterns.shape[0] - 1, integer=True)
    shown = patterns.mean(0) if args.head is None else patterns[args.head]
    title = f"layer {args.layer}, " + ("mean of heads" if args.head is None else f"head {args.head}")
    plot_attention(shown, _pieces(tokenizer, ids), args.out, title=title)
    emit(args, {"layer": args.layer, "head": args.head, "tokens": _pieces(tokenizer, ids), "out": args.out,
                "pattern": [[round(v, 5) for v in row] for row in shown.tolist()]}, f"wrote {args.out} ({title})")
    return 0


def run_logit_lens(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..interp.lens import lens_top_tokens

    check_number("--top", args.top, low=1, integer=True)
    lm, tokenizer = _load(args)
    ids = _ids(tokenizer, args.prompt, "prompt")
    check_number("--position", args.position, low=-len(ids), high=len(ids) - 1, integer=True)
    rows = lens_top_tokens(lm, tokenizer, ids, top=min(args.top, lm.vocab_size), position=args.position)
    human = table([[r["layer"], "  ".join(f"{t!r} {p:.3f}" for t, p in zip(r["tokens"], r["probs"], strict=True))]
                   for r in rows], ["layer", "top next tokens (probability)"])
    emit(args, {"model": args.model, "prompt": args.prompt, "position": args.position, "layers": rows}, human)
    return 0


def run_patch(args: argparse.Namespace) -> int:
    import torch

    from ..core.errors import ConfigError
    from ..interp.patching import (
        ablation_scan,
        activation_patching,
        head_patching,
        logit_difference,
        path_patching,
        run_metric,
    )

    lm, tokenizer = _load(args)
    clean = torch.tensor([_ids(tokenizer, args.clean, "clean prompt")])
    corrupted = torch.tensor([_ids(tokenizer, args.corrupted, "corrupted prompt")])
    metric = logit_difference(_one_token(tokenizer, args.right, "right"), _one_token(tokenizer, args.wrong, "wrong"))
    result = {"model": args.model, "metric": "logit difference right − wrong at the last position",
              "clean": run_metric(lm, clean, metric), "corrupted": run_metric(lm, corrupted, metric)}
    if args.receiver is not None and args.sender is None:
        raise ConfigError("--receiver is part of path patching", "give the sender head too: --sender LAYER.HEAD")
    if args.sender is not None:
        try:
            layer, head = (int(x) for x in args.sender.split("."))
        except ValueError:
            raise ConfigError(f"--sender {args.sender!r} is not LAYER.HEAD", "e.g. --sender 9.6") from None
        value = path_patching(lm, clean, corrupted, metric, sender=(layer, head), receiver=args.receiver)
        result.update(sender=args.sender, receiver="logits" if args.receiver is None else args.receiver,
                      path_patched=value)
        human = (f"clean {result['clean']:.4f}  corrupted {result['corrupted']:.4f}  "
                 f"path {args.sender} → {result['receiver']}: {value:.4f}")
        emit(args, result, human)
        return 0
    status(args, f"patching {args.site} over {len(lm.blocks)} layers")
    if args.site == "heads":
        grid, columns = head_patching(lm, clean, corrupted, metric), "head"
    elif args.site == "ablation":
        grid, columns = ablation_scan(lm, clean, metric), "head"
    else:
        grid, columns = activation_patching(lm, clean, corrupted, metric, site=args.site), "position"
    result.update(site=args.site, columns=columns, values=[[round(v, 5) for v in row] for row in grid.tolist()])
    if columns == "position":
        result["tokens"] = _pieces(tokenizer, clean[0].tolist())
    header = ["layer"] + [str(c) for c in range(grid.shape[1])]
    human = (f"clean {result['clean']:.4f}  corrupted {result['corrupted']:.4f}  ({args.site}; columns: {columns})\n"
             + table([[i] + [f"{v:.3f}" for v in row] for i, row in enumerate(grid.tolist())], header))
    emit(args, result, human)
    return 0


def run_steer(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..generate.engine import Engine
    from ..generate.loop import Request
    from ..interp.steering import steering_hooks, steering_vector
    from ..models.hooks import hooked

    check_number("--max-new-tokens", args.max_new_tokens, low=1, integer=True)
    lm, tokenizer = _load(args)
    positive = [_ids(tokenizer, t, "positive prompt") for t in args.positive]
    negative = [_ids(tokenizer, t, "negative prompt") for t in args.negative]
    vector = steering_vector(lm, positive, negative, args.layer)
    engine = Engine(lm, tokenizer, greedy=True)
    request = Request(_ids(tokenizer, args.prompt, "prompt"), max_new_tokens=args.max_new_tokens)
    plain = engine.generate([request])[0].text
    with hooked(lm, steering_hooks(vector, args.layer, args.scale)):
        steered = engine.generate([request])[0].text
    result = {"model": args.model, "layer": args.layer, "scale": args.scale, "vector_norm": float(vector.norm()),
              "prompt": args.prompt, "plain": plain, "steered": steered}
    emit(args, result, f"plain:   {args.prompt}{plain}\nsteered: {args.prompt}{steered}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from ..classify.data import load_labeled
    from ..core.validate import check_number
    from ..interp.probe import fit_probe, probe_features

    check_number("--limit", args.limit, low=2, integer=True)
    check_number("--max-tokens", args.max_tokens, low=1, integer=True)
    check_number("--test-fraction", args.test_fraction, low=0.0, high=1.0, high_inclusive=False)
    check_number("--C", args.C, low=0.0, low_inclusive=False)
    texts, labels = load_labeled(args.data)
    texts, labels = texts[:args.limit], labels[:args.limit]
    lm, tokenizer = _load(args)
    layers = args.layer or list(range(len(lm.blocks)))
    for layer in layers:
        check_number("--layer", layer, low=0, high=len(lm.blocks) - 1, integer=True)
    prompts = [_ids(tokenizer, text, "text", args.max_tokens) for text in texts]
    status(args, f"caching {len(prompts)} texts at {len(layers)} layer(s)")
    features = probe_features(lm, prompts, layers, pool=args.pool)
    rows = []
    for layer, x in zip(layers, features, strict=True):
        fit = fit_probe(x, labels, test_fraction=args.test_fraction, C=args.C)
        rows.append({"layer": layer, "train_accuracy": fit.train_accuracy, "test_accuracy": fit.test_accuracy,
                     "n_train": fit.n_train, "n_test": fit.n_test})
    human = table([[r["layer"], f"{r['train_accuracy']:.3f}", f"{r['test_accuracy']:.3f}"] for r in rows],
                  ["layer", "train acc", "held-out acc"])
    emit(args, {"model": args.model, "pool": args.pool, "classes": sorted({str(v) for v in labels}),
                "layers": rows}, human)
    return 0


def run_sae(args: argparse.Namespace) -> int:
    from ..core.io import write_json
    from ..core.validate import check_number
    from ..data import text_file
    from ..interp.sae import SAEConfig, collect_activations, save_sae, top_examples, train_sae

    check_outputs(args, dirs=("out",))
    for name in ("steps", "batch_size", "max_texts", "max_tokens"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), low=1, integer=True)
    check_number("--show", args.show, low=0, integer=True)
    check_number("--seed", args.seed, low=0, integer=True)
    check_number("--lr", args.lr, low=0.0, low_inclusive=False)
    lm, tokenizer = _load(args)
    check_number("--layer", args.layer, low=0, high=len(lm.blocks) - 1, integer=True)
    config = SAEConfig(lm.config.d_model, args.features, sparsity=args.sparsity, k=args.k, l1=args.l1,
                       resample_every=args.resample_every, allow_undercomplete=args.allow_undercomplete)
    texts = [t for _, t in zip(range(args.max_texts), text_file(args.data), strict=False)]
    sequences = [ids for ids in (tokenizer.encode(t)[:args.max_tokens] for t in texts) if len(ids) > 1]
    name = f"blocks.{args.layer}.resid_pre"
    status(args, f"caching {name} over {len(sequences)} texts")
    acts, where = collect_activations(lm, sequences, name)
    status(args, f"training a {args.sparsity} SAE of {args.features} features on {len(acts)} activations")
    sae, metrics = train_sae(acts, config, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed)
    counts = (sae.encode(acts) > 0).sum(0)
    shown = []
    for feature in counts.argsort(descending=True)[:args.show].tolist():
        examples = top_examples(sae, acts, where, sequences, feature, k=5)
        shown.append({"feature": feature, "fires": int(counts[feature]),
                      "examples": [{"activation": round(e["activation"], 4),
                                    "context": tokenizer.decode(e["context"][:-1]),
                                    "token": tokenizer.decode(e["context"][-1:])} for e in examples]})
    info = {"model": args.model, "hook": name, "tokens": len(acts), "steps": args.steps, **metrics}
    save_sae(sae, args.out, info)
    write_json(f"{args.out}/features.json", shown)
    human = (f"{name}: FVE {metrics['fve']:.4f}  L0 {metrics['l0']:.2f}  dead {metrics['dead_fraction']:.3f}  "
             f"({len(acts)} tokens) → {args.out}\n"
             + "\n".join(f"feature {s['feature']} (fires on {s['fires']}): "
                         + " | ".join(f"…{e['context'][-30:]}[{e['token']}]" for e in s["examples"][:3])
                         for s in shown))
    emit(args, {**info, "out": args.out, "features": shown}, human)
    return 0
