"""CLIP training on the one trainer (Radford et al., 2021): image–caption pairs, the symmetric InfoNCE
loss over the batch (``lmlab.train.contrastive.info_nce``), a ``DualEncoder`` (``lmlab.models.vision``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core.errors import DataError
from ..core.validate import check_number
from ..data.loaders import pad_batch, shuffled_batch
from ..models.vision import DualEncoder
from .contrastive import info_nce
from .trainer import TrainConfig, TrainResult, train


class CLIPLoss:
    """``objective(model, batch) -> (loss, pairs)``: symmetric InfoNCE between a batch's images and captions."""

    def __init__(self, temperature: float = 0.1) -> None:
        self.temperature = float(check_number("temperature", temperature, low=0.0, low_inclusive=False))

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        images, texts = model(batch["images"], batch["ids"], batch["mask"])
        return info_nce(images, texts, self.temperature, symmetric=True), images.shape[0]


class ImageTextBatches:
    """Batches of (image, caption ids) pairs, reshuffled every pass with ``seed``."""

    def __init__(self, images: torch.Tensor, captions: Sequence[Sequence[int]], batch_size: int, *,
                 pad_id: int = 0, seed: int = 0) -> None:
        check_number("batch_size", batch_size, low=2, integer=True)
        if len(images) != len(captions):
            raise DataError(f"{len(images)} images but {len(captions)} captions", "give one caption per image")
        if len(images) < batch_size:
            raise DataError(f"{len(images)} pairs are fewer than one batch of {batch_size}", "lower the batch size")
        self.images, self.captions, self.batch_size = images, [list(c) for c in captions], batch_size
        self.pad_id, self.seed = pad_id, seed

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        picked = shuffled_batch(len(self.images), self.batch_size, index * world + rank, self.seed)
        ids, mask = pad_batch([self.captions[i] for i in picked], self.pad_id)
        return {"images": self.images[picked], "ids": ids, "mask": mask}


def train_clip(model: DualEncoder, tokenizer: Any, images: torch.Tensor, captions: Sequence[str],
               run_dir: str | os.PathLike, *, steps: int = 300, batch_size: int = 64, lr: float = 1e-3,
               temperature: float = 0.1, seed: int = 0, training: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` in place on image–caption pairs (captions encoded with ``tokenizer``) with
    ``CLIPLoss`` through ``lmlab.train.train`` (cosine schedule, ``training`` overrides)."""
    ids = [tokenizer.encode(c) for c in captions]
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    batches = ImageTextBatches(images, ids, batch_size, pad_id=pad, seed=seed)
    config = TrainConfig.from_dict({"steps": steps, "lr": lr, "warmup": min(20, steps // 10), "weight_decay": 0.01,
                                    "log_every": max(1, steps // 20), "seed": seed, **(training or {})})
    result = train(model, CLIPLoss(temperature), batches, config, run_dir)
    model.eval()
    return result
