"""Calibration of any classifier through ``lmlab.eval.calibration``: ECE, MCE, Brier, NLL, a
reliability diagram, and temperature scaling fitted on held-out labelled texts.

A classifier's scores are its logits when it has them (``logits``), else the log of its
probabilities: softmax(log p / T) is temperature scaling of p, the same for every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import DataError
from ..eval.calibration import (
    calibration_summary,
    confidences_from_probs,
    fit_temperature,
    logits_from_probs,
    reliability_diagram,
    softmax,
)


def class_scores(model, texts: Sequence[str]) -> np.ndarray:
    """Logits [N, classes] of a trained classifier (log-probabilities when it has no logits)."""
    if hasattr(model, "logits"):
        return np.asarray(model.logits(texts), dtype=np.float64)
    return logits_from_probs(model.predict_proba(texts))


def label_indices(classes: Sequence[str], labels: Sequence) -> np.ndarray:
    """Each label's index among the classifier's classes; a label it never saw is an error."""
    pos = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(x) for x in labels} - set(pos))
    if unknown:
        raise DataError(f"labels the classifier never saw: {', '.join(map(repr, unknown[:5]))}",
                        f"its classes are {', '.join(map(repr, classes))}")
    return np.array([pos[str(x)] for x in labels], dtype=np.int64)


def calibration_report(model, texts: Sequence[str], labels: Sequence, *,
                       held_out: tuple[Sequence[str], Sequence] | None = None, n_bins: int = 15,
                       reliability_png: str | None = None) -> dict:
    """Calibration of ``model`` on labelled texts; with ``held_out`` (texts, labels) also the
    temperature fitted there and the metrics after scaling. ``reliability_png`` saves the diagram."""
    scores, y = class_scores(model, texts), label_indices(model.classes, labels)
    out = {"bins": n_bins, **calibration_summary(scores, y, n_bins=n_bins)}
    if held_out is not None:
        t = fit_temperature(class_scores(model, held_out[0]), label_indices(model.classes, held_out[1]))
        out["temperature"] = t
        out["scaled"] = calibration_summary(scores, y, t, n_bins)
    if reliability_png:
        conf, hit = confidences_from_probs(softmax(scores), y)
        out["reliability_png"] = reliability_diagram(conf, hit, reliability_png, n_bins=n_bins,
                                                     title=f"{type(model).__name__}")
    return out
