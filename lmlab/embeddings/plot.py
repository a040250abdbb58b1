"""A 2-D picture of chosen words: PCA (or a small exact t-SNE) of their vectors, saved as a PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..core.errors import ConfigError
from ..core.io import atomic_path
from ..core.plotting import pyplot
from ..core.validate import check_choice
from .vectors import WordVectors

METHODS = ("pca", "tsne")


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows onto their two leading principal components."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def tsne_2d(x: np.ndarray, perplexity: float = 5.0, steps: int = 500, seed: int = 0) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) for a few hundred points: Gaussian affinities
    calibrated to ``perplexity`` by bisection, Student-t in 2-D, gradient descent with momentum."""
    n = len(x)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    p = np.zeros((n, n))
    target = np.log(min(perplexity, n - 1))
    for i in range(n):
        lo, hi, beta = 0.0, np.inf, 1.0
        di = np.delete(d2[i], i)
        for _ in range(60):
            w = np.exp(-(di - di.min()) * beta)
            pi = w / w.sum()
            entropy = -(pi * np.log(pi + 1e-12)).sum()
            if entropy > target:
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i] = np.insert(pi, i, 0.0)
    p = (p + p.T) / (2 * n)
    y = np.random.default_rng(seed).normal(scale=1e-4, size=(n, 2))
    velocity = np.zeros_like(y)
    for step in range(steps):
        diff = y[:, None] - y[None]
        q_num = 1 / (1 + (diff**2).sum(-1))
        np.fill_diagonal(q_num, 0)
        q = q_num / q_num.sum()
        exaggeration = 4.0 if step < 100 else 1.0
        grad = 4 * ((exaggeration * p - q)[:, :, None] * q_num[:, :, None] * diff).sum(1)
        velocity = (0.5 if step < 100 else 0.8) * velocity - 100.0 * grad
        y += velocity
    return y - y.mean(axis=0)


def plot_words(wv: WordVectors, words: Sequence[str], path: str | os.PathLike, method: str = "pca") -> np.ndarray:
    """Write a labelled scatter plot of ``words`` to a PNG; returns their 2-D coordinates."""
    check_choice("method", method, METHODS)
    missing = [w for w in words if w not in wv]
    if missing:
        raise ConfigError(f"not in the vocabulary: {', '.join(missing)}", "choose words the vectors know")
    if len(words) < 3:
        raise ConfigError("plot at least three words")
    plt = pyplot("plotting word vectors")
    x = np.stack([wv.unit[wv.index[w]] for w in words]).astype(np.float64)
    xy = pca_2d(x) if method == "pca" else tsne_2d(x, perplexity=min(5.0, (len(words) - 1) / 3))
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(xy[:, 0], xy[:, 1], s=12)
    for w, (a, b) in zip(words, xy, strict=True):
        ax.annotate(w, (a, b), fontsize=9, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"{method.upper()} of {len(words)} word vectors")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return xy
