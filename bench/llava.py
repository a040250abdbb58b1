"""A LLaVA-style model on scikit-learn's digits: the image encoder of a CLIP-style dual encoder trained on
the digits (``digits_clip``), frozen; SmolLM2-135M-Instruct, frozen; a projector (LLaVA-1.5's two-layer
MLP) trained on answers to "Which digit is this?" and "Is it an even number?" about the training images.
Reported: answer accuracy on the held-out images (the highest-scoring candidate answer), against the blind
model — the same training with every image blanked, so it can learn the answers' prior only — and the
CLIP encoder's own zero-shot accuracy. Last line of stdout: one JSON object.

    python bench/llava.py [--steps 150] [--batch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmlab.data.digits import load_digits  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.models.llava import VisionLanguageModel  # noqa: E402
from lmlab.train.clip import digits_clip  # noqa: E402
from lmlab.train.llava import answer_accuracy, train_projector  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="projector training steps")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip-steps", type=int, default=600)
    ap.add_argument("--test-images", type=int, default=0, help="held-out images scored (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "threads": args.threads,
                 "load_start": os.getloadavg()[0]}
    train, test = load_digits("train", seed=args.seed), load_digits("test", seed=args.seed)
    if args.test_images:
        test.images, test.labels = test.images[:args.test_images], test.labels[:args.test_images]
    out["train_images"], out["test_images"] = len(train.labels), len(test.labels)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        clip = digits_clip(Path(work) / "clip", steps=args.clip_steps, seed=args.seed)
        out["clip_zero_shot_accuracy"] = clip.scores["zero_shot_accuracy"]
        out["clip_seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({"clip": clip.scores}), file=sys.stderr, flush=True)
        for name, blind in (("llava", False), ("blind", True)):
            lm, tok = load_model("smollm2-135m-instruct")
            torch.manual_seed(args.seed)
            model = VisionLanguageModel(clip.model.image, lm.float(), blind=blind)
            start = time.perf_counter()
            result = train_projector(model, tok, train, Path(work) / name, steps=args.steps,
                                     batch_size=args.batch_size, lr=args.lr, seed=args.seed)
            seconds = time.perf_counter() - start
            row = {"accuracy": answer_accuracy(model, tok, test), "train_seconds": round(seconds, 1),
                   "final_loss": round(result.final_loss, 4),
                   "load": os.getloadavg()[0]}
            out[name] = row
            print(json.dumps({name: row}), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
