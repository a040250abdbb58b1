"""Calibration: does a model's confidence match how often it is right?

Expected calibration error bins predictions by confidence and averages |accuracy −
confidence| weighted by bin size; bins are equal-width on [0, 1] or equal-mass (the same
number of predictions each). Maximum calibration error is the worst bin; the Brier score is
the mean squared error of the probability vector. Temperature scaling divides the logits by
one scalar T fitted on held-out data (Guo et al., 2017): accuracy is unchanged, NLL is not
raised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError, InputError
from ..core.io import atomic_path
from ..core.plotting import check_png, pyplot
from ..core.validate import check_choice, check_number

STRATEGIES = ("width", "mass")


@dataclass
class CalibrationBins:
    """Per-bin statistics: [lower, upper] confidence edges, counts, mean confidence, accuracy."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        return np.abs(self.accuracy - self.confidence)

    def as_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("lower", "upper", "count", "confidence", "accuracy")}


def _arrays(confidences: Sequence[float], correct: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if conf.size == 0:
        raise InputError("no predictions to evaluate", "pass at least one (confidence, correct) pair")
    if conf.shape != hit.shape:
        raise InputError(f"{conf.size} confidences but {hit.size} correctness values", "pass one of each per prediction")
    if np.any(~np.isfinite(conf)) or np.any((conf < 0) | (conf > 1)):
        raise InputError("confidences must be probabilities in [0, 1]", "pass softmax probabilities, not logits")
    return conf, hit


def calibration_bins(confidences: Sequence[float], correct: Sequence[float], n_bins: int = 15,
                     strategy: str = "width") -> CalibrationBins:
    """Group predictions into ``n_bins`` bins, equal-width (bins (i/B, (i+1)/B]) or equal-mass."""
    check_number("n_bins", n_bins, low=1, integer=True)
    check_choice("strategy", strategy, STRATEGIES)
    conf, hit = _arrays(confidences, correct)
    if strategy == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
        groups = [np.flatnonzero(index == b) for b in range(n_bins)]
        lower, upper = edges[:-1], edges[1:]
    else:
        order = np.argsort(conf, kind="stable")
        groups = [g for g in np.array_split(order, n_bins) if g.size]
        lower = np.array([conf[g].min() for g in groups])
        upper = np.array([conf[g].max() for g in groups])
    count = np.array([g.size for g in groups], dtype=np.int64)
    mean_conf = np.array([conf[g].mean() if g.size else 0.0 for g in groups])
    accuracy = np.array([hit[g].mean() if g.size else 0.0 for g in groups])
    return CalibrationBins(np.asarray(lower), np.asarray(upper), count, mean_conf, accuracy)


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[float], n_bins: int = 15,
                               strategy: str = "width") -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|."""
    bins = calibration_bins(confidences, correct, n_bins, strategy)
    return float((bins.count * bins.gaps).sum() / bins.count.sum())


def maximum_calibration_error(confidences: Sequence[float], correct: Sequence[float], n_bins: int = 15,
                              strategy: str = "width") -> float:
    """MCE = the largest |accuracy − confidence| over non-empty bins."""
    bins = calibration_bins(confidences, correct, n_bins, strategy)
    return float(bins.gaps[bins.count > 0].max())


def brier_score(probs: Sequence, labels: Sequence[int]) -> float:
    """Mean over examples of Σ_k (p_k − 1[k = label])²; a 1-D ``probs`` is P(label = 1)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise InputError(f"probabilities of shape {p.shape} do not match {y.size} labels",
                         "pass an [N, classes] array (or N binary probabilities) and N labels")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise InputError("a label is outside the range of classes")
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def confidences_from_probs(probs: Sequence, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(top-class probability, 1 if the top class is the label) per example."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


# --- temperature scaling --------------------------------------------------------------------------
def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll(logits: Sequence, labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    return float(-_log_softmax(z / temperature)[np.arange(y.size), y].mean())


def fit_temperature(logits: Sequence, labels: Sequence[int], *, low: float = 1e-2, high: float = 1e2,
                    iterations: int = 100) -> float:
    """The T > 0 minimising held-out NLL of softmax(logits / T).

    NLL is convex in 1/T, so a golden-section search over log T finds the minimum; T = 1 is
    kept when nothing beats it, so the fitted T never raises the NLL of the data it saw.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.size or y.size == 0:
        raise InputError(f"logits of shape {z.shape} do not match {y.size} labels",
                         "pass held-out logits [N, classes] and N labels")
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(z, y, math.exp(c)), nll(z, y, math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(z, y, math.exp(d))
    best = math.exp((a + b) / 2)
    return best if nll(z, y, best) <= nll(z, y, 1.0) else 1.0


def softmax(logits: Sequence, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of softmax(logits / T), row-wise."""
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def logits_from_probs(probs: Sequence) -> np.ndarray:
    """log p, which stands in for logits: softmax(log p / T) is temperature scaling of p (0 → log 1e-300)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))


def calibration_summary(logits: Sequence, labels: Sequence[int], temperature: float = 1.0, n_bins: int = 15,
                        strategy: str = "width") -> dict:
    """ECE and MCE (``strategy`` bins), Brier score and NLL (nats) of softmax(logits / T)."""
    probs = softmax(logits, temperature)
    conf, hit = confidences_from_probs(probs, labels)
    return {"ece": expected_calibration_error(conf, hit, n_bins, strategy),
            "mce": maximum_calibration_error(conf, hit, n_bins, strategy),
            "brier": brier_score(probs, labels), "nll": nll(logits, labels, temperature)}


# --- reliability diagram ---------------------------------------------------------------------------
def reliability_diagram(confidences: Sequence[float], correct: Sequence[float], path: str, *, n_bins: int = 15,
                        strategy: str = "width", title: str = "Reliability diagram") -> str:
    """Save a PNG: accuracy per confidence bin against the diagonal of perfect calibration."""
    plt = pyplot("the reliability diagram")
    check_png(path, "reliability diagram")
    bins = calibration_bins(confidences, correct, n_bins, strategy)
    ece = float((bins.count * bins.gaps).sum() / bins.count.sum())
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    keep = bins.count > 0
    width = (bins.upper - bins.lower)[keep]
    ax.bar(bins.lower[keep], bins.accuracy[keep], width=np.maximum(width, 0.01), align="edge",
           edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(bins.confidence[keep], bins.accuracy[keep], "o", color="red", markersize=3, label="mean confidence")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title=f"{title}\nECE ({strategy}, {n_bins} bins) = {ece:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return str(path)


def read_predictions(path: str) -> dict:
    """A JSONL file of predictions as arrays: per record 'logits' or 'probs' with a 'label' (then
    ``logits`` — log-probabilities stand in for them —, ``labels``, ``confidence``, ``correct``), or
    'confidence' and 'correct' only."""
    from .records import read_jsonl

    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path} has no predictions")
    if all("confidence" in r and "correct" in r for r in records):
        return {"confidence": np.array([float(r["confidence"]) for r in records]),
                "correct": np.array([float(bool(r["correct"])) for r in records])}
    key = "logits" if all("logits" in r for r in records) else "probs"
    if not all(key in r and "label" in r for r in records):
        raise DataError(f"{path}: every record needs 'logits' or 'probs' and 'label', or 'confidence' and 'correct'")
    widths = {len(r[key]) for r in records}
    if len(widths) != 1:
        raise DataError(f"{path}: records have different numbers of classes {sorted(widths)}",
                        "give every record the same classes")
    values = np.array([r[key] for r in records], dtype=np.float64)
    labels = np.array([int(r["label"]) for r in records])
    if labels.min() < 0 or labels.max() >= values.shape[1]:
        raise DataError(f"{path}: a label is outside 0..{values.shape[1] - 1}")
    logits = values if key == "logits" else logits_from_probs(values)
    conf, hit = confidences_from_probs(softmax(logits), labels)
    return {"logits": logits, "labels": labels, "confidence": conf, "correct": hit}
