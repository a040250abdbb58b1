"""Recurrent LMs: multi-layer Elman RNN, LSTM or GRU over token embeddings.

The state is the hidden state (h, or (h, c) for the LSTM) of every layer; training with
truncated backpropagation carries it across segments (detached), and decoding carries it
token by token. ``context_length`` is None: the model conditions on everything it has seen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.validate import check_choice, check_number
from .neural import NeuralLM

CELLS = ("rnn", "lstm", "gru")


class RecurrentLM(NeuralLM):
    """Embedding → ``n_layers`` recurrent layers → linear output (optionally tied to the embedding)."""

    model_type = "recurrent"

    def __init__(self, vocab_size: int, *, cell: str = "lstm", d_embed: int = 200, d_hidden: int = 200,
                 n_layers: int = 2, dropout: float = 0.0, tie_embeddings: bool = False,
                 init_range: float = 0.1) -> None:
        super().__init__()
        check_choice("cell", cell, CELLS)
        for name, value in (("vocab_size", vocab_size), ("d_embed", d_embed), ("d_hidden", d_hidden),
                            ("n_layers", n_layers)):
            check_number(name, value, low=1, integer=True)
        check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        if tie_embeddings and d_embed != d_hidden:
            from ..core.errors import ConfigError
            raise ConfigError("tied embeddings need d_embed == d_hidden", "set both to the same width")
        self.args = dict(vocab_size=vocab_size, cell=cell, d_embed=d_embed, d_hidden=d_hidden,
                         n_layers=n_layers, dropout=dropout, tie_embeddings=tie_embeddings, init_range=init_range)
        self.set_special_ids(None)
        self.embed = nn.Embedding(vocab_size, d_embed)
        rnn_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_class(d_embed, d_hidden, n_layers, batch_first=True, dropout=dropout if n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_hidden, vocab_size)
        for p in self.parameters():  # Zaremba et al.: uniform in [-0.1, 0.1]
            nn.init.uniform_(p, -init_range, init_range)
        if tie_embeddings:
            self.head.weight = self.embed.weight

    def initial_state(self, batch_size: int) -> Any:
        shape = (self.args["n_layers"], batch_size, self.args["d_hidden"])
        h = torch.zeros(shape, device=self.device)
        return (h, torch.zeros_like(h)) if self.args["cell"] == "lstm" else h

    def select_state(self, state: Any, index: torch.Tensor) -> Any:
        if isinstance(state, tuple):
            return tuple(s.index_select(1, index.to(s.device)) for s in state)
        return state.index_select(1, index.to(state.device))

    def concat_states(self, states: list[Any]) -> Any:
        """Hidden states are [layers, B, hidden]: rows join along dimension 1."""
        if isinstance(states[0], tuple):
            return tuple(torch.cat([s[i] for s in states], dim=1) for i in range(len(states[0])))
        return torch.cat(states, dim=1)

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits [B, T, V] and the hidden state after ``ids`` [B, T]."""
        if state is None:
            state = self.initial_state(ids.shape[0])
        x = self.dropout(self.embed(ids))
        out, state = self.rnn(x, state)
        return self.head(self.dropout(out)), state


def detach_state(state: Any) -> Any:
    """Cut the graph behind a carried hidden state (truncated backpropagation through time)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
