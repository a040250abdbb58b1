"""A sentence variational autoencoder (Bowman et al., 2016, "Generating sentences from a continuous space").

A bidirectional LSTM reads the sentence; its two final states give the mean and log-variance of a
diagonal Gaussian q(z | x) over a ``d_latent``-dimensional code; a sample z (the reparameterised
μ + σ·ε while training, μ otherwise) starts an LSTM decoder (its initial state is a projection of
z) and is fed beside every input token, and the decoder predicts the sentence as a language model
would. The prior is N(0, I). The training objective (ELBO, KL annealing, free bits, word dropout)
is ``lmlab.train.vae``.

``latent_type="categorical"`` makes the code discrete: ``d_latent`` categorical variables of
``n_categories`` values each, q(z | x) their softmax, a sample the straight-through Gumbel-softmax
one-hot while training (``lmlab.models.gumbel``; the mode otherwise), the prior uniform — a
discrete-latent VAE on the same encoder and decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..core.errors import InputError, ModelError
from ..core.validate import check_choice, check_number
from ..lm import LanguageModel
from .gumbel import categorical_kl_uniform, gumbel_softmax
from .neural import unique_tensors
from .seq2seq import bound_prefill

MODEL_TYPE = "sentence_vae"
LATENT_TYPES = ("gaussian", "categorical")


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per dimension [B, D]: ½(μ² + σ² − 1 − log σ²)."""
    return 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float())


class SentenceVAE(nn.Module):
    """Encoder q(z | x), decoder p(x | z) over one vocabulary (see the module docstring)."""

    def __init__(self, vocab_size: int, *, d_embed: int = 128, d_hidden: int = 256, d_latent: int = 16,
                 dropout: float = 0.0, latent_type: str = "gaussian", n_categories: int = 10,
                 tau: float = 1.0) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_embed", d_embed), ("d_hidden", d_hidden),
                            ("d_latent", d_latent)):
            check_number(name, value, low=1, integer=True)
        check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        check_choice("latent_type", latent_type, LATENT_TYPES)
        check_number("n_categories", n_categories, low=2, integer=True)
        check_number("tau", tau, low=0.0, low_inclusive=False)
        self.d_hidden, self.d_latent, self.latent_type, self.tau = d_hidden, d_latent, latent_type, tau
        self.n_categories = n_categories if latent_type == "categorical" else 1
        self.args = dict(vocab_size=vocab_size, d_embed=d_embed, d_hidden=d_hidden, d_latent=d_latent, dropout=dropout,
                         latent_type=latent_type, n_categories=n_categories, tau=tau)
        code = d_latent * self.n_categories  # the width of z as the decoder reads it (one-hot per variable)
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.LSTM(d_embed, d_hidden, batch_first=True, bidirectional=True)
        self.to_mean = nn.Linear(2 * d_hidden, code)  # categorical: the logits of q(z | x)
        self.to_logvar = nn.Linear(2 * d_hidden, d_latent) if latent_type == "gaussian" else None
        self.from_latent = nn.Linear(code, 2 * d_hidden)
        self.decoder = nn.LSTM(d_embed + code, d_hidden, batch_first=True)
        self.head = nn.Linear(d_hidden, vocab_size)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x) for right-padded ids [B, T] (mask: True = real): (mean, log-variance) [B, d_latent], or
        for a categorical code (logits [B, d_latent, n_categories], an empty tensor)."""
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        summary = torch.cat([h[0], h[1]], dim=-1)
        if self.to_logvar is None:
            return self.to_mean(summary).view(-1, self.d_latent, self.n_categories), summary.new_empty(0)
        return self.to_mean(summary), self.to_logvar(summary)

    def sample(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ·ε while training (the reparameterisation trick), μ otherwise; a categorical code: the
        straight-through Gumbel-softmax sample while training, the most likely value otherwise (one-hot,
        flattened to [B, d_latent · n_categories])."""
        if self.to_logvar is None:
            if self.training:
                return gumbel_softmax(mean, self.tau, hard=True).flatten(1)
            return torch.zeros_like(mean).scatter_(-1, mean.argmax(-1, keepdim=True), 1.0).flatten(1)
        if not self.training:
            return mean
        return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)

    def latent_kl(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z | x) ‖ prior) per latent variable [B, d_latent] from ``encode``'s pair."""
        if self.to_logvar is None:
            return categorical_kl_uniform(mean)
        return gaussian_kl(mean, logvar)

    def posterior_means(self, mean: torch.Tensor) -> torch.Tensor:
        """E[z | x] per variable [B, d_latent, 1] (Gaussian) or [B, d_latent, n_categories] (the probabilities):
        what active units are counted on."""
        return mean.float().softmax(-1) if self.to_logvar is None else mean.float().unsqueeze(-1)

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
            zero = inputs.new_zeros(inputs.shape[0], self.d_latent * self.n_categories, dtype=self.head.weight.dtype)
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


class CodeDecoder(LanguageModel):
    """A ``SentenceVAE``'s decoder bound to codes ``z`` [N, code width] as a language model, so that it
    decodes through the one decoding loop: row i of a batch reads code row i (or the one code, shared);
    the state is the decoder LSTM's (h, c) and each row's code."""

    def __init__(self, vae: SentenceVAE, z: torch.Tensor, *, bos_id: int | None = None,
                 eos_id: int | None = None) -> None:
        width = vae.d_latent * vae.n_categories
        if z.dim() != 2 or z.shape[1] != width:
            raise InputError(f"codes of shape {tuple(z.shape)} given; this VAE decodes [N, {width}]",
                             "encode sentences with the same model, or pass one code per row")
        self.vae, self.z, self.bos_id, self.eos_id = vae, z.detach(), bos_id, eos_id

    @property
    def vocab_size(self) -> int:
        return self.vae.head.out_features

    @property
    def device(self) -> torch.device:
        return self.vae.head.weight.device

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.z
        if len(z) != batch_size:
            if len(z) != 1:
                raise InputError(f"{len(z)} codes for a batch of {batch_size}", "bind one code per row, or one code")
            z = z.expand(batch_size, -1)
        start = torch.tanh(self.vae.from_latent(z)).view(-1, 2, self.vae.d_hidden).transpose(0, 1).contiguous()
        return start[:1].contiguous(), start[1:].contiguous(), z

    def next_logprobs(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        scores, state = self.next_scores(tokens, state)
        return scores.float().log_softmax(-1), state

    def next_scores(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        h, c, z = state
        x = self.vae.embed(tokens.to(self.device))
        x = torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
        out, (h, c) = self.vae.decoder(x, (h, c))
        return self.vae.head(out[:, -1]), (h, c, z)

    def select_state(self, state: tuple, index: torch.Tensor) -> tuple:
        h, c, z = state
        return h[:, index], c[:, index], z[index]

    def concat_states(self, states: list) -> tuple:
        return (torch.cat([s[0] for s in states], 1), torch.cat([s[1] for s in states], 1),
                torch.cat([s[2] for s in states], 0))

    def prefill(self, prompts, reserve: int = 0, setup=None):
        """Row i decodes code row i (or the one code): see ``seq2seq.bound_prefill``."""
        return bound_prefill(self, prompts, setup)
