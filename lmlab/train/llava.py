"""Visual question answering on scikit-learn's digits with a LLaVA-style model (``lmlab.models.llava``):
questions about each image ("Which digit is this?", "Is it an even number?"), a projector trained on
the answers' tokens through the one trainer, and answer accuracy on held-out images — the answer with
the highest log-probability among the question's candidates (ten digit names, or yes/no) — against
the blind model trained the same way without the pictures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.errors import DataError
from ..core.validate import check_number
from ..data.digits import NAMES, Digits
from ..data.loaders import pad_batch, shuffled_batch
from ..models.llava import VisionLanguageModel
from .objectives import token_loss
from .trainer import TrainConfig, TrainResult, train


@dataclass(frozen=True)
class Question:
    """A question about a digit, every answer it can have, and which of them a label gets."""

    text: str
    answers: tuple[str, ...]
    answer_index: Callable[[int], int]

    def answer(self, label: int) -> str:
        return self.answers[self.answer_index(label)]


QUESTIONS = (Question("Which digit is this?", NAMES, lambda label: label),
             Question("Is it an even number?", ("yes", "no"), lambda label: label % 2))


def prompt(question: Question) -> str:
    return f"Question: {question.text}\nAnswer:"


@dataclass
class VQAExamples:
    """Token ids of every (image, question) pair: prompt + " answer", and where the answer starts."""

    images: torch.Tensor
    ids: list[list[int]]
    answer_start: list[int]


def vqa_examples(digits: Digits, tokenizer: Any, questions: Sequence[Question] = QUESTIONS) -> VQAExamples:
    """Each image of ``digits`` with each question and its answer."""
    images, ids, starts = [], [], []
    for q in questions:
        head = tokenizer.encode(prompt(q))
        for image, label in zip(digits.images, digits.labels.tolist(), strict=True):
            images.append(image)
            ids.append(head + tokenizer.encode(" " + q.answer(label)))
            starts.append(len(head))
    return VQAExamples(torch.stack(images), ids, starts)


class AnswerLoss:
    """``objective(model, batch) -> (loss, answer tokens)``: cross-entropy on the answer's tokens only."""

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        logits = model(batch["images"], batch["ids"], batch["mask"])
        target = batch["ids"][:, 1:]
        keep = batch["answer"][:, 1:]
        return token_loss(logits[:, :-1], target, keep), int(keep.sum())


class VQABatches:
    """Batches of ``VQAExamples``, reshuffled every pass with ``seed``."""

    def __init__(self, examples: VQAExamples, batch_size: int, *, pad_id: int = 0, seed: int = 0) -> None:
        check_number("batch_size", batch_size, low=1, integer=True)
        if len(examples.ids) < batch_size:
            raise DataError(f"{len(examples.ids)} examples are fewer than one batch of {batch_size}",
                            "lower the batch size")
        self.examples, self.batch_size, self.pad_id, self.seed = examples, batch_size, pad_id, seed

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        ex = self.examples
        picked = shuffled_batch(len(ex.ids), self.batch_size, index * world + rank, self.seed)
        ids, mask = pad_batch([ex.ids[i] for i in picked], self.pad_id)
        answer = torch.zeros_like(mask)
        for row, i in enumerate(picked):
            answer[row, ex.answer_start[i]:len(ex.ids[i])] = True
        return {"images": ex.images[picked], "ids": ids, "mask": mask, "answer": answer}


def train_projector(model: VisionLanguageModel, tokenizer: Any, digits: Digits, run_dir: str | os.PathLike, *,
                    steps: int = 300, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                    training: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model``'s projector in place on every question about ``digits`` with ``AnswerLoss`` through
    ``lmlab.train.train`` (cosine schedule; ``training`` overrides)."""
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    batches = VQABatches(vqa_examples(digits, tokenizer), batch_size, pad_id=pad, seed=seed)
    config = TrainConfig.from_dict({"steps": steps, "lr": lr, "warmup": min(20, steps // 10), "weight_decay": 0.0,
                                    "log_every": max(1, steps // 20), "seed": seed, **(training or {})})
    result = train(model, AnswerLoss(), batches, config, run_dir)
    model.eval()
    return result


@torch.no_grad()
def answer_accuracy(model: VisionLanguageModel, tokenizer: Any, digits: Digits,
                    questions: Sequence[Question] = QUESTIONS, batch_size: int = 64) -> dict[str, float]:
    """Per question, the share of ``digits`` whose highest-scoring candidate answer (sum of its tokens'
    log-probabilities after the image and the question) is the right one."""
    model.eval()
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    out = {}
    for q in questions:
        head = tokenizer.encode(prompt(q))
        candidates = [tokenizer.encode(" " + a) for a in q.answers]
        rows = [(i, c) for i in range(len(digits.labels)) for c in range(len(candidates))]
        scores = torch.empty(len(digits.labels), len(candidates))
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo:lo + batch_size]
            ids, mask = pad_batch([head + candidates[c] for _, c in chunk], pad)
            logp = model(digits.images[[i for i, _ in chunk]], ids, mask).log_softmax(-1)
            for r, (i, c) in enumerate(chunk):
                positions = torch.arange(len(head) - 1, len(head) + len(candidates[c]) - 1)
                scores[i, c] = logp[r, positions, ids[r, positions + 1]].sum()
        right = torch.tensor([q.answer_index(y) for y in digits.labels.tolist()])
        out[q.text] = float((scores.argmax(-1) == right).float().mean())
    return out
