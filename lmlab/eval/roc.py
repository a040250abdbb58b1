"""The ROC curve and the area under it (AUROC) of a scalar score separating two classes.

AUROC is the probability that a randomly drawn positive scores higher than a randomly drawn
negative, ties counting one half — the Mann–Whitney U statistic divided by n₊·n₋
(Hanley & McNeil 1982). It is computed from average ranks, so ties are exact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..core.errors import DataError
from ..core.io import atomic_path
from ..core.plotting import check_png, pyplot


def _checked(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if s.shape != y.shape or s.ndim != 1:
        raise DataError(f"{s.size} scores but {y.size} labels", "give one score and one 0/1 label per example")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (negative) or 1 (positive)", "encode the two classes as 0 and 1")
    if y.min(initial=1) == y.max(initial=0):
        raise DataError("AUROC needs examples of both classes", "add positive and negative examples")
    if not np.isfinite(s).all():
        raise DataError("a score is NaN or infinite", "drop the examples whose score could not be computed")
    return s, y.astype(bool)


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` (higher = more positive) for 0/1 ``labels``."""
    s, y = _checked(scores, labels)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for lo, hi in zip(starts, ends, strict=True):  # tied scores share their average rank (1-based)
        ranks[order[lo:hi]] = (lo + hi + 1) / 2
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) at every distinct threshold, from (0, 0) to (1, 1)."""
    s, y = _checked(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # the last example of each tied group
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def plot_roc(curves: dict[str, tuple[Sequence[float], Sequence[int]]], path: str | os.PathLike, *,
             title: str = "ROC") -> str:
    """Save a PNG with one ROC curve per named (scores, labels) pair, its AUROC in the legend."""
    plt = pyplot("the ROC plot")
    check_png(path, "ROC plot")
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    for name, (scores, labels) in curves.items():
        fpr, tpr = roc_curve(scores, labels)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(scores, labels):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return str(path)
