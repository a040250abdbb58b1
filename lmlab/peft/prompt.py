"""Prompt tuning (Lester et al. 2021): n trainable soft-token embeddings prepended to the input.

The model's embedding layer is wrapped so that ``embed(ids)`` returns ``[soft; embed(ids)]``
(batch, n + length, dim); everything else is frozen. Callers extend the attention mask and
labels by n positions with ``extend_mask`` / ``extend_labels`` and drop the first n outputs
with ``strip_prompt``. For cached decoding, prepend only on the first (prefill) call:
set ``wrapper.enabled = False`` for the decode steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.seed import make_generator
from ..core.validate import check_number
from . import record
from .targets import find_modules, freeze, replace_module

IGNORE_INDEX = -100


@dataclass
class PromptConfig:
    """Number of soft tokens, the embedding module, and how to initialise the soft tokens.

    ``init_ids`` (e.g. a tokenised task description, cycled to n_tokens) copies those tokens'
    embeddings; otherwise n random vocabulary rows are copied (seeded), as Lester et al. do.
    """

    method: ClassVar[str] = "prompt"
    n_tokens: int = 20
    target: str = "embed_tokens"
    init_ids: list[int] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("n_tokens", self.n_tokens, low=1, integer=True)


class PromptEmbedding(nn.Module):
    """An embedding layer that prepends ``soft_prompt`` (n, dim) to every sequence."""

    adapter_names = ("soft_prompt",)

    def __init__(self, base: nn.Embedding, soft_prompt: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.soft_prompt = nn.Parameter(soft_prompt)
        self.enabled = True

    @property
    def n_tokens(self) -> int:
        return self.soft_prompt.shape[0]

    @property
    def weight(self) -> torch.Tensor:  # models that tie the output layer to the embedding
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embedded = self.base(ids)
        if not self.enabled:
            return embedded
        soft = self.soft_prompt.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        return torch.cat([soft, embedded], dim=1)


def extend_mask(attention_mask: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Prepend n ones (the soft tokens are always visible) to a (batch, length) mask."""
    ones = attention_mask.new_ones(attention_mask.shape[0], n_tokens)
    return torch.cat([ones, attention_mask], dim=1)


def extend_labels(labels: torch.Tensor, n_tokens: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Prepend n ignored positions (no loss on soft tokens) to (batch, length) labels."""
    pad = labels.new_full((labels.shape[0], n_tokens), ignore_index)
    return torch.cat([pad, labels], dim=1)


def strip_prompt(outputs: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Drop the soft tokens' positions from (batch, n + length, ...) outputs."""
    return outputs[:, n_tokens:]


def apply_prompt(model: nn.Module, config: PromptConfig) -> nn.Module:
    """Freeze ``model`` and wrap its embedding layer to prepend trainable soft tokens (in place)."""
    fingerprint = record.start(model, config)
    names = find_modules(model, [config.target], kinds=(nn.Embedding,))
    if len(names) != 1:
        raise ConfigError(f"target {config.target!r} matches {len(names)} embedding layers: {names}",
                          "name exactly one token-embedding module")
    embedding = model.get_submodule(names[0])
    vocab = embedding.num_embeddings
    if config.init_ids:
        bad = [i for i in config.init_ids if not 0 <= i < vocab]
        if bad:
            raise ConfigError(f"init_ids {bad[:5]} are outside the vocabulary (size {vocab})",
                              "use ids from this model's tokenizer")
        ids = torch.tensor(config.init_ids).repeat(-(-config.n_tokens // len(config.init_ids)))
        ids = ids[: config.n_tokens]
    else:
        ids = torch.randint(vocab, (config.n_tokens,), generator=make_generator(config.seed))
    freeze(model)
    soft = embedding.weight.detach()[ids.to(embedding.weight.device)].clone()
    replace_module(model, names[0], PromptEmbedding(embedding, soft))
    return record.finish(model, config, fingerprint)
