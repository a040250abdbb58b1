"""Linear probes (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
probes"): logistic regression on cached activations, with held-out accuracy, to ask what a layer
makes linearly readable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..classify.base import encode_labels
from ..classify.logistic import fit_logistic
from ..core.errors import InputError
from ..core.seed import make_generator
from ..core.validate import check_number
from .steering import pooled_activations


def probe_features(lm: nn.Module, prompts: Sequence[Sequence[int]], layers: Sequence[int], *, pool: str = "last",
                   site: str = "resid_post") -> torch.Tensor:
    """Activation rows [len(layers), N, d_model]: ``site`` at each of ``layers``, one row per prompt
    pooled over its positions (``lmlab.interp.steering.pooled_activations``)."""
    return pooled_activations(lm, prompts, [f"blocks.{layer}.{site}" for layer in layers], pool=pool)


@dataclass
class ProbeResult:
    """A fitted probe: classes, weights, and its accuracy on the rows it saw and on held-out rows."""

    classes: list
    coef: np.ndarray
    intercept: np.ndarray
    train_accuracy: float
    test_accuracy: float
    n_train: int
    n_test: int

    def predict(self, features: torch.Tensor) -> list:
        scores = features.double().numpy() @ self.coef.T + self.intercept
        picks = (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else scores.argmax(1)
        return [self.classes[i] for i in picks]


def fit_probe(features: torch.Tensor, labels: Sequence, *, test_fraction: float = 0.25, C: float = 1.0,
              seed: int = 0) -> ProbeResult:
    """Standardise ``features`` [N, D] (statistics of the training rows), fit L2 logistic regression
    (``lmlab.classify.logistic``) on a random ``1 − test_fraction`` of the rows, score both parts."""
    check_number("test_fraction", test_fraction, low=0.0, high=1.0, high_inclusive=False)
    check_number("C", C, low=0.0, low_inclusive=False)
    if len(labels) != features.shape[0]:
        raise InputError(f"{features.shape[0]} activation rows but {len(labels)} labels", "give one label per prompt")
    classes, y = encode_labels([""] * len(labels), labels)  # (the texts only count the rows)
    order = torch.randperm(len(y), generator=make_generator(seed)).numpy()
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    x = features.double()
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    x = (x - mean) / std
    coef, intercept = fit_logistic(x[train], y[train], len(classes), C=C)
    result = ProbeResult(list(classes), coef / std.numpy(), intercept - (coef / std.numpy()) @ mean.numpy(),
                         0.0, float("nan"), len(train), n_test)
    raw = features.double()
    result.train_accuracy = _accuracy(result, raw[train], [labels[i] for i in train])
    if n_test:
        result.test_accuracy = _accuracy(result, raw[test], [labels[i] for i in test])
    return result


def _accuracy(probe: ProbeResult, features: torch.Tensor, labels: Sequence) -> float:
    return float(np.mean([a == b for a, b in zip(probe.predict(features), map(str, labels), strict=True)]))
