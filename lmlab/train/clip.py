"""CLIP training on the one trainer (Radford et al., 2021): image–caption pairs, the symmetric InfoNCE
loss over the batch (``lmlab.train.contrastive.info_nce``), a ``DualEncoder`` (``lmlab.models.vision``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import DataError
from ..core.validate import check_number
from ..data.digits import TEMPLATES, Digits, caption, load_digits
from ..data.loaders import pad_batch, shuffled_batch
from ..models.config import TransformerConfig
from ..models.transformer import TransformerLM
from ..models.vision import DualEncoder, PatchEncoder, zero_shot
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


@torch.no_grad()
def digit_retrieval_scores(model: DualEncoder, tokenizer: Any, test: Digits) -> dict[str, float]:
    """On held-out digits: zero-shot accuracy (each image's nearest class caption ensemble, ``zero_shot``) and
    text→image precision@10 (of the 10 images nearest each class caption, the share of that class)."""
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    classes = [pad_batch([tokenizer.encode(caption(y, k)) for k in range(len(TEMPLATES))], pad) for y in range(10)]
    accuracy = float((zero_shot(model, test.images, classes) == test.labels).float().mean())
    model.eval()
    images = F.normalize(model.embed_images(test.images), dim=-1)
    hits = []
    for y, (ids, mask) in enumerate(classes):
        for k in range(len(ids)):
            query = F.normalize(model.embed_texts(ids[k:k + 1], mask[k:k + 1]), dim=-1)
            top = (images @ query[0]).topk(min(10, len(images))).indices
            hits.append(float((test.labels[top] == y).float().mean()))
    return {"zero_shot_accuracy": accuracy, "text_to_image_precision@10": sum(hits) / len(hits)}


@dataclass
class DigitsCLIPRun:
    """What ``digits_clip`` trained: the model, its caption tokenizer, where it was saved, the trainer's result,
    and ``digit_retrieval_scores`` on the held-out digits."""

    model: DualEncoder
    tokenizer: Any
    model_dir: Path
    train: TrainResult
    scores: dict[str, float]


def digits_clip(run_dir: str | os.PathLike, *, d_model: int = 64, image_layers: int = 2, text_layers: int = 1,
                n_heads: int = 4, patch_size: int = 2, steps: int = 600, batch_size: int = 64, lr: float = 2e-3,
                temperature: float = 0.1, seed: int = 0) -> DigitsCLIPRun:
    """A CLIP-style dual encoder trained on scikit-learn's digits and their label captions (``load_digits``'s
    train split): a ViT of ``image_layers`` over ``patch_size`` patches and a bert-preset caption encoder of
    ``text_layers``, both ``d_model`` wide; evaluated on the held-out split and saved, with the caption
    tokenizer, as the model directory ``run_dir/model``."""
    from ..models.directory import save_model_dir
    from ..tokenizers import WordLevelTokenizer

    train, test = load_digits("train", seed=seed), load_digits("test", seed=seed)
    tokenizer = WordLevelTokenizer("word").train([caption(y, k) for y in range(10) for k in range(len(TEMPLATES))])
    torch.manual_seed(seed)
    text = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=tokenizer.vocab_size, d_model=d_model,
                                                       n_layers=text_layers, n_heads=n_heads, d_ff=2 * d_model,
                                                       context_length=16))
    model = DualEncoder(PatchEncoder(8, patch_size, d_model=d_model, n_layers=image_layers, n_heads=n_heads), text,
                        dim=d_model)
    result = train_clip(model, tokenizer, train.images, train.captions, run_dir, steps=steps, batch_size=batch_size,
                        lr=lr, temperature=temperature, seed=seed)
    scores = digit_retrieval_scores(model, tokenizer, test)
    model_dir = save_model_dir(Path(run_dir) / "model", *model.to_state(), tokenizer=tokenizer)
    return DigitsCLIPRun(model, tokenizer, Path(model_dir), result, scores)
