"""Fine-tuning an lmlab encoder or decoder with a classification head, on the one trainer.

The backbone (``minilm``, a Hugging Face BERT directory, an lmlab model directory or a named
model such as ``smollm2-135m-instruct``) gives hidden states; ``heads.ClassificationHead``
pools them (mean for encoders, last token for causal decoders) and projects to class logits.
Training is ``lmlab.train.train`` with ``ClassificationLoss`` over padded, length-bucketed
batches (AdamW, linear warm-up then linear decay, gradient clipping, checkpoints that resume).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import DataError, ModelError
from ..core.validate import check_choice, check_number
from ..models.backbone import load_backbone
from ..models.directory import model_class
from ..train import TrainConfig, train
from .base import CLASS_WEIGHTS, ClassifierMixin, class_weights, encode_labels
from .batches import SAMPLERS, LabeledBatches, pad_rows
from .heads import POOLINGS, ClassificationHead
from .objective import ClassificationLoss


class ClassifierNet(nn.Module):
    """Backbone hidden states → ``ClassificationHead`` → class logits; ``forward(ids, mask)``."""

    def __init__(self, backbone: nn.Module, n_classes: int, pooling: str, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassificationHead(backbone.config.d_model, n_classes, pooling, dropout)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.backbone.hidden_states(ids, attention_mask=mask)
        return self.head(hidden, mask)

    def state_config(self) -> dict:
        """What a checkpoint must match to be resumed into this network."""
        return {"backbone": self.backbone.state_config(), "classes": self.head.proj.out_features,
                "pooling": self.head.pooling}


class FineTunedClassifier(ClassifierMixin):
    """A pretrained transformer + classification head, fine-tuned end to end (estimator API).

    ``steps`` (default: ``epochs`` passes over the data) optimizer steps of ``batch_size``
    texts truncated to ``max_length`` tokens; the rate warms up over a ``warmup`` fraction of
    them, then decays linearly to 0. ``class_weight="balanced"`` weights the loss by inverse
    class frequency; ``sampler="balanced"`` draws every batch with class-balanced probabilities.
    ``run_dir`` keeps checkpoints (every ``checkpoint_every`` steps): fitting again with the
    same settings and ``run_dir`` resumes a killed run.
    """

    kind = "finetune"
    needs_tokenizer = True

    def __init__(self, backbone: str | os.PathLike | tuple = "minilm", *, pooling: str = "auto", epochs: int = 1,
                 steps: int | None = None, lr: float = 5e-5, batch_size: int = 32, max_length: int = 64,
                 warmup: float = 0.06, weight_decay: float = 0.01, clip: float = 1.0, dropout: float = 0.1,
                 class_weight: str = "none", sampler: str = "shuffle", run_dir: str | os.PathLike | None = None,
                 checkpoint_every: int = 100, device: str = "auto", seed: int = 0, deterministic: bool = True) -> None:
        self.backbone = backbone
        self.pooling = check_choice("pooling", pooling, ("auto",) + POOLINGS)
        self.epochs = int(check_number("epochs", epochs, low=1, integer=True))
        self.steps = None if steps is None else int(check_number("steps", steps, low=1, integer=True))
        self.lr = float(check_number("lr", lr, low=0, low_inclusive=False))
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self.max_length = int(check_number("max_length", max_length, low=3, integer=True))
        self.warmup = float(check_number("warmup", warmup, low=0, high=1))
        self.weight_decay = float(check_number("weight_decay", weight_decay, low=0))
        self.clip = float(check_number("clip", clip, low=0, low_inclusive=False))
        self.dropout = float(check_number("dropout", dropout, low=0, high=1, high_inclusive=False))
        self.class_weight = check_choice("class_weight", class_weight, CLASS_WEIGHTS)
        self.sampler = check_choice("sampler", sampler, SAMPLERS)
        self.run_dir, self.checkpoint_every = run_dir, int(checkpoint_every)
        self.device, self.seed, self.deterministic = device, seed, bool(deterministic)
        self.classes = None
        self.net: ClassifierNet | None = None
        self.tokenizer = None
        self.train_result = None

    # --- text → ids ----------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_id
        return pad if pad is not None else 0

    def encode(self, texts: Sequence[str], what: str = "texts") -> list[list[int]]:
        """Token ids of each text (with the tokenizer's special tokens), truncated to ``max_length``."""
        texts = list(texts)
        ids = self.tokenizer.batch_encode(texts, add_special_tokens=True, max_length=self.max_length,
                                          padding=False).ids
        added = len(self.tokenizer.encode("", add_special_tokens=True))
        empty = [i for i, row in enumerate(ids) if len(row) <= added]
        if empty:
            raise DataError(f"{len(empty)} of the {what} are empty after tokenisation (first: item {empty[0]}, "
                            f"{texts[empty[0]]!r})", "remove blank texts before training or predicting")
        return ids

    # --- estimator API -------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence) -> FineTunedClassifier:
        self.classes, y = encode_labels(texts, labels)
        lm, self.tokenizer = load_backbone(self.backbone)
        rows = self.encode(texts, "training texts")
        pooling = self.pooling if self.pooling != "auto" else ("last" if lm.config.causal else "mean")
        torch.manual_seed(self.seed)
        self.net = ClassifierNet(lm, len(self.classes), pooling, self.dropout)
        source = LabeledBatches(rows, y, batch_size=self.batch_size, pad_id=self.pad_id, sampler=self.sampler,
                                seed=self.seed)
        steps = self.steps or self.epochs * source.batches_per_epoch
        config = TrainConfig(steps=steps, lr=self.lr, schedule="linear", warmup=round(self.warmup * steps),
                             weight_decay=self.weight_decay, beta2=0.999, clip=self.clip, log_every=1,
                             checkpoint_every=self.checkpoint_every if self.run_dir is not None else 0,
                             device=self.device, seed=self.seed, deterministic=self.deterministic)
        weights = class_weights(y, len(self.classes), self.class_weight) if self.class_weight != "none" else None
        objective = ClassificationLoss(weights)
        if self.run_dir is not None:
            self.train_result = train(self.net, objective, source, config, self.run_dir, resume=True)
        else:
            with tempfile.TemporaryDirectory(prefix="lmlab-finetune-") as tmp:
                self.train_result = train(self.net, objective, source, config, tmp)
        self.net.eval()
        return self

    @torch.no_grad()
    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class logits [N, classes] (texts batched by length, so little is padding)."""
        self._check_fitted()
        rows = self.encode(texts)
        order = np.argsort([len(r) for r in rows], kind="stable")
        out = np.zeros((len(rows), len(self.classes)), dtype=np.float32)
        self.net.eval()
        device = next(self.net.parameters()).device
        for lo in range(0, len(rows), batch_size):
            pick = order[lo:lo + batch_size]
            ids, mask = pad_rows([rows[i] for i in pick], self.pad_id)
            out[pick] = self.net(ids.to(device), mask.to(device)).float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(texts)).double(), dim=-1).numpy()

    # --- persistence ---------------------------------------------------------------------------
    def settings(self) -> dict:
        backbone = self.backbone if isinstance(self.backbone, str | os.PathLike) else "in-memory"
        return {"backbone": str(backbone), "pooling": self.net.head.pooling, "epochs": self.epochs,
                "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size, "max_length": self.max_length,
                "warmup": self.warmup, "weight_decay": self.weight_decay, "clip": self.clip,
                "dropout": self.dropout, "class_weight": self.class_weight, "sampler": self.sampler,
                "seed": self.seed}

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        lm_config, lm_tensors = self.net.backbone.to_state()
        tensors = {f"backbone.{k}": v.detach().cpu() for k, v in lm_tensors.items()}
        tensors.update({f"head.{k}": v.detach().cpu() for k, v in self.net.head.state_dict().items()})
        return {**self.settings(), "classes": self.classes, "backbone_config": lm_config}, tensors

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor], tokenizer: Any = None) -> FineTunedClassifier:
        if tokenizer is None:
            raise ModelError("a fine-tuned classifier needs its tokenizer.json", "save it with save_classifier")
        lm_config = config["backbone_config"]
        lm = model_class(str(lm_config.get("model_type"))).from_state(
            lm_config, {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
        keys = ("pooling", "epochs", "steps", "lr", "batch_size", "max_length", "warmup", "weight_decay", "clip",
                "dropout", "class_weight", "sampler", "seed")
        model = cls(config["backbone"], **{k: config[k] for k in keys})
        model.classes, model.tokenizer = list(config["classes"]), tokenizer
        model.net = ClassifierNet(lm, len(model.classes), config["pooling"], model.dropout)
        head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        expected = model.net.head.state_dict()
        if set(head) != set(expected) or any(head[k].shape != expected[k].shape for k in expected):
            raise ModelError(f"the classification head's weights do not match config.json "
                             f"({len(model.classes)} classes, dimension {lm.config.d_model})",
                             "the classifier directory is damaged or mixes files of different models")
        model.net.head.load_state_dict(head)
        model.net.eval()
        return model
