"""Benchmark: a CLIP-style dual encoder (ViT patch encoder + caption encoder, symmetric InfoNCE on the one
trainer) on scikit-learn's digits, held-out fifth of each class: zero-shot accuracy (the nearest class
caption ensemble), text→image precision@10 per class caption, and a linear probe on the frozen image
features — against scikit-learn's logistic regression on the raw pixels (same split) and chance (10 %).

Run: python bench/vision.py [--steps 600] [--d-model 64]
The last line printed is one JSON object.
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
from lmlab.train.clip import digits_clip  # noqa: E402


def logistic_accuracy(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = load_digits("train", seed=args.seed), load_digits("test", seed=args.seed)
    out: dict = {"steps": args.steps, "d_model": args.d_model, "train_images": len(train.labels),
                 "test_images": len(test.labels), "load_before": os.getloadavg()[0]}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = digits_clip(tmp, d_model=args.d_model, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed)
    out["train_s"] = round(time.perf_counter() - start, 1)
    out["final_loss"] = round(run.train.final_loss, 4)
    out.update({k: round(v, 4) for k, v in run.scores.items()})
    with torch.no_grad():
        features = [run.model.image(x.images)[0].numpy() for x in (train, test)]
    out["linear_probe_accuracy"] = round(logistic_accuracy(features[0], train.labels.numpy(), features[1],
                                                           test.labels.numpy()), 4)
    out["peer_logistic_pixels_accuracy"] = round(logistic_accuracy(train.images.flatten(1).numpy(),
                                                                   train.labels.numpy(),
                                                                   test.images.flatten(1).numpy(),
                                                                   test.labels.numpy()), 4)
    out["chance"] = 0.1
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
