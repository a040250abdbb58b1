"""The classification objective for the one trainer: cross-entropy of a batch's labels.

Called as ``objective(model, batch) -> (loss, examples)`` with ``batch = {"input", "mask",
"label"}`` (``batches.LabeledBatches``); ``model(ids, mask)`` returns class logits. Optional
per-class weights make it the class-weighted loss (mean weighted by the labels' weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_number


class ClassificationLoss:
    """Cross-entropy over class logits, optionally class-weighted and label-smoothed."""

    def __init__(self, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.label_smoothing = float(check_number("label_smoothing", label_smoothing, low=0.0, high=1.0,
                                                  high_inclusive=False))

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        logits = model(batch["input"], batch["mask"])
        label = batch["label"]
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits.float(), label, weight=weight, label_smoothing=self.label_smoothing)
        return loss, int(label.numel())
