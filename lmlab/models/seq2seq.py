"""Encoder–decoder transformer (T5 / BART presets): a bidirectional encoder, and a causal decoder
whose layers also attend over the encoder's output (cross-attention).

The decoder is a ``LanguageModel`` given an encoded source: ``bind(source)`` (or ``start(source)``)
encodes it once and projects it once per layer into cross-attention keys/values; the state is
that cross cache plus the usual self-attention KV cache, so every decoding strategy in
``lmlab.generate`` works unchanged, and incremental decoding equals one full forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import InputError, ModelError
from ..kvcache import KVCache
from ..lm import as_id_tensor
from .config import TransformerConfig
from .neural import NeuralLM
from .transformer import TransformerLM


@dataclass
class Seq2SeqState:
    """The decoder's self-attention cache and the computed-once cross-attention keys/values."""

    cache: KVCache
    cross_keys: list[torch.Tensor]
    cross_values: list[torch.Tensor]
    source_mask: torch.Tensor | None  # [B, S] bool, True = real source token

    def select(self, index: torch.Tensor) -> Seq2SeqState:
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, index.to(t.device))

        return Seq2SeqState(self.cache.select(index), [pick(k) for k in self.cross_keys],
                            [pick(v) for v in self.cross_values], pick(self.source_mask))


def as_source(source: torch.Tensor, source_mask: torch.Tensor | None = None) -> tuple[torch.Tensor,
                                                                                     torch.Tensor | None]:
    """(source ids [B, S], mask) to bind to an encoder–decoder (one row for a 1-d source)."""
    source = torch.as_tensor(source, dtype=torch.long)
    return source.unsqueeze(0) if source.dim() == 1 else source, source_mask


def bound_initial_state(model: Any, batch_size: int, rows: Callable[[Any], int]) -> Any:
    """The start state of an encoder–decoder for its bound source (``model.source``), one row per
    batch row: ``rows(state)`` counts the encoded sources; a single one is shared by every row."""
    if model.source is None:
        raise ModelError("an encoder–decoder decodes given a source, and none is bound",
                         "call model.bind(source_ids) first (or pass state=model.start(source_ids))")
    with torch.no_grad():
        state = model.start(*model.source)
    n = rows(state)
    if n == batch_size:
        return state
    if n != 1:
        raise InputError(f"{n} bound sources for a batch of {batch_size}",
                         "bind one source per row, or a single source to share")
    return state.select(torch.zeros(batch_size, dtype=torch.long))


def bound_prefill(model: Any, prompts: Sequence[Sequence[int]], setup: Callable[[Any], None] | None = None
                  ) -> tuple[torch.Tensor, Any]:
    """The protocol's ``prefill`` for an encoder–decoder given its bound sources (``model.bind``): prompt
    row *i* decodes bound source row *i* — so a batch of sources bound at once (padded, with its
    mask) decodes as one batch through the decoding loop, each request on its own source — or the
    one bound source, shared by every prompt. Prompts of one length go in one forward pass;
    otherwise row by row, then ``concat_states``."""
    state = model.initial_state(len(prompts))
    if setup is not None:
        setup(state)
    if len({len(p) for p in prompts}) == 1:
        scores, state = model.next_scores(as_id_tensor([list(p) for p in prompts], model.vocab_size, model.device),
                                          state)
        return scores.float(), state
    rows, states = [], []
    for i, prompt in enumerate(prompts):
        row = model.select_state(state, torch.tensor([i], dtype=torch.long, device=model.device))
        scores, row = model.next_scores(as_id_tensor([list(prompt)], model.vocab_size, model.device), row)
        rows.append(scores.float())
        states.append(row)
    return torch.cat(rows), model.concat_states(states)


