"""Contrastive representation learning on the one trainer: InfoNCE with in-batch negatives, and SimCSE.

``info_nce`` (van den Oord et al., 2018) scores every query against every key of the batch by
cosine similarity / temperature and asks, by cross-entropy, for its own key: the other rows are
the negatives (Chen et al., 2020, SimCLR; the symmetric image↔text form is Radford et al.'s 2021
CLIP). Keys may hold more rows than queries — hard negatives after the positives.

SimCSE (Gao, Yao & Chen, 2021) trains a sentence encoder with it. Unsupervised: each sentence is
encoded twice, and the two dropout masks are the only augmentation — the two views are the
positive pair. Supervised: (anchor, positive) pairs, e.g. NLI entailments or a query and its
document. ``SimCSE`` is the objective (``objective(model, batch) -> (loss, sentences)``),
``SentenceBatches`` the batch source, ``SentenceEmbedder`` the trained module (an encoder and its
pooling) and ``simcse`` runs them through ``lmlab.train.train``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.validate import check_choice, check_number
from ..data.loaders import pad_batch, shuffled_batch
from ..models.encoder import POOLINGS, pool
from ..models.transformer import TransformerLM
from .trainer import TrainConfig, TrainResult, train


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.05, *,
             symmetric: bool = False) -> torch.Tensor:
    """InfoNCE with in-batch negatives: query *i* [B, D] should pick key *i* among ``keys`` [B + M, D]
    (cosine similarity / ``temperature``); ``symmetric`` averages in the keys-to-queries direction
    (CLIP; needs as many keys as queries). Mean cross-entropy, in float32."""
    check_number("temperature", temperature, low=0.0, low_inclusive=False)
    if queries.dim() != 2 or keys.dim() != 2 or keys.shape[0] < queries.shape[0] or keys.shape[1] != queries.shape[1]:
        raise ConfigError(f"InfoNCE needs queries [B, D] and keys [B + M, D], got {tuple(queries.shape)} and "
                          f"{tuple(keys.shape)}", "pass one positive key per query, in the same order, first")
    logits = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / temperature
    target = torch.arange(queries.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        if keys.shape[0] != queries.shape[0]:
            raise ConfigError("symmetric InfoNCE needs as many keys as queries", "leave the hard negatives out")
        loss = (loss + F.cross_entropy(logits.T, target)) / 2
    return loss


class SentenceEmbedder(nn.Module):
    """A bidirectional encoder and its pooling: ``forward(ids, mask)`` → sentence vectors [B, D]."""

    def __init__(self, encoder: TransformerLM, pooling: str = "mean") -> None:
        super().__init__()
        if encoder.config.causal:
            raise ConfigError("SimCSE trains a bidirectional encoder", "use a bert-preset model (MiniLM)")
        self.encoder = encoder
        self.pooling = check_choice("pooling", pooling, POOLINGS)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.encoder.hidden_states(ids, attention_mask=mask.long())
        return pool(hidden, mask, self.pooling)


class SimCSE:
    """The SimCSE objective: InfoNCE between each sentence's two dropout views (unsupervised) or between
    it and its positive (a batch with ``positive_ids``); ``metrics()`` gives the batch's accuracy
    (how often the positive scores highest)."""

    plot_keys = ("accuracy",)

    def __init__(self, temperature: float = 0.05) -> None:
        self.temperature = float(check_number("temperature", temperature, low=0.0, low_inclusive=False))
        self.accuracy = float("nan")

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        first = model(batch["ids"], batch["mask"])
        if "positive_ids" in batch:
            second = model(batch["positive_ids"], batch["positive_mask"])
        else:  # the same sentences again: another dropout mask
            second = model(batch["ids"], batch["mask"])
        loss = info_nce(first, second, self.temperature)
        with torch.no_grad():
            scores = F.normalize(first.float(), dim=-1) @ F.normalize(second.float(), dim=-1).T
            self.accuracy = float((scores.argmax(-1) == torch.arange(len(scores), device=scores.device)).float().mean())
        return loss, first.shape[0]

    def metrics(self) -> dict[str, float]:
        return {"accuracy": self.accuracy}


class SentenceBatches:
    """Batches of tokenised sentences (and their positives, for supervised SimCSE), reshuffled every pass
    through the data with ``seed`` (so batch *i* is the same on a resumed run)."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], batch_size: int, *, max_length: int = 32,
                 positives: Sequence[str] | None = None, seed: int = 0) -> None:
        check_number("batch_size", batch_size, low=2, integer=True)
        texts = list(texts)
        if positives is not None and len(positives) != len(texts):
            raise DataError(f"{len(texts)} sentences but {len(positives)} positives",
                            "give one positive per sentence, line-aligned")
        if len(texts) < batch_size:
            raise DataError(f"{len(texts)} sentences are fewer than one batch of {batch_size}",
                            "lower the batch size or give more text")
        self.batch_size, self.seed = batch_size, seed
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.rows = self._encode(tokenizer, texts, max_length)
        self.positives = None if positives is None else self._encode(tokenizer, list(positives), max_length)
        self.per_pass = len(texts) // batch_size

    @staticmethod
    def _encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
        enc = tokenizer.batch_encode(texts, add_special_tokens=True, max_length=max_length)
        return [ids[:sum(mask)] for ids, mask in zip(enc.ids, enc.attention_mask, strict=True)]

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        picked = shuffled_batch(len(self.rows), self.batch_size, index * world + rank, self.seed)
        ids, mask = pad_batch([self.rows[i] for i in picked], self.pad_id)
        out = {"ids": ids, "mask": mask}
        if self.positives is not None:
            out["positive_ids"], out["positive_mask"] = pad_batch([self.positives[i] for i in picked], self.pad_id)
        return out


def with_dropout(encoder: TransformerLM, dropout: float) -> TransformerLM:
    """A copy of ``encoder`` whose layers drop out at rate ``dropout`` in training (the weights shared
    by value): SimCSE's augmentation, for encoders imported without their training dropout."""
    check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
    config, tensors = encoder.to_state()
    return TransformerLM.from_state({**config, "dropout": dropout}, tensors)


def simcse(encoder: TransformerLM, tokenizer: Any, texts: Sequence[str], run_dir: str | os.PathLike, *,
           positives: Sequence[str] | None = None, steps: int = 100, batch_size: int = 64, lr: float = 3e-5,
           temperature: float = 0.05, max_length: int = 32, dropout: float = 0.1, pooling: str = "mean",
           seed: int = 0, training: dict[str, Any] | None = None) -> tuple[TransformerLM, TrainResult]:
    """Train ``encoder`` with SimCSE on ``texts`` (unsupervised; supervised with line-aligned
    ``positives``) through the one trainer; the trained encoder (dropout ``dropout`` while training,
    Gao et al.'s 0.1; rows of ``max_length`` tokens; constant ``lr`` after ``training`` overrides)
    and the trainer's result. ``run_dir`` gets the metrics, plot and checkpoint."""
    if positives is None and dropout == 0:
        raise ConfigError("unsupervised SimCSE needs dropout: its two views differ only by their dropout masks",
                          "use dropout > 0 (0.1), or give positives")
    model = SentenceEmbedder(with_dropout(encoder, dropout), pooling)
    batches = SentenceBatches(tokenizer, texts, batch_size, max_length=max_length, positives=positives, seed=seed)
    config = TrainConfig.from_dict({"steps": steps, "lr": lr, "schedule": "constant", "weight_decay": 0.0,
                                    "log_every": max(1, steps // 20), "seed": seed, **(training or {})})
    result = train(model, SimCSE(temperature), batches, config, run_dir)
    model.eval()
    return model.encoder, result
