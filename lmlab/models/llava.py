"""A LLaVA-style vision–language model (Liu et al., 2023, "Visual Instruction Tuning"): a frozen image
encoder's states, mapped by a trained projector into a frozen language model's embedding space, are put
in front of the text as if they were token embeddings; only the projector learns (LLaVA's first stage,
feature alignment; LLaVA-1.5's projector, two linear layers with a GELU between them).

The image tokens are the encoder's [CLS] state followed by its patch states (``PatchEncoder``). They
enter through the language model's embedding layer (``ImagePrefixEmbedding``), which
``TransformerLM`` already honours for prompt tuning: the prefix takes the first positions, the
attention mask is extended over it, and its outputs are dropped — so the logits are the text's.
``blind=True`` gives the text-only baseline with the same training: every image is replaced by a
blank one, so the projector can learn the answers' prior but nothing about the picture.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ModelError
from .transformer import TransformerLM
from .vision import PatchEncoder


class ImagePrefixEmbedding(nn.Module):
    """An embedding layer that puts ``prefix`` ([B, N, d], set for one forward) before every row's tokens."""

    def __init__(self, base: nn.Embedding) -> None:
        super().__init__()
        self.base = base
        self.prefix: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:  # models that tie the output layer to the embedding
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embedded = self.base(ids)
        if self.prefix is None:
            return embedded
        if self.prefix.shape[0] != ids.shape[0]:
            raise ModelError(f"{self.prefix.shape[0]} images for {ids.shape[0]} texts", "give one image per text")
        return torch.cat([self.prefix.to(embedded.dtype), embedded], dim=1)


class VisionLanguageModel(nn.Module):
    """Frozen ``image_encoder`` and ``lm`` joined by a trainable projector (see the module docstring)."""

    def __init__(self, image_encoder: PatchEncoder, lm: TransformerLM, *, blind: bool = False) -> None:
        super().__init__()
        if not isinstance(lm.embed, nn.Embedding):
            raise ModelError("the language model's embedding layer is already wrapped (a prompt-tuned model?)",
                             "join an unadapted language model")
        self.image_encoder, self.lm, self.blind = image_encoder, lm, blind
        for p in [*image_encoder.parameters(), *lm.parameters()]:
            p.requires_grad_(False)
        width = lm.config.d_model
        self.projector = nn.Sequential(nn.Linear(image_encoder.d_model, width), nn.GELU(), nn.Linear(width, width))
        lm.embed = ImagePrefixEmbedding(lm.embed)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The projected [CLS] and patch states of ``images`` [B, H, W]: [B, 1 + patches, d_model of the LM]."""
        if self.blind:
            images = torch.zeros_like(images)
        with torch.no_grad():
            cls, patches = self.image_encoder(images)
        return self.projector(torch.cat([cls[:, None], patches], dim=1))

    def forward(self, images: torch.Tensor, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits [B, T, V] of the text ``ids`` [B, T] read after each row's image tokens."""
        self.lm.embed.prefix = self.image_tokens(images)
        try:
            logits, _ = self.lm(ids, attention_mask=attention_mask)
        finally:
            self.lm.embed.prefix = None
        return logits

    def train(self, mode: bool = True) -> VisionLanguageModel:
        """Only the projector trains: the frozen parts stay in evaluation mode (no dropout)."""
        super().train(mode)
        self.image_encoder.eval()
        self.lm.eval()
        return self
