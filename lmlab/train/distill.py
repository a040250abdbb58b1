"""Knowledge distillation (Hinton et al. 2015) on the one trainer, and a half-depth student.

``Distillation`` is an objective: the student's loss on a batch is
``alpha · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − alpha) · CE(z_s, y)`` averaged over the
predicted tokens (T² keeps the soft term's gradients on the scale of the hard one), optionally
plus ``cosine`` · (1 − cos(h_s, h_t)) between the last hidden states (DistilBERT's alignment loss,
Sanh et al. 2019, for students as wide as their teacher). The teacher is frozen and runs without
gradients. ``student_from_teacher`` builds DistilBERT's initialisation: the teacher's config
with every ``every``-th layer, those layers' weights copied, embeddings, final norm and head too.

For an encoder, DistilBERT's whole recipe is ``Distillation(teacher, masking=MaskedLM(...))``: both
models read the same masked input (BERT's 80/10/10 noise, a function of the step), the soft term
is taken at the masked positions, the hard term is the MLM loss there, and the cosine term aligns
the hidden states at every position (the paper's losses L_ce, L_mlm and L_cos).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..core.validate import check_number
from .denoising import IGNORE_INDEX, MaskedLM
from .objectives import token_loss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T² · mean over kept positions of KL(softmax(teacher / T) ‖ softmax(student / T)), in float32."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = (t.exp() * (t - s)).sum(-1)
    if mask is not None:
        keep = mask.bool()
        per_token = per_token[keep]
    return temperature ** 2 * per_token.mean()


class Distillation:
    """Token-level KD from a frozen ``teacher`` mixed with the LM loss (see the module docstring)."""

    def __init__(self, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5, cosine: float = 0.0,
                 masking: MaskedLM | None = None) -> None:
        self.temperature = float(check_number("temperature", temperature, low=0.0, low_inclusive=False))
        self.alpha = float(check_number("alpha", alpha, low=0.0, high=1.0))
        self.cosine = float(check_number("cosine", cosine, low=0.0))
        self.teacher = teacher.eval().requires_grad_(False)
        self.masking = masking

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        if self.masking is None:
            ids, target, mask = batch["input"], batch["target"], batch.get("mask")
            cosine_mask = mask
        else:  # an encoder: predict the masked tokens of a noised input (the labels elsewhere are ignored)
            ids, target = self.masking.noise(batch["input"], int(batch.get("step", 0)))
            mask, cosine_mask = target != IGNORE_INDEX, None
            if not mask.any():
                return model.logits(model.hidden_states(ids)[0]).sum() * 0.0, 0
        hidden, _ = model.hidden_states(ids)
        logits = model.logits(hidden)
        with torch.no_grad():
            t_hidden, _ = self.teacher.hidden_states(ids.to(next(self.teacher.parameters()).device))
            t_logits = self.teacher.logits(t_hidden).to(logits.device)
        loss = self.alpha * kd_loss(logits, t_logits, self.temperature, mask)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * token_loss(logits, target, mask)
        if self.cosine:
            if hidden.shape[-1] != t_hidden.shape[-1]:
                raise ConfigError("the hidden-state cosine loss needs a student as wide as its teacher",
                                  "set cosine=0 for a narrower student")
            cos = F.cosine_similarity(hidden.float(), t_hidden.to(hidden.device).float(), dim=-1)
            loss = loss + self.cosine * (1 - (cos[cosine_mask.bool()] if cosine_mask is not None else cos).mean())
        return loss, int(mask.sum()) if mask is not None else target.numel()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def student_from_teacher(teacher: nn.Module, every: int = 2) -> nn.Module:
    """A ``TransformerLM`` with every ``every``-th layer of ``teacher`` (layers 0, every, 2·every, ...),
    initialised from them; embeddings, final norm and head copied (DistilBERT's initialisation)."""
    check_number("every", every, low=1, integer=True)
    keep = list(range(0, len(teacher.blocks), every))
    student = copy.deepcopy(teacher)
    student.blocks = nn.ModuleList(student.blocks[i] for i in keep)
    student.config = dataclasses.replace(teacher.config, n_layers=len(keep))
    for module in student.modules():  # a decode layout's packed views would pin the teacher's tensors
        if hasattr(module, "packed"):
            module.packed = None
    return student.train().requires_grad_(True)
