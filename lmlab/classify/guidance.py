"""An lmlab classifier as decoding guidance: FUDGE's prefix scorer and best-of-n's reward.

Any classifier with ``classes`` and ``predict_proba(texts)`` (naive Bayes, logistic regression,
fastText-style, CBOW, a fine-tuned transformer with a pooled head; ``lmlab.classify``) can steer
generation toward one of its labels: ``prefix_scorer`` gives FUDGE (``lmlab.generate.guided.Fudge``)
log p(label | text so far) for every candidate prefix, ``label_reward`` gives best-of-n reranking
(``lmlab.generate.select.Reward``) p(label | text). Texts are decoded with the language model's
tokenizer; a text the classifier finds no evidence in (empty after its own tokenisation) gets the
uniform probability 1/K.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, DataError


def label_index(classifier: Any, label: str) -> int:
    """The column of ``label`` in the classifier's probabilities (labels compare as strings)."""
    classes = [str(c) for c in (getattr(classifier, "classes", None) or [])]
    if str(label) not in classes:
        raise ConfigError(f"the classifier has no label {label!r}", f"its labels: {', '.join(classes) or 'none'}")
    return classes.index(str(label))


def label_probabilities(classifier: Any, texts: Sequence[str], column: int) -> np.ndarray:
    """p(label | text) for each text; texts without evidence for the classifier get 1/K."""
    k = len(classifier.classes)
    try:
        return np.asarray(classifier.predict_proba(list(texts)))[:, column]
    except DataError:  # some text is empty for this classifier: score the others one by one
        out = np.full(len(texts), 1.0 / k)
        for i, text in enumerate(texts):
            try:
                out[i] = np.asarray(classifier.predict_proba([text]))[0, column]
            except DataError:
                pass
        return out


def prefix_scorer(classifier: Any, tokenizer: Any, label: str, *, include_prompt: bool = False
                  ) -> Callable[[list[list[int]], int], torch.Tensor]:
    """FUDGE's scorer: log p(``label`` | decoded prefix) for token-id prefixes (the continuation only, or
    with the prompt when ``include_prompt``)."""
    column = label_index(classifier, label)

    def score(prefixes: list[list[int]], prompt_length: int) -> torch.Tensor:
        start = 0 if include_prompt else prompt_length
        texts = [tokenizer.decode(p[start:], skip_special_tokens=True) for p in prefixes]
        probs = label_probabilities(classifier, texts, column)
        return torch.log(torch.as_tensor(probs, dtype=torch.float32).clamp_min(1e-12))

    score.__name__ = f"p({label}|prefix)"
    return score


def label_reward(classifier: Any, label: str) -> Callable[[Sequence[str]], list[float]]:
    """A reward for generate-then-rerank: p(``label`` | text)."""
    column = label_index(classifier, label)

    def reward(texts: Sequence[str]) -> list[float]:
        return [float(p) for p in label_probabilities(classifier, texts, column)]

    reward.__name__ = f"p({label})"
    return reward
