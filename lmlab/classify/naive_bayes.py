"""Multinomial naive Bayes: the generative bag-of-words classifier, p(c) Π p(w | c)^count."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.validate import check_choice, check_number
from .base import ClassifierMixin, encode_labels
from .features import BagOfWords, tokenize_all


class NaiveBayes(ClassifierMixin):
    """Laplace/Lidstone-smoothed (``alpha``) multinomial NB over word counts.

    ``prior="uniform"`` ignores class frequencies (the generative model's form of class balancing).
    """

    kind = "naive-bayes"

    def __init__(self, alpha: float = 1.0, prior: str = "empirical", min_df: int = 1) -> None:
        self.alpha = float(check_number("alpha", alpha, low=0, low_inclusive=False))
        self.prior = check_choice("prior", prior, ("empirical", "uniform"))
        self.features = BagOfWords("count", min_df)
        self.classes = None

    def fit(self, texts: Sequence[str], labels: Sequence) -> NaiveBayes:
        self.classes, y = encode_labels(texts, labels)
        docs = tokenize_all(texts, "training texts")
        x = self.features.fit(docs).transform(docs)
        onehot = torch.zeros(len(y), len(self.classes), dtype=torch.float64)
        onehot[torch.arange(len(y)), torch.from_numpy(y)] = 1
        counts = (x.t() @ onehot).t().numpy()  # (K, V) word counts per class
        smoothed = counts + self.alpha
        self.feature_log_prob = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        k = len(self.classes)
        prior = np.bincount(y, minlength=k) / len(y) if self.prior == "empirical" else np.full(k, 1 / k)
        self.class_log_prior = np.log(prior)
        return self

    def joint_log_likelihood(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        x = self.features.transform(tokenize_all(texts))
        return (x @ torch.from_numpy(self.feature_log_prob.T)).numpy() + self.class_log_prior

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        jll = self.joint_log_likelihood(texts)
        jll -= jll.max(axis=1, keepdims=True)
        p = np.exp(jll)
        return p / p.sum(axis=1, keepdims=True)

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        fcfg, ftensors = self.features.state()
        config = {"alpha": self.alpha, "prior": self.prior, "classes": self.classes, "features": fcfg}
        return config, {**ftensors, "feature_log_prob": torch.from_numpy(self.feature_log_prob),
                        "class_log_prior": torch.from_numpy(self.class_log_prior)}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> NaiveBayes:
        model = cls(config["alpha"], config["prior"])
        model.features = BagOfWords.from_state(config["features"], tensors)
        model.classes = list(config["classes"])
        model.feature_log_prob = tensors["feature_log_prob"].numpy()
        model.class_log_prior = tensors["class_log_prior"].numpy()
        return model