class EncoderDecoder(NeuralLM):
    """Encoder (``causal=False``) + decoder with cross-attention, sharing token embeddings (and the
    output head when ``tie_embeddings``)."""

    model_type = "seq2seq"

    def __init__(self, config: TransformerConfig | dict, special_ids: dict[str, int | None] | None = None) -> None:
        super().__init__()
        cfg = config if isinstance(config, TransformerConfig) else TransformerConfig.from_dict(config)
        self.config = cfg
        self.context_length = cfg.context_length
        self.set_special_ids(special_ids)
        self.encoder = TransformerLM(TransformerConfig.from_dict({**cfg.to_dict(), "causal": False}))
        self.decoder = TransformerLM(TransformerConfig.from_dict({**cfg.to_dict(), "causal": True}),
                                     cross_attention=True)
        self.decoder.embed = self.encoder.embed
        self.encoder.head = None  # the encoder's output is the decoder's memory, not logits
        if cfg.tie_embeddings:
            self.decoder.head.weight = self.encoder.embed.weight
        self.source: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, args: dict[str, Any]) -> EncoderDecoder:
        return cls(TransformerConfig.from_dict(args))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    # --- the source ---------------------------------------------------------------------------
    def encode(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output [B, S, d_model] of source ids [B, S] (``source_mask`` 1 = real token)."""
        return self.encoder.hidden_states(source.to(self.device), attention_mask=source_mask)[0]

    def start(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> Seq2SeqState:
        """The decoder's initial state for ``source``: encoded once, projected once per layer."""
        source = torch.as_tensor(source, dtype=torch.long, device=self.device)
        if source.dim() == 1:
            source = source.unsqueeze(0)
        memory = self.encode(source, source_mask)
        b, s, _ = memory.shape
        keys, values = [], []
        for block in self.decoder.blocks:
            attn = block.cross
            keys.append(attn.k_proj(memory).view(b, s, attn.n_kv_heads, attn.head_dim).transpose(1, 2))
            values.append(attn.v_proj(memory).view(b, s, attn.n_kv_heads, attn.head_dim).transpose(1, 2))
        mask = None if source_mask is None else source_mask.to(self.device).bool()
        return Seq2SeqState(self.decoder.initial_state(b), keys, values, mask)

    def cross_attention(self, source: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Cross-attention weights [layers, heads, T, S] (see the module function ``cross_attention``)."""
        return cross_attention(self, source, ids)

    def bind(self, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> EncoderDecoder:
        """Condition the LM protocol (``initial_state``, ``score``) on ``source``; returns self."""
        self.source = as_source(source, source_mask)
        return self

    # --- LM protocol (the decoder, given the bound source) -----------------------------------
    def initial_state(self, batch_size: int) -> Seq2SeqState:
        return bound_initial_state(self, batch_size, lambda state: state.cache.batch_size)

    def prefill(self, prompts: Sequence[Sequence[int]], reserve: int = 0,
                setup: Callable[[Any], None] | None = None) -> tuple[torch.Tensor, Seq2SeqState]:
        """Row *i* decodes bound source row *i* (or the one bound source): see ``bound_prefill``."""
        return bound_prefill(self, prompts, setup)

    def select_state(self, state: Seq2SeqState, index: torch.Tensor) -> Seq2SeqState:
        return state.select(index)

    def concat_states(self, states: list[Seq2SeqState]) -> Seq2SeqState:
        """Rows of several states in one batch: sources right-padded to the longest (masked)."""
        width = max(s.cross_keys[0].shape[2] for s in states)

        def padded(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[2]))

        masks = []
        for s in states:
            b, n = s.cross_keys[0].shape[0], s.cross_keys[0].shape[2]
            mask = torch.zeros(b, width, dtype=torch.bool, device=s.cross_keys[0].device)
            mask[:, :n] = True if s.source_mask is None else s.source_mask
            masks.append(mask)
        layers = range(len(states[0].cross_keys))
        return Seq2SeqState(KVCache.concat([s.cache for s in states]),
                            [torch.cat([padded(s.cross_keys[i]) for s in states]) for i in layers],
                            [torch.cat([padded(s.cross_values[i]) for s in states]) for i in layers],
                            torch.cat(masks))

    def forward(self, ids: torch.Tensor, state: Seq2SeqState | None = None, attention_mask: torch.Tensor | None = None,
                *, source: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Seq2SeqState]:
        """Decoder logits [B, T, V] for ``ids`` after the cached ones; ``source`` starts a fresh state
        (teacher forcing in training), else ``state`` (or the bound source) is continued."""
        if source is not None:
            state = self.start(source, source_mask)
        elif state is None:
            state = self.initial_state(ids.shape[0])
        hidden, cache = self.decoder.hidden_states(
            ids, state.cache, attention_mask, memory=(state.cross_keys, state.cross_values, state.source_mask))
        return self.decoder.logits(hidden), Seq2SeqState(cache, state.cross_keys, state.cross_values, state.source_mask)


@torch.no_grad()
def cross_attention(model: EncoderDecoder, source: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-attention weights [layers, heads, T, S] of decoder inputs ``ids`` [1, T] over one source
    [1, S]: each layer's queries are caught on their way out of its projection and scored against
    the source keys the state holds (dot-product scores, as the fused attention computes them)."""
    cfg = model.config
    if cfg.score not in ("dot", "scaled_dot"):
        raise ModelError(f"attention weights are read for dot-product scores, not {cfg.score!r}",
                         "plot a model with score dot or scaled_dot")
    queries: list[torch.Tensor] = []
    hooks = [block.cross.q_proj.register_forward_hook(lambda _m, _i, out: queries.append(out))
             for block in model.decoder.blocks]
    try:
        state = model.start(torch.as_tensor(source)[:1])
        model(torch.as_tensor(ids, device=model.device)[:1], state)
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for q, keys in zip(queries, state.cross_keys, strict=True):
        q = q.view(1, -1, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # [1, H, T, D]
        keys = keys.repeat_interleave(cfg.n_heads // cfg.n_kv_heads, dim=1)
        scale = cfg.head_dim ** -0.5 if cfg.score == "scaled_dot" else 1.0
        out.append(torch.softmax((q @ keys.transpose(-1, -2)).float() * scale, dim=-1)[0])
    return torch.stack(out)


def hf_t5_names(n_layers: int) -> dict[str, str]:
    """Our tensor name → the Hugging Face ``T5Model`` (v1.0: ReLU, tied) tensor name, for the ``t5``
    preset with ``score="dot"`` (T5 folds the 1/√d of attention into its initialisation)."""
    names = {"encoder.embed.weight": "shared.weight",
             "encoder.relative_bias.weight": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "decoder.relative_bias.weight": "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
             "encoder.final_norm.weight": "encoder.final_layer_norm.weight",
             "decoder.final_norm.weight": "decoder.final_layer_norm.weight"}
    for stack in ("encoder", "decoder"):
        mlp = 2 if stack == "decoder" else 1
        for i in range(n_layers):
            ours, theirs = f"{stack}.blocks.{i}", f"{stack}.block.{i}.layer"
            for p in "qkvo":
                names[f"{ours}.attn.{p}_proj.weight"] = f"{theirs}.0.SelfAttention.{p}.weight"
                if stack == "decoder":
                    names[f"{ours}.cross.{p}_proj.weight"] = f"{theirs}.1.EncDecAttention.{p}.weight"
            names[f"{ours}.attn_norm.weight"] = f"{theirs}.0.layer_norm.weight"
            if stack == "decoder":
                names[f"{ours}.cross_norm.weight"] = f"{theirs}.1.layer_norm.weight"
            names[f"{ours}.mlp.up.weight"] = f"{theirs}.{mlp}.DenseReluDense.wi.weight"
            names[f"{ours}.mlp.down.weight"] = f"{theirs}.{mlp}.DenseReluDense.wo.weight"
            names[f"{ours}.mlp_norm.weight"] = f"{theirs}.{mlp}.layer_norm.weight"
    return names
