"""Logistic regression (two classes) and softmax regression (more) with L2, fitted by L-BFGS.

The objective is scikit-learn's: C · Σ_i w_i · logloss_i + ½‖W‖² (the intercept is not
penalised), so the same features and C give the same model as its ``LogisticRegression``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.validate import check_choice, check_number
from .base import ClassifierMixin, class_weights, encode_labels
from .features import WEIGHTINGS, BagOfWords, tokenize_all


def fit_logistic(x: torch.Tensor, y: np.ndarray, n_classes: int, *, C: float = 1.0,
                 sample_weight: np.ndarray | None = None, max_iter: int = 500,
                 tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """(coef (K', V), intercept (K',)) minimising the objective above; K' = 1 for two classes."""
    n, v = x.shape
    k = 1 if n_classes == 2 else n_classes
    sw = torch.ones(n, dtype=torch.float64) if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float64)
    xt = x.t().to_sparse_csr()
    yt = torch.from_numpy(y)
    target = yt.to(torch.float64).unsqueeze(1) if k == 1 else torch.nn.functional.one_hot(yt, k).to(torch.float64)
    params = torch.zeros(v + 1, k, dtype=torch.float64, requires_grad=True)  # last row: intercept
    opt = torch.optim.LBFGS([params], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        with torch.no_grad():
            w, b = params[:-1], params[-1]
            z = x @ w + b
            if k == 1:
                loss = torch.nn.functional.softplus(z) - target * z  # -log σ(±z)
                resid = torch.sigmoid(z) - target
            else:
                lse = torch.logsumexp(z, dim=1, keepdim=True)
                loss = (lse - (z * target).sum(1, keepdim=True))
                resid = torch.softmax(z, dim=1) - target
            resid = resid * (C * sw).unsqueeze(1)
            total = (C * sw * loss.squeeze(1)).sum() + 0.5 * (w * w).sum()
            grad = torch.cat([xt @ resid + w, resid.sum(0, keepdim=True)])
            params.grad = grad
        return total

    opt.step(closure)
    p = params.detach().numpy()
    return p[:-1].T.copy(), p[-1].copy()


class LogisticRegression(ClassifierMixin):
    """L2-regularised logistic/softmax regression over bag-of-words or TF-IDF rows."""

    kind = "logistic"

    def __init__(self, C: float = 1.0, weighting: str = "tfidf", class_weight: str = "none",
                 min_df: int = 1, max_iter: int = 500) -> None:
        self.C = float(check_number("C", C, low=0, low_inclusive=False))
        self.class_weight = class_weight
        check_choice("weighting", weighting, WEIGHTINGS)
        self.max_iter = int(check_number("max_iter", max_iter, low=1, integer=True))
        self.features = BagOfWords(weighting, min_df)
        self.classes = None

    def fit(self, texts: Sequence[str], labels: Sequence) -> LogisticRegression:
        self.classes, y = encode_labels(texts, labels)
        weights = class_weights(y, len(self.classes), self.class_weight)
        docs = tokenize_all(texts, "training texts")
        x = self.features.fit(docs).transform(docs)
        self.coef, self.intercept = fit_logistic(x, y, len(self.classes), C=self.C,
                                                 sample_weight=weights[y], max_iter=self.max_iter)
        return self

    def decision_function(self, x: torch.Tensor) -> np.ndarray:
        return (x @ torch.from_numpy(self.coef.T)).numpy() + self.intercept

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        z = self.decision_function(self.features.transform(tokenize_all(texts)))
        if z.shape[1] == 1:
            p1 = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p1, p1], axis=1)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        fcfg, ftensors = self.features.state()
        config = {"C": self.C, "class_weight": self.class_weight, "max_iter": self.max_iter,
                  "classes": self.classes, "features": fcfg}
        return config, {**ftensors, "coef": torch.from_numpy(self.coef), "intercept": torch.from_numpy(self.intercept)}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> LogisticRegression:
        model = cls(config["C"], config["features"]["weighting"], config["class_weight"], max_iter=config["max_iter"])
        model.features = BagOfWords.from_state(config["features"], tensors)
        model.classes = list(config["classes"])
        model.coef, model.intercept = tensors["coef"].numpy(), tensors["intercept"].numpy()
        return model
