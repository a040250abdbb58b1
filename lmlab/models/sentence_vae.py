"""A sentence variational autoencoder (Bowman et al., 2016, "Generating sentences from a continuous space").

A bidirectional LSTM reads the sentence; its two final states give the mean and log-variance of a
diagonal Gaussian q(z | x) over a ``d_latent``-dimensional code; a sample z (the reparameterised
μ + σ·ε while training, μ otherwise) starts an LSTM decoder (its initial state is a projection of
z) and is fed beside every input token, and the decoder predicts the sentence as a language model
would. The prior is N(0, I). The training objective (ELBO, KL annealing, free bits, word dropout)
is ``lmlab.train.vae``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..core.errors import ModelError
from ..core.validate import check_number
from .neural import unique_tensors

MODEL_TYPE = "sentence_vae"


class SentenceVAE(nn.Module):
    """Encoder q(z | x), decoder p(x | z) over one vocabulary (see the module docstring)."""

    def __init__(self, vocab_size: int, *, d_embed: int = 128, d_hidden: int = 256, d_latent: int = 16,
                 dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_embed", d_embed), ("d_hidden", d_hidden),
                            ("d_latent", d_latent)):
            check_number(name, value, low=1, integer=True)
        check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.d_hidden, self.d_latent = d_hidden, d_latent
        self.args = dict(vocab_size=vocab_size, d_embed=d_embed, d_hidden=d_hidden, d_latent=d_latent, dropout=dropout)
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.LSTM(d_embed, d_hidden, batch_first=True, bidirectional=True)
        self.to_mean = nn.Linear(2 * d_hidden, d_latent)
        self.to_logvar = nn.Linear(2 * d_hidden, d_latent)
        self.from_latent = nn.Linear(d_latent, 2 * d_hidden)
        self.decoder = nn.LSTM(d_embed + d_latent, d_hidden, batch_first=True)
        self.head = nn.Linear(d_hidden, vocab_size)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) [B, d_latent] of q(z | x) for right-padded ids [B, T] (mask: True = real)."""
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        summary = torch.cat([h[0], h[1]], dim=-1)
        return self.to_mean(summary), self.to_logvar(summary)

    def sample(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ·ε while training (the reparameterisation trick), μ otherwise."""
        if not self.training:
            return mean
        return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)

    def decode(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V] after each input token [B, T], given codes z [B, d_latent]."""
        start = torch.tanh(self.from_latent(z)).view(-1, 2, self.d_hidden).transpose(0, 1).contiguous()
        x = self.dropout(self.embed(inputs))
        x = torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
        out, _ = self.decoder(x, (start[:1], start[1:]))
        return self.head(self.dropout(out))

    def forward(self, source: torch.Tensor, source_mask: torch.Tensor, inputs: torch.Tensor, *,
                latent: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, mean, logvar); ``latent=False`` decodes from z = 0 with no encoder: the same decoder as
        a plain LSTM language model (the baseline of the ELBO's bound)."""
        if not latent:
            zero = inputs.new_zeros(inputs.shape[0], self.d_latent, dtype=self.head.weight.dtype)
            return self.decode(inputs, zero), zero, zero
        mean, logvar = self.encode(source, source_mask)
        return self.decode(inputs, self.sample(mean, logvar)), mean, logvar

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config.json, tensors) of a model directory (``lmlab.models.directory.save_model_dir``)."""
        return {"model_type": MODEL_TYPE, **self.args}, unique_tensors(self.state_dict())

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> SentenceVAE:
        """The model a ``to_state`` pair describes, in eval mode."""
        if config.get("model_type") != MODEL_TYPE:
            raise ModelError(f"a {config.get('model_type')!r} model is not a sentence VAE",
                             "pass a directory written by lmlab vae")
        model = cls(**{k: v for k, v in config.items() if k != "model_type"})
        model.load_state_dict(tensors)
        return model.eval()
