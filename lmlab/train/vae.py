"""Training a sentence VAE (``lmlab.models.sentence_vae``) on the one trainer, and the figures that tell
whether its latent code is used (the posterior-collapse story).

The loss is the negative ELBO per sentence, reconstruction + β·KL(q(z|x) ‖ N(0, I)), with:

* **KL annealing** — ``kl_weight``: β rises linearly from 0 to 1 over ``anneal_steps`` (Bowman et
  al., 2016), or cyclically: the schedule is cut into ``cycles`` cycles, β rising linearly over the
  first ``ratio`` of each and held at 1 for the rest (Fu et al., 2019);
* **free bits** — ``free_bits_kl``: each latent dimension's batch-mean KL counts at least λ nats,
  so the optimiser gains nothing by pushing it below λ (Kingma et al., 2016);
* **word dropout** — ``word_dropout``: decoder input tokens replaced by UNK with probability p, so
  the decoder must lean on z (Bowman et al., 2016).

``evaluate_vae`` gives the NLL bound (−ELBO with β = 1, z sampled once per sentence) per token and
its perplexity, the KL per sentence and the number of active units (Burda et al., 2016: latent
dimensions whose posterior mean varies across the data with variance above 0.01).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.validate import check_choice, check_number
from ..data.loaders import pad_batch, shuffled_batch
from ..models.sentence_vae import SentenceVAE
from .trainer import TrainConfig, TrainResult, train

SCHEDULES = ("none", "linear", "cyclical")


def kl_weight(step: int, total_steps: int, schedule: str = "linear", *, anneal_steps: int | None = None,
              cycles: int = 4, ratio: float = 0.5) -> float:
    """β at optimizer step ``step`` (0-based) of ``total_steps``: 'none' 1; 'linear' step / anneal_steps
    (default: half the run) capped at 1; 'cyclical' Fu et al.'s (step mod L) / (L·ratio) capped at 1,
    L = total_steps / cycles."""
    check_choice("kl schedule", schedule, SCHEDULES)
    if schedule == "none":
        return 1.0
    if schedule == "linear":
        span = anneal_steps if anneal_steps is not None else max(1, total_steps // 2)
        check_number("anneal_steps", span, low=1, integer=True)
        return min(1.0, step / span)
    check_number("cycles", cycles, low=1, integer=True)
    check_number("ratio", ratio, low=0.0, high=1.0, low_inclusive=False)
    period = total_steps / cycles
    return min(1.0, (step % period) / (period * ratio))


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Σ_d max(mean over the batch of KL_d, λ) (Kingma et al., 2016); λ = 0 is the plain batch-mean KL."""
    check_number("free_bits", free_bits, low=0.0)
    return kl.mean(0).clamp(min=free_bits).sum()


