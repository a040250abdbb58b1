"""MAUVE (Pillutla et al., 2021): how close the distribution of generated text is to human text.

Both sets of texts are embedded with any sentence ``encoder(texts) -> array[N, D]``,
L2-normalised, reduced by PCA to 90 % of the variance and quantised jointly with k-means
(k = N/10 by default); the two cluster histograms P (human) and Q (model) give the
divergence frontier {(exp(−c·KL(Q‖R)), exp(−c·KL(P‖R))) : R = λP + (1 − λ)Q} and MAUVE is
the area under it (1 when the histograms agree, near 0 when they do not overlap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.validate import check_number

SentenceEncoder = Callable[[list[str]], np.ndarray]


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) of two histograms; infinite when p has mass where q has none."""
    if np.any((p > 0) & (q == 0)):
        return float("inf")
    keep = (p > 0) & (q > 0)
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))


def divergence_curve(p: np.ndarray, q: np.ndarray, *, points: int = 25, scaling: float = 5.0) -> np.ndarray:
    """The frontier as [points + 2, 2]: from (1, 0) through the mixtures to (0, 1)."""
    curve = [[0.0, np.inf]]
    for w in np.linspace(1e-6, 1 - 1e-6, points):
        r = w * p + (1 - w) * q
        curve.append([kl_divergence(q, r), kl_divergence(p, r)])
    curve.append([np.inf, 0.0])
    return np.exp(-scaling * np.asarray(curve))


def mauve_from_histograms(p: Sequence[float], q: Sequence[float], *, points: int = 25, scaling: float = 5.0) -> float:
    """The area under the divergence frontier of histograms ``p`` and ``q`` (trapezoids)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    curve = divergence_curve(p, q, points=points, scaling=scaling)
    x, y = curve[:, 0], curve[:, 1]  # x falls from 1 to 0
    return float(np.sum((x[:-1] - x[1:]) * (y[:-1] + y[1:]) / 2))


def kmeans(data: np.ndarray, k: int, *, seed: int = 0, restarts: int = 5, iterations: int = 300) -> np.ndarray:
    """Cluster labels from the best of ``restarts`` k-means++ runs (lowest inertia)."""
    rng = np.random.default_rng(seed)
    best_labels, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = [data[rng.integers(len(data))]]
        for _ in range(1, k):  # k-means++ seeding
            d2 = np.min(((data[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            centres.append(data[rng.choice(len(data), p=d2 / d2.sum())] if d2.sum() > 0 else data[rng.integers(len(data))])
        centres = np.asarray(centres)
        labels = np.zeros(len(data), dtype=np.int64)
        for step in range(iterations):
            dist = ((data[:, None, :] - centres[None]) ** 2).sum(-1)
            new = dist.argmin(axis=1)
            if step and np.array_equal(new, labels):
                break
            labels = new
            for c in range(k):
                members = data[labels == c]
                if len(members):
                    centres[c] = members.mean(axis=0)
        inertia = float(((data - centres[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def quantize(p_features: np.ndarray, q_features: np.ndarray, *, clusters: int | None = None,
             explained_variance: float = 0.9, seed: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Joint k-means histograms of the two feature sets (L2-normalised, PCA-reduced first)."""
    data = np.vstack([p_features, q_features]).astype(np.float64)
    data /= np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    centred = data - data.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ratio = np.cumsum(s ** 2) / max(np.sum(s ** 2), 1e-300)
    keep = int(np.argmax(ratio >= explained_variance)) + 1
    reduced = centred @ vt[:keep].T
    k = clusters or max(2, len(data) // 10)
    labels = kmeans(reduced, min(k, len(data)), seed=seed)
    n_p = len(p_features)
    p_hist = np.bincount(labels[:n_p], minlength=k).astype(np.float64)
    q_hist = np.bincount(labels[n_p:], minlength=k).astype(np.float64)
    return p_hist / p_hist.sum(), q_hist / q_hist.sum()


def mauve(human: Sequence[str], generated: Sequence[str], encoder: SentenceEncoder, *, clusters: int | None = None,
          scaling: float = 5.0, points: int = 25, seed: int = 25) -> dict:
    """MAUVE of ``generated`` texts against ``human`` texts, with the settings used."""
    if len(human) < 2 or len(generated) < 2:
        raise InputError("MAUVE needs at least two texts on each side", "pass more texts (hundreds in practice)")
    check_number("scaling", scaling, low=0, low_inclusive=False)
    if clusters is not None:
        check_number("clusters", clusters, low=1, integer=True)
    check_number("seed", seed, low=0, integer=True)
    p_feat, q_feat = np.asarray(encoder(list(human))), np.asarray(encoder(list(generated)))
    p, q = quantize(p_feat, q_feat, clusters=clusters, seed=seed)
    return {"mauve": mauve_from_histograms(p, q, points=points, scaling=scaling),
            "clusters": int(len(p)), "scaling": scaling, "points": points, "seed": seed}
