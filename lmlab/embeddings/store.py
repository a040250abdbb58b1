"""Word vectors on disk: a model directory (config.json with the words + model.safetensors),
or a word2vec text/binary file; ``load_vectors`` takes either."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError, ModelError
from ..models.directory import read_model_dir, save_model_dir
from .vectors import WordVectors, load_word2vec

MODEL_TYPE = "word-vectors"


def save_vectors(path: str | os.PathLike, wv: WordVectors, training: dict | None = None) -> Path:
    """Write ``wv`` (and how it was trained) as a model directory, atomically file by file."""
    config = {"model_type": MODEL_TYPE, "dim": wv.dim, "words": wv.words, "training": training or {}}
    tensors = {"vectors": torch.from_numpy(np.ascontiguousarray(wv.vectors))}
    if wv.counts is not None:
        tensors["counts"] = torch.from_numpy(np.asarray(wv.counts, dtype=np.int64))
    return save_model_dir(path, config, tensors)


def load_vectors(path: str | os.PathLike) -> WordVectors:
    """Word vectors from a directory made by ``save_vectors`` or a word2vec text/binary file."""
    if not Path(path).is_dir():
        return load_word2vec(path)
    config, tensors = read_model_dir(path)
    if config.get("model_type") != MODEL_TYPE:
        raise ModelError(f"{path} holds a {config.get('model_type')!r} model, not word vectors")
    vectors = tensors["vectors"].numpy()
    if vectors.shape[1] != config.get("dim", vectors.shape[1]):
        raise DataError(f"{path}: config.json says dimension {config['dim']} but the vectors have {vectors.shape[1]}",
                        "the directory is inconsistent; save the vectors again")
    counts = tensors["counts"].numpy() if "counts" in tensors else None
    return WordVectors(config["words"], vectors, counts=counts)
