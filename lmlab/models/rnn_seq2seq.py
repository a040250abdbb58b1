"""RNN encoder–decoders with attention, and the copy (pointer-generator) mechanism.

The encoder is a bidirectional GRU/LSTM whose two directions (``d_hidden / 2`` each) give one
``d_hidden`` vector per source token; a tanh bridge of its final states starts the decoder.
The decoder reads the previous target token and, at each step, attends over the source:

* ``attention="bahdanau"`` (Bahdanau et al., 2015, additive): the *previous* decoder state s_{t-1}
  scores each source vector h_i by vᵀ tanh(W s_{t-1} + U h_i); the context c_t = Σ α_ti h_i
  enters the recurrent cell with the token, and the output reads [s_t; c_t; y_{t-1}].
* ``attention="dot"`` / ``"general"`` (Luong et al., 2015, multiplicative): the *new* state s_t
  scores h_i by s_tᵀ h_i or s_tᵀ W h_i; the attentional vector h̃_t = tanh(W_c [c_t; s_t]) gives
  the output and, with ``input_feeding``, is fed to the next step beside the token.
* ``attention="none"``: the plain encoder–decoder (Sutskever et al., 2014; Cho et al., 2014).

``copy=True`` adds See et al.'s (2017) pointer-generator: p_gen = σ(wᵀ[c_t; s_t; y_{t-1}] + b)
mixes the vocabulary distribution with the attention distribution scattered onto the source ids
(one shared source/target vocabulary), so a rare source subword can be copied through even when
the softmax gives it little mass. The model then outputs log-probabilities, which serve as logits
everywhere (``log_softmax`` of log-probabilities is the identity).

Source and target share one vocabulary and embedding unless ``source_vocab_size`` gives the
source its own (separate tokenizers; then there is no copying).

Like ``EncoderDecoder``, the decoder is a ``LanguageModel`` given a source: ``start(source, mask)``
(or ``bind``) encodes once; the state carries the encoder memory, the recurrent state and the
attention weights of the tokens just fed (``state.attention`` [B, T, S], for plots), so greedy,
beam search and every other strategy of ``lmlab.generate`` decode it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_choice, check_number
from .neural import NeuralLM
from .seq2seq import as_source, bound_initial_state, bound_prefill

ATTENTIONS = ("bahdanau", "dot", "general", "none")
CELLS = ("gru", "lstm")


@dataclass
class RNNDecoderState:
    """The decoder's recurrent state and everything it attends over, row by row."""

    hidden: torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # [layers, B, H] (LSTM: (h, c))
    memory: torch.Tensor  # [B, S, H] encoder outputs
    keys: torch.Tensor  # [B, S, ·] the memory as the score function reads it
    source_mask: torch.Tensor  # [B, S] bool, True = real source token
    source_ids: torch.Tensor  # [B, S] (for copying)
    feed: torch.Tensor | None = None  # [B, E] last attentional vector (Luong input feeding)
    attention: torch.Tensor | None = None  # [B, T, S] attention of the tokens just fed

    def select(self, index: torch.Tensor) -> RNNDecoderState:
        def pick(t: torch.Tensor | None, dim: int = 0) -> torch.Tensor | None:
            return None if t is None else t.index_select(dim, index.to(t.device))

        hidden = (tuple(pick(h, 1) for h in self.hidden) if isinstance(self.hidden, tuple)
                  else pick(self.hidden, 1))
        return RNNDecoderState(hidden, pick(self.memory), pick(self.keys), pick(self.source_mask),
                               pick(self.source_ids), pick(self.feed), pick(self.attention))

    @staticmethod
    def concat(states: Sequence[RNNDecoderState]) -> RNNDecoderState:
        """The rows of ``states`` in order, their sources right-padded to the longest (masked out); the
        attention of the tokens just fed is kept only when every state fed as many."""
        width = max(s.memory.shape[1] for s in states)

        def padded(t: torch.Tensor, dim: int) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = width - t.shape[dim]
            return torch.cat([t, t.new_zeros(shape)], dim=dim)

        def rows(ts: list[torch.Tensor | None], dim: int = 0) -> torch.Tensor | None:
            return None if any(t is None for t in ts) else torch.cat(ts, dim=dim)

        first = states[0].hidden
        hidden = (tuple(torch.cat([s.hidden[i] for s in states], dim=1) for i in range(len(first)))
                  if isinstance(first, tuple) else torch.cat([s.hidden for s in states], dim=1))
        attention = [s.attention for s in states]
        if any(a is None for a in attention) or len({a.shape[1] for a in attention}) > 1:
            attention = [None]
        return RNNDecoderState(hidden, rows([padded(s.memory, 1) for s in states]),
                               rows([padded(s.keys, 1) for s in states]),
                               rows([padded(s.source_mask, 1) for s in states]),
                               rows([padded(s.source_ids, 1) for s in states]), rows([s.feed for s in states]),
                               rows([None if a is None else padded(a, 2) for a in attention]))


