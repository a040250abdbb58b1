"""What every classifier shares: label encoding, class weights, and predict/score from predict_proba."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import DataError, ModelError
from ..core.validate import check_choice
from .metrics import accuracy

CLASS_WEIGHTS = ("none", "balanced")


def encode_labels(texts: Sequence[str], labels: Sequence) -> tuple[list[str], np.ndarray]:
    """(sorted class names, label indices); labels are compared as strings."""
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} labels", "give one label per text")
    names = [str(x) for x in labels]
    classes = sorted(set(names))
    if len(classes) < 2:
        raise DataError(f"the labels have only one class ({classes[0] if classes else 'none'!r})",
                        "a classifier needs examples of at least two classes")
    pos = {c: i for i, c in enumerate(classes)}
    return classes, np.array([pos[n] for n in names], dtype=np.int64)


def class_weights(y: np.ndarray, n_classes: int, mode: str = "none") -> np.ndarray:
    """Per-class weights: ones, or n / (K · count_k) for ``balanced`` (scikit-learn's rule)."""
    check_choice("class_weight", mode, CLASS_WEIGHTS)
    if mode == "none":
        return np.ones(n_classes)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return len(y) / (n_classes * np.maximum(counts, 1))


class ClassifierMixin:
    """``predict`` and ``score`` for a classifier with ``classes`` and ``predict_proba``."""

    classes: list[str] | None = None

    def _check_fitted(self) -> None:
        if self.classes is None:
            raise ModelError(f"this {type(self).__name__} is not trained yet", "call fit(texts, labels) first")

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable class of each text."""
        proba = self.predict_proba(texts)
        return [self.classes[i] for i in proba.argmax(axis=1)]

    def score(self, texts: Sequence[str], labels: Sequence) -> float:
        """Accuracy on labelled texts."""
        return accuracy([str(x) for x in labels], self.predict(texts))
