"""Classifiers on disk: a model directory (config.json + model.safetensors), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ModelError
from ..models.directory import read_model_dir, save_model_dir
from .cbow import CBOWClassifier
from .fasttext import FastTextClassifier
from .finetune import FineTunedClassifier
from .logistic import LogisticRegression
from .naive_bayes import NaiveBayes

CLASSIFIERS = {cls.kind: cls for cls in (NaiveBayes, LogisticRegression, CBOWClassifier, FastTextClassifier,
                                         FineTunedClassifier)}
PREFIX = "classifier-"


def save_classifier(path: str | os.PathLike, model) -> Path:
    """Write a trained classifier as a model directory (with its tokenizer.json when it has one)."""
    model._check_fitted()
    config, tensors = model.to_state()
    return save_model_dir(path, {"model_type": PREFIX + model.kind, **config}, tensors,
                          tokenizer=getattr(model, "tokenizer", None))


def load_classifier(path: str | os.PathLike):
    """Read a classifier saved by ``save_classifier``."""
    config, tensors = read_model_dir(path)
    kind = str(config.get("model_type", "")).removeprefix(PREFIX)
    if kind not in CLASSIFIERS:
        raise ModelError(f"{path} holds a {config.get('model_type')!r} model, not a classifier",
                         f"classifier kinds: {', '.join(CLASSIFIERS)}")
    cls = CLASSIFIERS[kind]
    if getattr(cls, "needs_tokenizer", False):
        from ..tokenizers import load

        return cls.from_state(config, tensors, tokenizer=load(path))
    return cls.from_state(config, tensors)