def word_dropout(inputs: torch.Tensor, p: float, unk_id: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """``inputs`` [B, T] with each token after the first (BOS) replaced by ``unk_id`` with probability p."""
    check_number("word_dropout", p, low=0.0, high=1.0, high_inclusive=False)
    if p == 0:
        return inputs
    drop = torch.rand(inputs.shape, generator=generator, device="cpu").to(inputs.device) < p
    drop[:, 0] = False
    return inputs.masked_fill(drop, unk_id)


class ELBO:
    """``objective(model, batch) -> (loss, tokens)``: reconstruction + β·KL per sentence, with the annealing
    schedule, free bits and word dropout above; ``latent=False`` trains the same decoder as a plain
    LSTM LM (z = 0, no KL). ``metrics()``: reconstruction, KL and β of the last batch."""

    plot_keys = ("kl", "beta")

    def __init__(self, total_steps: int, *, schedule: str = "none", anneal_steps: int | None = None,
                 cycles: int = 4, ratio: float = 0.5, free_bits: float = 0.0, word_dropout: float = 0.0,
                 unk_id: int | None = None, latent: bool = True) -> None:
        kl_weight(0, total_steps, schedule, anneal_steps=anneal_steps, cycles=cycles, ratio=ratio)  # checks
        check_number("free_bits", free_bits, low=0.0)
        check_number("word_dropout", word_dropout, low=0.0, high=1.0, high_inclusive=False)
        if word_dropout and unk_id is None:
            raise ConfigError("word dropout replaces tokens with UNK, and the tokenizer has none",
                              "train with a tokenizer that has <unk>, or leave word dropout out")
        self.total_steps, self.schedule, self.anneal_steps = total_steps, schedule, anneal_steps
        self.cycles, self.ratio, self.free_bits = cycles, ratio, free_bits
        self.word_dropout, self.unk_id, self.latent = word_dropout, unk_id, latent
        self.last: dict[str, float] = {}

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        inputs = batch["input"]
        if self.word_dropout:
            inputs = word_dropout(inputs, self.word_dropout, self.unk_id)
        logits, mean, logvar = model(batch["source"], batch["source_mask"], inputs, latent=self.latent)
        mask = batch["mask"]
        reconstruction = reconstruction_nll(logits, batch["target"], mask).mean()
        kl = model.latent_kl(mean, logvar) if self.latent else torch.zeros_like(mean)
        beta = kl_weight(int(batch.get("step", 0)), self.total_steps, self.schedule, anneal_steps=self.anneal_steps,
                         cycles=self.cycles, ratio=self.ratio) if self.latent else 0.0
        loss = reconstruction + beta * free_bits_kl(kl, self.free_bits)
        self.last = {"reconstruction": float(reconstruction.detach()), "kl": float(kl.detach().sum(1).mean()),
                     "beta": beta}
        return loss, int(mask.sum())

    def metrics(self) -> dict[str, float]:
        return dict(self.last)


def reconstruction_nll(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−log p(x | z) of each sentence [B]: token cross-entropies summed over its real positions."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return (nll * mask.float()).sum(1)


class SentencePairs:
    """Sentences as VAE batches: ``source`` (ids + EOS, what the encoder reads), ``input`` (BOS + ids),
    ``target`` (ids + EOS) and masks; reshuffled every pass with ``seed``."""

    def __init__(self, sentences: Sequence[Sequence[int]], batch_size: int, *, bos_id: int, eos_id: int,
                 pad_id: int = 0, seed: int = 0) -> None:
        check_number("batch_size", batch_size, low=1, integer=True)
        self.rows = [list(s) for s in sentences if len(s)]
        if len(self.rows) < batch_size:
            raise DataError(f"{len(self.rows)} non-empty sentences are fewer than one batch of {batch_size}",
                            "lower the batch size or give more text")
        self.batch_size, self.bos_id, self.eos_id, self.pad_id, self.seed = batch_size, bos_id, eos_id, pad_id, seed

    def rows_batch(self, picked: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of the sentences numbered ``picked``."""
        rows = [self.rows[i] for i in picked]
        source, source_mask = pad_batch([r + [self.eos_id] for r in rows], self.pad_id)
        inputs, mask = pad_batch([[self.bos_id] + r for r in rows], self.pad_id)
        target, _ = pad_batch([r + [self.eos_id] for r in rows], self.pad_id)
        return {"source": source, "source_mask": source_mask, "input": inputs, "target": target, "mask": mask}

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        return self.rows_batch(shuffled_batch(len(self.rows), self.batch_size, index * world + rank, self.seed))


@torch.no_grad()
def evaluate_vae(model: SentenceVAE, data: SentencePairs, *, latent: bool = True, seed: int = 0,
                 batch_size: int = 256) -> dict[str, float]:
    """On every sentence of ``data``: the NLL bound per token (−ELBO with β = 1, one z sampled per sentence;
    the exact NLL for ``latent=False``) and its perplexity, the KL per sentence, and the active units
    (dimensions whose posterior mean has variance above 0.01 across the sentences)."""
    was = model.training
    model.train()  # sample z from q (the bound), with dropout off
    dropout = model.dropout.p
    model.dropout.p = 0.0
    torch.manual_seed(seed)
    nll, kl, tokens, means = 0.0, 0.0, 0, []
    try:
        for start in range(0, len(data.rows), batch_size):
            batch = data.rows_batch(range(start, min(start + batch_size, len(data.rows))))
            logits, mean, logvar = model(batch["source"], batch["source_mask"], batch["input"], latent=latent)
            nll += float(reconstruction_nll(logits, batch["target"], batch["mask"]).sum())
            kl += float(model.latent_kl(mean, logvar).sum()) if latent else 0.0
            tokens += int(batch["mask"].sum())
            means.append(model.posterior_means(mean) if latent else mean.float().unsqueeze(-1))
    finally:
        model.dropout.p = dropout
        model.train(was)
    n = len(data.rows)
    bound = (nll + kl) / tokens
    variance = torch.cat(means).var(0).sum(-1)  # per latent variable (a categorical one: over its probabilities)
    return {"nll_bound_per_token": bound, "perplexity_bound": math.exp(bound), "kl_per_sentence": kl / n,
            "reconstruction_per_sentence": nll / n, "active_units": int((variance > 0.01).sum()) if latent else 0}


def train_vae(model: SentenceVAE, data: SentencePairs, run_dir: str | os.PathLike, *, steps: int = 1000,
              lr: float = 1e-3, objective: ELBO | None = None, seed: int = 0,
              training: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``objective`` (default: the plain ELBO) through
    ``lmlab.train.train`` (constant ``lr``, ``training`` overrides)."""
    config = TrainConfig.from_dict({"steps": steps, "lr": lr, "schedule": "constant", "weight_decay": 0.0,
                                    "clip": 5.0, "log_every": max(1, steps // 50), "seed": seed,
                                    **(training or {})})
    return train(model, objective or ELBO(steps), data, config, run_dir)


@dataclass
class VAERun:
    """What ``fit_sentence_vae`` trained: the model, its tokenizer, where it was saved, the trainer's
    result and the ``evaluate_vae`` figures on the validation sentences."""

    model: SentenceVAE
    tokenizer: Any
    model_dir: Path
    train: TrainResult
    scores: dict[str, float]


def fit_sentence_vae(texts: Sequence[str], run_dir: str | os.PathLike, *, valid: Sequence[str] | None = None,
                     tokenizer: Any = None, d_embed: int = 128, d_hidden: int = 256, d_latent: int = 16,
                     dropout: float = 0.2, steps: int = 1000, batch_size: int = 32, lr: float = 2e-3,
                     schedule: str = "none", anneal_steps: int | None = None, cycles: int = 4, ratio: float = 0.5,
                     free_bits: float = 0.0, word_dropout: float = 0.0, latent: bool = True,
                     latent_type: str = "gaussian", n_categories: int = 10, tau: float = 1.0, seed: int = 0) -> VAERun:
    """Train a ``SentenceVAE`` on the sentences ``texts`` (one per item; a word-level tokenizer is trained on
    them unless ``tokenizer`` is given; ``latent_type``, ``n_categories`` and ``tau`` as ``SentenceVAE``'s) with the
    ``ELBO`` settings named as there, evaluate it on ``valid``
    (else the training sentences) and save it, with its tokenizer, as the model directory ``run_dir/model``.
    ``latent=False`` trains the same decoder as a plain LSTM LM (the baseline of the bound)."""
    from ..models.directory import save_model_dir
    from ..tokenizers import WordLevelTokenizer

    texts = [t.strip() for t in texts if t.strip()]
    if tokenizer is None:
        tokenizer = WordLevelTokenizer("word").train(texts)
    if tokenizer.bos_id is None or tokenizer.eos_id is None:
        raise ConfigError("a sentence VAE needs BOS and EOS tokens", "use a word or char tokenizer (<s>, </s>)")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0

    def pairs(lines: Sequence[str], size: int) -> SentencePairs:
        return SentencePairs([tokenizer.encode(t) for t in lines], size, bos_id=tokenizer.bos_id,
                             eos_id=tokenizer.eos_id, pad_id=pad, seed=seed)

    train_pairs = pairs(texts, batch_size)
    valid_lines = [t.strip() for t in valid if t.strip()] if valid is not None else texts
    objective = ELBO(steps, schedule=schedule, anneal_steps=anneal_steps, cycles=cycles, ratio=ratio,
                     free_bits=free_bits, word_dropout=word_dropout, unk_id=tokenizer.unk_id, latent=latent)
    torch.manual_seed(seed)
    model = SentenceVAE(tokenizer.vocab_size, d_embed=d_embed, d_hidden=d_hidden, d_latent=d_latent, dropout=dropout,
                        latent_type=latent_type, n_categories=n_categories, tau=tau)
    result = train_vae(model, train_pairs, run_dir, steps=steps, lr=lr, objective=objective, seed=seed)
    model.eval()
    scores = evaluate_vae(model, pairs(valid_lines, 1), latent=latent, seed=seed)
    model_dir = save_model_dir(Path(run_dir) / "model", *model.to_state(), tokenizer=tokenizer)
    return VAERun(model, tokenizer, Path(model_dir), result, scores)
