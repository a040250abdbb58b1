"""``lmlab adapters list|merge``: find saved PEFT adapters, and fold one into its base model.

``list`` shows every adapter directory under the given paths (method, size, base fingerprint,
and the finetune results when ``finetune.json`` is there). ``merge`` loads the base model,
applies the adapter, merges it into the weights (LoRA, QLoRA, IA3; full fine-tuning is already
whole) and writes an ordinary model directory that needs no adapter at inference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_common, check_outputs, emit, status, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapters", help="list saved adapters, or merge one into its base model")
    verbs = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = verbs.add_parser("list", help="adapter directories under the given paths")
    ls.add_argument("paths", nargs="*", default=["."], help="directories to search (default: .)")
    add_common(ls)
    ls.set_defaults(func=run_list)
    mg = verbs.add_parser("merge", help="merge an adapter into its base model and save a full model directory")
    mg.add_argument("--model", default="smollm2-135m-instruct", help="the base model the adapter was trained on")
    mg.add_argument("--adapter", required=True, help="the adapter directory (lmlab finetune --out)")
    mg.add_argument("--out", required=True, help="directory for the merged model")
    add_common(mg)
    mg.set_defaults(func=run_merge)


def describe(path: Path) -> dict:
    """What one adapter directory holds: method, config, parameter count, bytes, base fingerprint."""
    from ..peft import read_adapter

    rec, tensors = read_adapter(path)
    info = {"path": str(path), "method": rec.get("method"), "config": rec.get("config", {}),
            "params": sum(t.numel() for t in tensors.values()),
            "bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
            "base_sha256": rec["base"]["sha256"][:16]}
    results = path / "finetune.json"
    if results.is_file():
        done = json.loads(results.read_text(encoding="utf-8"))
        info.update({k: done.get(k) for k in ("model", "steps", "eval_loss_before", "eval_loss_after")})
    return info


def run_list(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..peft.saving import ADAPTER_CONFIG

    found = []
    for root in map(Path, args.paths):
        if not root.exists():
            raise InputError(f"no such directory: {root}", "pass directories that hold adapters")
        configs = [root / ADAPTER_CONFIG] if (root / ADAPTER_CONFIG).is_file() else sorted(root.rglob(ADAPTER_CONFIG))
        found += [describe(c.parent) for c in configs]
    rows = [[a["path"], a["method"], f"{a['params']:,}", f"{a['bytes'] / 2**20:.2f} MiB", a["base_sha256"],
             "" if a.get("eval_loss_after") is None else f"{a['eval_loss_before']:.3f} → {a['eval_loss_after']:.3f}"]
            for a in found]
    human = table(rows, ["adapter", "method", "params", "size", "base", "held-out loss"]) if found \
        else f"no adapters under {', '.join(args.paths)}"
    emit(args, {"adapters": found}, human)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..models import load_model, save_model_dir
    from ..peft import load_adapter, merge_and_unload
    from ..peft.record import RECORD_ATTR, record_of

    check_outputs(args, dirs=("out",))
    status(args, f"loading {args.model} ...")
    lm, tokenizer = load_model(args.model)
    if not hasattr(lm, "to_state"):
        raise ConfigError(f"{args.model} is not a neural model", "merge adapters into the model they were trained on")
    base_keys = set(lm.state_dict())
    load_adapter(lm, args.adapter)
    method = record_of(lm)["method"]
    if method == "full":
        object.__setattr__(lm, RECORD_ATTR, None)  # the weights are the fine-tuned model already
    elif method in ("lora", "qlora", "ia3"):
        merge_and_unload(lm)
    else:
        raise ConfigError(f"a {method} adapter cannot be merged into the base weights",
                          "only lora, qlora, ia3 and full merge; use it with --adapter instead")
    extra = sorted(set(lm.state_dict()) - base_keys)
    if extra:  # e.g. QLoRA leaves no extras, but a method that added tensors would
        raise ConfigError(f"the merged model has tensors the base has no place for ({', '.join(extra[:3])})",
                          "use the adapter with --adapter instead")
    for p in lm.parameters():
        p.requires_grad_(False)
    out = save_model_dir(args.out, *lm.to_state(), tokenizer=tokenizer)
    emit(args, {"model": str(args.model), "adapter": args.adapter, "method": method, "out": str(out)},
         f"merged the {method} adapter into {args.model}: {out}")
    return 0
