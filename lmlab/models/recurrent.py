"""Recurrent LMs: multi-layer Elman RNN, LSTM or GRU over token embeddings.

The state is the hidden state (h, or (h, c) for the LSTM) of every layer; training with
truncated backpropagation carries it across segments (detached), and decoding carries it
token by token. ``context_length`` is None: the model conditions on everything it has seen.

``bidirectional=True`` is ELMo's biLM (Peters et al., 2018): a forward and a backward stack of
the same shape, sharing the token embeddings and the softmax. The protocol (``forward``, decoding,
perplexity) is the forward LM; ``bidirectional_logits`` gives both directions' predictions (the
``BidirectionalLM`` objective sums their losses) and ``layer_states`` every layer's
[forward; backward] states — ELMo's representations, mixed for a task by ``ScalarMix``.
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
                 init_range: float = 0.1, bidirectional: bool = False) -> None:
        super().__init__()
        check_choice("cell", cell, CELLS)
        for name, value in (("vocab_size", vocab_size), ("d_embed", d_embed), ("d_hidden", d_hidden),
                            ("n_layers", n_layers)):
            check_number(name, value, low=1, integer=True)
        check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        if tie_embeddings and d_embed != d_hidden:
            from ..core.errors import ConfigError
            raise ConfigError("tied embeddings need d_embed == d_hidden", "set both to the same width")
        if bidirectional and d_embed != d_hidden:
            from ..core.errors import ConfigError
            raise ConfigError(f"a biLM's layers are mixed with its token layer, so d_embed ({d_embed}) must equal "
                              f"d_hidden ({d_hidden})", "set both to the same width")
        self.args = dict(vocab_size=vocab_size, cell=cell, d_embed=d_embed, d_hidden=d_hidden,
                         n_layers=n_layers, dropout=dropout, tie_embeddings=tie_embeddings, init_range=init_range,
                         bidirectional=bool(bidirectional))
        self.set_special_ids(None)
        self.embed = nn.Embedding(vocab_size, d_embed)
        rnn_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        if bidirectional:  # one module per layer, so that every layer's states can be read
            self.rnn = nn.ModuleList(rnn_class(d_embed if i == 0 else d_hidden, d_hidden, batch_first=True)
                                     for i in range(n_layers))
            self.backward_rnn = nn.ModuleList(rnn_class(d_embed if i == 0 else d_hidden, d_hidden, batch_first=True)
                                              for i in range(n_layers))
        else:
            self.rnn = rnn_class(d_embed, d_hidden, n_layers, batch_first=True,
                                 dropout=dropout if n_layers > 1 else 0.0)
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
        if self.args["bidirectional"]:
            outputs, state = self._stack(self.rnn, x, state)
            out = outputs[-1]
        else:
            out, state = self.rnn(x, state)
        return self.head(self.dropout(out)), state

    def _stack(self, layers: nn.ModuleList, x: torch.Tensor, state: Any = None) -> tuple[list[torch.Tensor], Any]:
        """Every layer's outputs [B, T, d_hidden] through single-layer ``layers`` (dropout between layers, as
        ``nn.LSTM`` applies it), and the stacked final state."""
        outputs, finals = [], []
        for i, layer in enumerate(layers):
            if state is None:
                layer_state = None
            elif isinstance(state, tuple):
                layer_state = tuple(s[i:i + 1].contiguous() for s in state)
            else:
                layer_state = state[i:i + 1].contiguous()
            x, final = layer(self.dropout(x) if i else x, layer_state)
            outputs.append(x)
            finals.append(final)
        if isinstance(finals[0], tuple):
            return outputs, tuple(torch.cat([f[k] for f in finals]) for k in range(len(finals[0])))
        return outputs, torch.cat(finals)

    def _both_directions(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, list, list]:
        """(token layer, forward layers, backward layers re-aligned to the tokens) of a biLM; rows right-padded
        (``mask``: 1 = real) are reversed over their real tokens only."""
        if not self.args["bidirectional"]:
            from ..core.errors import ModelError
            raise ModelError("this recurrent LM has one direction", "build it with bidirectional=True (ELMo's biLM)")
        x = self.dropout(self.embed(ids))
        forward, _ = self._stack(self.rnn, x)
        t = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        length = torch.full_like(ids, ids.shape[1]) if mask is None else mask.long().sum(1, keepdim=True).expand_as(ids)
        order = torch.where(t < length, length - 1 - t, t)  # reverses the real tokens; its own inverse
        flip = order.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        backward, _ = self._stack(self.backward_rnn, x.gather(1, flip))
        return x, forward, [b.gather(1, flip) for b in backward]

    def bidirectional_logits(self, ids: torch.Tensor, mask: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward logits [B, T, V]: position t predicts token t+1; backward logits [B, T, V]: position t,
        having read tokens t… from the right, predicts token t−1), through the one shared softmax."""
        _, forward, backward = self._both_directions(ids, mask)
        return self.head(self.dropout(forward[-1])), self.head(self.dropout(backward[-1]))

    def layer_states(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ELMo's representations [n_layers + 1, B, T, 2·d_hidden]: the token layer (its embedding, twice,
        as Peters et al. duplicate it) and each biLSTM layer's [forward; backward] states."""
        x, forward, backward = self._both_directions(ids, mask)
        return torch.stack([torch.cat([x, x], -1)] + [torch.cat(pair, -1) for pair in zip(forward, backward,
                                                                                           strict=True)])


def detach_state(state: Any) -> Any:
    """Cut the graph behind a carried hidden state (truncated backpropagation through time)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
