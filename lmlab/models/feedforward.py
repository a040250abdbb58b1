"""Bengio et al.'s (2003) feed-forward neural n-gram LM.

The previous ``order - 1`` tokens are embedded, concatenated and passed through a tanh
hidden layer; optional direct connections feed the concatenated embeddings straight to the
output. Before the start of a sequence the context is filled with BOS (or id 0). The state
is the last ``order - 1`` ids of every row.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.validate import check_number
from .neural import NeuralLM


class FeedForwardLM(NeuralLM):
    """p(w_t | w_{t-n+1} … w_{t-1}) = softmax(b + W x + U tanh(d + H x)), x the concatenated embeddings."""

    model_type = "feedforward"

    def __init__(self, vocab_size: int, *, order: int = 5, d_embed: int = 64, d_hidden: int = 256,
                 dropout: float = 0.0, direct: bool = False, pad_context_id: int = 0) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_embed", d_embed), ("d_hidden", d_hidden)):
            check_number(name, value, low=1, integer=True)
        check_number("order", order, low=2, integer=True)
        check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        self.args = dict(vocab_size=vocab_size, order=order, d_embed=d_embed, d_hidden=d_hidden,
                         dropout=dropout, direct=direct, pad_context_id=pad_context_id)
        self.set_special_ids(None)
        self.embed = nn.Embedding(vocab_size, d_embed)
        width = (order - 1) * d_embed
        self.hidden = nn.Linear(width, d_hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_hidden, vocab_size)
        self.direct = nn.Linear(width, vocab_size, bias=False) if direct else None

    def initial_state(self, batch_size: int) -> torch.Tensor:
        fill = self.bos_id if self.bos_id is not None else self.args["pad_context_id"]
        return torch.full((batch_size, self.args["order"] - 1), fill, dtype=torch.long, device=self.device)

    def select_state(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return state.index_select(0, index.to(state.device))

    def forward(self, ids: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T, V]: position t predicts the token after ids[:, t] from the n-1 tokens ending there."""
        if state is None:
            state = self.initial_state(ids.shape[0])
        n = self.args["order"] - 1
        seq = torch.cat([state.to(ids.device), ids], dim=1)
        windows = seq.unfold(1, n, 1)[:, 1:]  # [B, T, n]: the n ids ending at each position of ids
        x = self.dropout(self.embed(windows).flatten(2))
        logits = self.head(self.dropout(torch.tanh(self.hidden(x))))
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits, seq[:, -n:]
