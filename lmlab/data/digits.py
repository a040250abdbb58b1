"""scikit-learn's handwritten digits (1,797 8×8 grey images, UCI optdigits) with captions made from
their labels, split into train and held-out parts by a seeded stratified draw: a real image set that
ships inside a Python package, for the vision–language models (``lmlab.models.vision``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..core.errors import MissingDependencyError
from ..core.validate import check_choice, check_number

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten {name}", "the digit {name}", "a picture of the number {name}", "a {name} written by hand")


@dataclass
class Digits:
    """Images [N, 8, 8] in [0, 1], labels [N] and one caption per image."""

    images: torch.Tensor
    labels: torch.Tensor
    captions: list[str]


def caption(label: int, template: int = 0) -> str:
    """The caption of a digit: ``TEMPLATES[template]`` with its name."""
    return TEMPLATES[template].format(name=NAMES[label])


def load_digits(split: str = "train", *, held_out: float = 0.2, seed: int = 0) -> Digits:
    """The ``split`` ('train', 'test' or 'all') of the digits; each image captioned with a template drawn
    by ``seed`` (so captions vary); ``held_out`` of every class is the test split."""
    check_choice("split", split, ("train", "test", "all"))
    check_number("held_out", held_out, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise MissingDependencyError("scikit-learn", "the digits images") from None
    data = sklearn_digits()
    rng = random.Random(seed)
    test: set[int] = set()
    for label in range(10):
        rows = [i for i, y in enumerate(data.target) if y == label]
        test.update(rng.sample(rows, round(held_out * len(rows))))
    keep = [i for i in range(len(data.target)) if split == "all" or (i in test) == (split == "test")]
    labels = [int(data.target[i]) for i in keep]
    captions = [caption(y, rng.randrange(len(TEMPLATES))) for y in labels]
    images = torch.tensor(data.images[keep], dtype=torch.float32) / 16.0
    return Digits(images, torch.tensor(labels), captions)