class RNNEncoderDecoder(NeuralLM):
    """Bidirectional RNN encoder + attentional RNN decoder over one shared vocabulary (see the module
    docstring); ``context_length`` bounds source length and output length when translating."""

    model_type = "rnn_seq2seq"

    def __init__(self, vocab_size: int, *, cell: str = "gru", attention: str = "bahdanau", d_embed: int = 256,
                 d_hidden: int = 512, n_layers: int = 1, dropout: float = 0.2, copy: bool = False,
                 input_feeding: bool = True, tie_embeddings: bool = True, context_length: int = 128,
                 source_vocab_size: int | None = None) -> None:
        super().__init__()
        check_choice("cell", cell, CELLS)
        check_choice("attention", attention, ATTENTIONS)
        for name, value in (("vocab_size", vocab_size), ("d_embed", d_embed), ("d_hidden", d_hidden),
                            ("n_layers", n_layers), ("context_length", context_length)):
            check_number(name, value, low=1, integer=True)
        check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
        if d_hidden % 2:
            raise ConfigError(f"d_hidden = {d_hidden} is odd; the encoder's two directions take half each",
                              "use an even d_hidden")
        if copy and attention == "none":
            raise ConfigError("the copy mechanism copies through the attention weights", "use it with attention")
        if copy and source_vocab_size is not None:
            raise ConfigError("the copy mechanism copies source ids into the output, so it needs one vocabulary "
                              "for both sides", "use one shared tokenizer with --copy")
        if source_vocab_size is not None:
            check_number("source_vocab_size", source_vocab_size, low=1, integer=True)
        self.args = dict(vocab_size=vocab_size, cell=cell, attention=attention, d_embed=d_embed, d_hidden=d_hidden,
                         n_layers=n_layers, dropout=dropout, copy=copy, input_feeding=input_feeding,
                         tie_embeddings=tie_embeddings, context_length=context_length,
                         source_vocab_size=source_vocab_size)
        self.context_length = context_length
        self.set_special_ids(None)
        self.source = None
        luong = attention in ("dot", "general")
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        between = dropout if n_layers > 1 else 0.0
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.source_embed = None if source_vocab_size is None else nn.Embedding(source_vocab_size, d_embed)
        self.dropout = nn.Dropout(dropout)
        self.encoder = rnn(d_embed, d_hidden // 2, n_layers, batch_first=True, bidirectional=True, dropout=between)
        self.bridge = nn.Linear(d_hidden, n_layers * d_hidden)
        step_input = d_embed + (d_hidden if attention == "bahdanau" else d_embed if luong and input_feeding else 0)
        self.decoder = rnn(step_input, d_hidden, n_layers, batch_first=True, dropout=between)
        if attention == "bahdanau":
            self.score_query = nn.Linear(d_hidden, d_hidden, bias=False)
            self.score_key = nn.Linear(d_hidden, d_hidden)
            self.score_v = nn.Linear(d_hidden, 1, bias=False)
        elif attention == "general":
            self.score_key = nn.Linear(d_hidden, d_hidden, bias=False)
        # the output layer's input: [s_t; c_t; y_{t-1}] (Bahdanau), h̃_t (Luong), s_t (no attention)
        combined = {"bahdanau": 2 * d_hidden + d_embed, "none": d_hidden}.get(attention, 2 * d_hidden)
        self.pre_output = nn.Linear(combined, d_embed)
        self.head = nn.Linear(d_embed, vocab_size)
        if copy:
            self.gate = nn.Linear(2 * d_hidden + d_embed, 1)
        if tie_embeddings:
            self.head.weight = self.embed.weight

    # --- the source ---------------------------------------------------------------------------
    def start(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> RNNDecoderState:
        """The decoder's initial state for source ids [B, S] (``source_mask`` 1 = real token)."""
        source = torch.as_tensor(source, dtype=torch.long, device=self.device)
        if source.dim() == 1:
            source = source.unsqueeze(0)
        mask = (torch.ones_like(source, dtype=torch.bool) if source_mask is None
                else source_mask.to(self.device).bool())
        lengths = mask.sum(1).clamp(min=1).cpu()
        embed = self.embed if self.source_embed is None else self.source_embed
        packed = pack_padded_sequence(self.dropout(embed(source)), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=source.shape[1])
        h = final[0] if isinstance(final, tuple) else final  # [layers * 2, B, H/2]: the top layer's last two
        top = torch.cat([h[-2], h[-1]], dim=-1)  # forward's last state, backward's first
        n, hidden = self.args["n_layers"], self.args["d_hidden"]
        start = torch.tanh(self.bridge(top)).view(-1, n, hidden).transpose(0, 1).contiguous()
        state = (start, torch.zeros_like(start)) if self.args["cell"] == "lstm" else start
        attention = self.args["attention"]
        keys = (self.score_key(memory) if attention in ("bahdanau", "general") else memory)
        feed = (memory.new_zeros(source.shape[0], self.args["d_embed"])
                if attention in ("dot", "general") and self.args["input_feeding"] else None)
        return RNNDecoderState(state, memory, keys, mask, source, feed)

    def bind(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> RNNEncoderDecoder:
        """Condition the LM protocol (``initial_state``, ``score``) on ``source``; returns self."""
        self.source = as_source(source, source_mask)
        return self

    # --- LM protocol --------------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> RNNDecoderState:
        return bound_initial_state(self, batch_size, lambda state: state.memory.shape[0])

    def prefill(self, prompts: Sequence[Sequence[int]], reserve: int = 0,
                setup: Callable[[Any], None] | None = None) -> tuple[torch.Tensor, RNNDecoderState]:
        """Row *i* decodes bound source row *i* (or the one bound source): see ``bound_prefill``."""
        return bound_prefill(self, prompts, setup)

    def select_state(self, state: RNNDecoderState, index: torch.Tensor) -> RNNDecoderState:
        return state.select(index)

    def concat_states(self, states: list[RNNDecoderState]) -> RNNDecoderState:
        return RNNDecoderState.concat(states)

    @torch.no_grad()
    def cross_attention(self, source: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Attention weights [1, 1, T, S] (one layer, one head) of decoder inputs ``ids`` [1, T] over the
        one source [1, S] — what ``lmlab.generate.translate.alignment`` plots."""
        if self.args["attention"] == "none":
            raise ModelError("this encoder–decoder has no attention to show", "train one with attention")
        _, state = self(torch.as_tensor(ids, device=self.device)[:1], source=torch.as_tensor(source)[:1])
        return state.attention[0][None, None]

    def attend(self, query: torch.Tensor, state: RNNDecoderState) -> tuple[torch.Tensor, torch.Tensor]:
        """(contexts [B, T, H], weights [B, T, S]) of queries [B, T, H] over the source."""
        if self.args["attention"] == "bahdanau":
            scores = self.score_v(torch.tanh(self.score_query(query).unsqueeze(2) + state.keys.unsqueeze(1)))
            scores = scores.squeeze(-1)
        else:
            scores = torch.bmm(query, state.keys.transpose(1, 2))
        weights = torch.softmax(scores.float().masked_fill(~state.source_mask.unsqueeze(1), float("-inf")), dim=-1)
        weights = weights.to(state.memory.dtype)
        return torch.bmm(weights, state.memory), weights

    def forward(self, ids: torch.Tensor, state: RNNDecoderState | None = None, *,
                source: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, RNNDecoderState]:
        """Scores [B, T, V] of the next token after each of ``ids`` [B, T] (logits, or log-probabilities
        with ``copy``); ``source`` starts a fresh state (teacher forcing), else ``state`` continues.
        Without a recurrence through the attention (Luong without input feeding, or no attention)
        the decoder runs over all T tokens in one call and attends for all of them at once."""
        if source is not None:
            state = self.start(source, source_mask)
        elif state is None:
            state = self.initial_state(ids.shape[0])
        attention = self.args["attention"]
        luong = attention in ("dot", "general")
        feeding = luong and self.args["input_feeding"]
        embedded = self.dropout(self.embed(ids.to(self.device)))
        hidden, feed, weights, contexts = state.hidden, state.feed, None, None
        if attention == "bahdanau" or feeding:
            steps, context_steps, weight_steps = [], [], []
            for t in range(ids.shape[1]):
                x = embedded[:, t:t + 1]
                if attention == "bahdanau":
                    top = hidden[0][-1] if isinstance(hidden, tuple) else hidden[-1]
                    context, alpha = self.attend(top.unsqueeze(1), state)
                    out, hidden = self.decoder(torch.cat([x, context], dim=-1), hidden)
                else:
                    out, hidden = self.decoder(torch.cat([x, feed.unsqueeze(1)], dim=-1), hidden)
                    context, alpha = self.attend(out, state)
                    feed = torch.tanh(self.pre_output(torch.cat([context, out], dim=-1)))[:, 0]
                steps.append(out)
                context_steps.append(context)
                weight_steps.append(alpha)
            queries, contexts, weights = torch.cat(steps, 1), torch.cat(context_steps, 1), torch.cat(weight_steps, 1)
        else:
            queries, hidden = self.decoder(embedded, hidden)
            if luong:
                contexts, weights = self.attend(queries, state)
        if attention == "bahdanau":
            o = torch.tanh(self.pre_output(torch.cat([queries, contexts, embedded], dim=-1)))
        elif luong:
            o = torch.tanh(self.pre_output(torch.cat([contexts, queries], dim=-1)))
        else:
            o = torch.tanh(self.pre_output(queries))
        new_state = RNNDecoderState(hidden, state.memory, state.keys, state.source_mask, state.source_ids,
                                    feed if feeding else None, weights)
        logits = self.head(self.dropout(o))
        if not self.args["copy"]:
            return logits, new_state
        gate = torch.sigmoid(self.gate(torch.cat([contexts, queries, embedded], dim=-1)).float())
        vocab = torch.softmax(logits.float(), dim=-1) * gate
        index = state.source_ids.unsqueeze(1).expand(-1, ids.shape[1], -1)
        mixed = vocab.scatter_add(2, index, weights.float() * (1 - gate))
        return torch.log(mixed.clamp_min(1e-12)), new_state
