"""Classification metrics: accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import DataError


def _check(y_true: Sequence, y_pred: Sequence) -> None:
    if len(y_true) != len(y_pred):
        raise DataError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise DataError("no labels to score")


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of predictions equal to the truth."""
    _check(y_true, y_pred)
    return float(np.mean([a == b for a, b in zip(y_true, y_pred, strict=True)]))


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> tuple[list, np.ndarray]:
    """(labels, counts) with counts[i, j] = items of true label i predicted as label j."""
    _check(y_true, y_pred)
    labels = sorted(set(y_true) | set(y_pred)) if labels is None else list(labels)
    pos = {lab: i for i, lab in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, b in zip(y_true, y_pred, strict=True):
        counts[pos[a], pos[b]] += 1
    return labels, counts


def macro_f1(y_true: Sequence, y_pred: Sequence) -> float:
    """Unweighted mean over labels of F1 = 2·TP / (2·TP + FP + FN) (0 for a label never seen nor predicted)."""
    _, counts = confusion_matrix(y_true, y_pred)
    tp = np.diag(counts).astype(np.float64)
    denom = counts.sum(0) + counts.sum(1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def report(y_true: Sequence, y_pred: Sequence) -> dict:
    """Accuracy, macro-F1 and the confusion matrix as one JSON-ready dict."""
    labels, counts = confusion_matrix(y_true, y_pred)
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred),
            "labels": [str(x) for x in labels], "confusion_matrix": counts.tolist(), "items": len(y_true)}
