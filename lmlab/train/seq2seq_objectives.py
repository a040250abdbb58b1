"""Encoder–decoder objectives on the one trainer: seq2seq cross-entropy with teacher forcing, and
the two pretraining noisings that feed it — T5's span corruption and BART's denoising.

A batch for ``Seq2SeqLM`` holds ``source``/``target`` ids with ``source_mask``/``target_mask``
(1 = real token); ``SpanCorruption`` and ``Denoising`` build one from plain token windows
(``batch["input"]``) with noise seeded by (seed, step), so resumed runs are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data.loaders import pad_batch
from ..data.noising import sentence_permutation, span_corruption, text_infilling
from .denoising import step_generator
from .objectives import token_loss


def pad_rows(rows: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-d id tensors into (ids [B, L], mask [B, L] with 1 on real tokens): ``pad_batch``, 0/1 mask."""
    ids, mask = pad_batch([row.tolist() for row in rows], pad_id)
    return ids, mask.long()


def num_sentinels(context: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> int:
    """How many sentinel ids span corruption of ``context`` tokens can use (T5's ``<extra_id_k>``)."""
    return max(round(max(round(context * noise_density), 1) / mean_span_length), 1)


class Seq2SeqLM:
    """Teacher forcing: the decoder reads ``start_id`` + target[:-1] and predicts the target."""

    def __init__(self, start_id: int, label_smoothing: float = 0.0) -> None:
        self.start_id, self.label_smoothing = int(start_id), label_smoothing

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        target, target_mask = batch["target"], batch.get("target_mask")
        start = torch.full_like(target[:, :1], self.start_id)
        logits, _ = model(torch.cat([start, target[:, :-1]], 1), source=batch["source"],
                          source_mask=batch.get("source_mask"))
        loss = token_loss(logits, target, target_mask, self.label_smoothing)
        return loss, int(target_mask.sum()) if target_mask is not None else target.numel()

    def pairs(self, sources: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], pad_id: int,
              device: torch.device) -> dict:
        """A padded batch of (source, target) rows on ``device``."""
        (src, src_mask), (tgt, tgt_mask) = pad_rows(sources, pad_id), pad_rows(targets, pad_id)
        return {"source": src.to(device), "source_mask": src_mask.to(device), "target": tgt.to(device),
                "target_mask": tgt_mask.to(device)}


class SpanCorruption(Seq2SeqLM):
    """T5: drop ``noise_density`` of each window in spans of mean ``mean_span_length``, each span
    a sentinel (vocab_size-1-k) in the source; the target is the spans behind their sentinels."""

    def __init__(self, vocab_size: int, *, start_id: int, pad_id: int, eos_id: int | None = None,
                 noise_density: float = 0.15, mean_span_length: float = 3.0, seed: int = 0) -> None:
        super().__init__(start_id)
        self.vocab_size, self.pad_id, self.eos_id, self.seed = vocab_size, pad_id, eos_id, seed
        self.noise_density, self.mean_span_length = noise_density, mean_span_length

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        ids = batch["input"]
        gen = step_generator(self.seed, int(batch.get("step", 0)))
        pairs = [span_corruption(row, vocab_size=self.vocab_size, noise_density=self.noise_density,
                                 mean_span_length=self.mean_span_length, eos_id=self.eos_id, generator=gen)
                 for row in ids.cpu()]
        return super().__call__(model, self.pairs([s for s, _ in pairs], [t for _, t in pairs], self.pad_id,
                                                  ids.device))


class Denoising(Seq2SeqLM):
    """BART: text infilling (``rate`` of the tokens in Poisson(λ) spans, each span one mask) and,
    when ``sentence_end_id`` is given, sentence permutation; the target is the original window."""

    def __init__(self, mask_id: int, *, start_id: int, pad_id: int, rate: float = 0.3, poisson_lambda: float = 3.0,
                 sentence_end_id: int | None = None, seed: int = 0) -> None:
        super().__init__(start_id)
        self.mask_id, self.pad_id, self.rate, self.poisson_lambda = mask_id, pad_id, rate, poisson_lambda
        self.sentence_end_id, self.seed = sentence_end_id, seed

    def noise(self, row: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.sentence_end_id is not None:
            row = sentence_permutation(row, sentence_ends=row == self.sentence_end_id, generator=gen)
        return text_infilling(row, mask_id=self.mask_id, rate=self.rate, poisson_lambda=self.poisson_lambda,
                              generator=gen)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        ids = batch["input"]
        gen = step_generator(self.seed, int(batch.get("step", 0)))
        rows = list(ids.cpu())
        return super().__call__(model, self.pairs([self.noise(r, gen) for r in rows], rows, self.pad_id, ids.device))

