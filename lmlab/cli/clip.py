"""``lmlab clip``: a CLIP-style image–text dual encoder (Radford et al., 2021) — a small ViT and a caption
encoder trained with the symmetric InfoNCE loss on scikit-learn's digits and captions made from their
labels, evaluated on the held-out digits (``lmlab.train.clip``)."""

from __future__ import annotations

import argparse

from .common import add_common, check_outputs, emit, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clip", help="train a CLIP-style image–text model on scikit-learn's digits",
                       description="Train a ViT patch encoder and a caption encoder into one space (symmetric "
                                   "InfoNCE) on the 8×8 digits with label captions; report zero-shot accuracy and "
                                   "text→image precision@10 on the held-out fifth; RUN/model is the model.")
    p.add_argument("--out", required=True, help="run directory (metrics, checkpoint, the model in OUT/model)")
    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=64, help="width of both encoders and of the shared space")
    g.add_argument("--image-layers", type=int, default=2)
    g.add_argument("--text-layers", type=int, default=1)
    g.add_argument("--n-heads", type=int, default=4)
    g.add_argument("--patch-size", type=int, default=2, help="side of the square patches (divides 8)")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=600)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--temperature", type=float, default=0.1)
    g.add_argument("--seed", type=int, default=0)
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.validate import check_number
    from ..train.clip import digits_clip

    check_outputs(args, dirs=("out",))
    for name in ("steps", "d_model", "image_layers", "text_layers", "n_heads", "patch_size"):
        check_number(name, getattr(args, name), low=1, integer=True)
    status(args, f"training a CLIP-style dual encoder on the digits into {args.out}")
    run_ = digits_clip(args.out, d_model=args.d_model, image_layers=args.image_layers, text_layers=args.text_layers,
                       n_heads=args.n_heads, patch_size=args.patch_size, steps=args.steps,
                       batch_size=args.batch_size, lr=args.lr, temperature=args.temperature, seed=args.seed)
    s = run_.scores
    summary = {"model_dir": str(run_.model_dir), "steps": run_.train.steps, "final_loss": run_.train.final_loss,
               "seconds": run_.train.seconds, **s, "chance": 0.1}
    emit(args, summary, f"trained {run_.train.steps} steps in {run_.train.seconds:.1f} s\nheld-out digits: zero-shot "
                        f"accuracy {s['zero_shot_accuracy']:.4f} (chance 0.1), text→image precision@10 "
                        f"{s['text_to_image_precision@10']:.4f}\nmodel: {run_.model_dir}")
    return 0
