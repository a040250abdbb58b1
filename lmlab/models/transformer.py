"""The decoder-only transformer LM driven by one ``TransformerConfig``; its state is a KV cache.

Incremental decoding (feeding tokens through ``next_logprobs`` with the returned cache) gives
the same log-probabilities as one full forward pass. An optional ``attention_mask`` (1 = real
token, 0 = padding) lets left- or right-padded rows share a batch: position ids count only
real tokens, so a padded row computes exactly what it would alone.

``initial_state(batch, capacity=N)`` preallocates a static cache of N slots: each step writes
its keys and values in place instead of concatenating (for engines; the cache object is then
mutated by every call, so branch it with ``select_state``, which copies).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_number
from ..kvcache import KVCache
from ..lm import as_id_tensor
from .attention import Attention
from .config import TransformerConfig
from .hooks import HookHandle, add_hook, hook_names
from .long_attention import LongAttention
from .memory_compression import MemoryCompression
from .mlm_head import HeadTransform
from .mlp import MLP
from .moe import MoE
from .neural import NeuralLM
from .norms import make_norm
from .positions import (
    LearnedPositions,
    RelativePositionBias,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    rope_angles,
    sinusoidal,
)
from .segment_memory import SegmentMemory
from .sharing import share_layers
from .xl_positions import XLRelativePositions


class Block(nn.Module):
    """One transformer layer: attention and MLP sublayers with residuals, pre- or post-norm."""

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = False) -> None:
        super().__init__()
        self.pre = cfg.norm_position == "pre"
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, score=cfg.score, bias=cfg.bias,
                              dropout=cfg.dropout)
        self.long = LongAttention(cfg) if cfg.attention != "full" else None
        self.xl = (XLRelativePositions(cfg.d_model, cfg.n_heads, cfg.head_dim,
                                       1.0 / math.sqrt(cfg.head_dim) if cfg.score == "scaled_dot" else 1.0)
                   if cfg.positions == "transformer_xl" else None)
        self.compression = (MemoryCompression(cfg.d_model, cfg.compression_rate, cfg.compression,
                                              cfg.compression_loss) if cfg.compressed_memory else None)
        self.cross_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cross_attention else None
        self.cross = Attention(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, score=cfg.score, bias=cfg.bias,
                               dropout=cfg.dropout) if cross_attention else None
        self.mlp_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        if cfg.moe_experts:
            self.mlp = MoE(cfg.d_model, cfg.d_ff, cfg.moe_experts, top_k=cfg.moe_top_k, routing=cfg.moe_routing,
                           balance_loss_weight=cfg.moe_balance_loss, bias_update_rate=cfg.moe_bias_update_rate,
                           expert_factory=lambda d, h: MLP(d, h, cfg.activation, bias=cfg.bias, dropout=cfg.dropout))
        else:
            self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.activation, bias=cfg.bias, dropout=cfg.dropout)
        self.moe = bool(cfg.moe_experts)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pattern_hooks: list[Callable[[torch.Tensor], None]] = []  # lmlab.models.hooks' attn_pattern

    def forward(self, x: torch.Tensor, ctx: dict, kv: Callable | None, fused: bool,
                memory: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The layer's output; ``kv(q, k, v, allowed, bias, weights)`` stores the new keys/values and
        returns every key/value to attend over with their mask and bias (a cache's ``layer_inputs``),
        None attends over the new ones only."""
        h = self.attn_norm(x) if self.pre else x
        q, k, v = self.attn.project(h)
        if ctx["rope"] is not None:
            q_cos, q_sin = ctx["rope"]
            q, k = apply_rope(q, q_cos, q_sin), apply_rope(k, q_cos, q_sin)
        if self.long is not None:
            k = self.long.keys(q, k)
        allowed, bias = ctx["allowed"], ctx["bias"]
        if self.xl is not None:  # Transformer-XL: the query moved by u, the position terms a score bias
            q, bias = self.xl(q, ctx["k_slot"].numel(), ctx["xl_distances"])
        if kv is not None:  # the cache's keys/values, and the mask/bias over the slots this layer holds
            k, v, allowed, bias = kv(q, k, v, allowed, bias, self.attn.weights)
        causal = ctx["causal"] and allowed is None
        if self.attn.past_prefix is not None:  # prefix tuning: P keys/values outside the cache, seen by all
            k, v, allowed = with_prefix(self.attn.past_prefix, q.shape[2], k, v, allowed, bias)
            causal = False
        if self.pattern_hooks:
            self.show_pattern(q, k, allowed, bias, causal)
        if self.long is not None:  # a long-sequence variant (lmlab.models.long_attention)
            if self.attn.past_prefix is not None:
                raise ModelError(f"prefix tuning does not combine with {self.long.kind} attention",
                                 "use another PEFT method")
            a = self.attn.merge(self.long(q, k, v, allowed=allowed, bias=bias, causal=causal, q_slot=ctx["q_slot"],
                                          k_slot=ctx["k_slot"], row_positions=ctx["row_positions"],
                                          dropout=self.attn.dropout if self.training else 0.0))
        else:
            a = self.attn.attend(q, k, v, allowed=allowed, bias=bias, causal=causal, fused=fused)
        x = x + self.dropout(a) if self.pre else self.attn_norm(x + self.dropout(a))
        if self.cross is not None:  # encoder–decoder: attend over the source's (cached) keys/values
            h = self.cross_norm(x) if self.pre else x
            b, t, _ = h.shape
            q = self.cross.q_proj(h).view(b, t, self.cross.n_heads, self.cross.head_dim).transpose(1, 2)
            a = self.cross.attend(q, *memory, allowed=ctx["memory_allowed"], bias=None, causal=False, fused=fused)
            x = x + self.dropout(a) if self.pre else self.cross_norm(x + self.dropout(a))
        return x + self.feed_forward(self.mlp_norm(x), ctx) if self.pre else self.mlp_norm(x + self.feed_forward(x, ctx))

    def show_pattern(self, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None,
                     bias: torch.Tensor | None, causal: bool) -> None:
        """Give the attention weights [B, H, T, S] to every ``attn_pattern`` hook (``lmlab.models.hooks``)."""
        if allowed is None and causal:
            t, s = q.shape[2], k.shape[2]
            allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
        pattern = self.attn.weights(q, k, allowed=allowed, bias=bias)
        for hook in self.pattern_hooks:
            hook(pattern)

    def feed_forward(self, h: torch.Tensor, ctx: dict) -> torch.Tensor:
        """The MLP, or the mixture of experts (which routes by token id for hashing and skips padding)."""
        return self.mlp(h, ctx.get("token_ids"), ctx.get("token_mask")) if self.moe else self.mlp(h)


def with_prefix(past_prefix, t: int, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
                bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys and values with the prefix-tuning prefixes in front, and the mask with P visible columns
    (the prefix interface of ``lmlab.peft.prefix``: ``past_prefix(batch)`` gives [B, KV, P, D] each)."""
    if bias is not None:
        raise ModelError("prefix tuning does not combine with a position bias (ALiBi, T5, Transformer-XL)",
                         "use another PEFT method")
    pk, pv = past_prefix(k.shape[0])
    s = k.shape[2]
    if allowed is None:  # the plain causal mask over the keys, made explicit
        allowed = torch.ones(t, s, dtype=torch.bool, device=k.device).tril(s - t).view(1, 1, t, s)
    seen = torch.ones(*allowed.shape[:-1], pk.shape[2], dtype=torch.bool, device=k.device)
    return (torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2),
            torch.cat([seen, allowed], dim=-1))


class TransformerLM(NeuralLM):
    """Decoder-only transformer (Vaswani / GPT-2 / LLaMA presets) implementing the LM protocol."""

    model_type = "transformer"

    def __init__(self, config: TransformerConfig | dict, special_ids: dict[str, int | None] | None = None,
                 cross_attention: bool = False) -> None:
        super().__init__()
        cfg = config if isinstance(config, TransformerConfig) else TransformerConfig.from_dict(config)
        self.config = cfg
        self.context_length = cfg.context_length
        self.set_special_ids(special_ids)
        self.fused = True
        # recompute each block's activations in the backward pass instead of keeping them (training only)
        self.activation_checkpointing = False
        width = cfg.embedding_width  # E: ALBERT's factorised embeddings are narrower than the layers
        self.embed = nn.Embedding(cfg.vocab_size, width)
        self.positions = LearnedPositions(cfg.context_length, width) if cfg.positions == "learned" else None
        self.segments = nn.Embedding(cfg.type_vocab_size, width) if cfg.type_vocab_size else None
        self.embed_norm = make_norm(cfg.norm, width, cfg.norm_eps, cfg.bias) if cfg.embedding_norm else None
        self.embed_projection = nn.Linear(width, cfg.d_model) if cfg.embedding_size else None  # E → d_model
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, cross_attention) for _ in range(cfg.n_layers))
        share_layers(self.blocks, cfg.share_layers)
        self.final_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.norm_position == "pre" else None
        self.head_transform = (HeadTransform(cfg.d_model, cfg.activation, cfg.norm, cfg.norm_eps, cfg.bias, width)
                               if cfg.mlm_head else nn.Linear(cfg.d_model, width, bias=False) if cfg.embedding_size
                               else None)  # d_model → E before the output layer of a factorised model
        self.head = nn.Linear(width, cfg.vocab_size, bias=cfg.mlm_head)
        if cfg.positions == "alibi":
            self.register_buffer("alibi", alibi_slopes(cfg.n_heads), persistent=False)
        self.relative_bias = (RelativePositionBias(cfg.n_heads, bidirectional=not cfg.causal,
                                                   num_buckets=cfg.relative_buckets,
                                                   max_distance=cfg.relative_max_distance)
                              if cfg.positions == "relative_bias" else None)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("o_proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, args: dict[str, Any]) -> TransformerLM:
        return cls(TransformerConfig.from_dict(args))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    # --- state ---------------------------------------------------------------------------------
    def initial_state(self, batch_size: int, capacity: int | None = None, growable: bool = False) -> KVCache:
        """An empty cache; with ``capacity``, preallocated for that many tokens (a static cache, which
        reallocates when full if ``growable``)."""
        if capacity and getattr(self.embed, "enabled", False):  # a prompt-tuning embedding's soft tokens
            capacity += self.embed.n_tokens
        scheme = self.config.positions
        positions = "rotary" if scheme == "rope" else "relative" if scheme in ("alibi", "relative_bias", "transformer_xl",
                                                                               "none") \
            else "absolute"
        return KVCache(self.config.n_layers, batch_size, capacity=capacity or 0, growable=growable,
                       positions=positions, rotate=self.rotate_keys if scheme == "rope" else None)

    def rotate_keys(self, keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """RoPE keys [B, KV, S, D] moved by ``delta`` [B, S] positions (rotations compose, so a stored
        key moves exactly; what a cache that closes up positions applies when it reads)."""
        cfg = self.config
        cos, sin = rope_angles(delta.to(keys.device), cfg.head_dim, cfg.rope_theta, cfg.rope_scaling,
                               cfg.rope_scaling_type, cfg.rope_original_context, temperature=False)
        return apply_rope(keys, cos, sin)

    def extend_context(self, factor: float, kind: str = "yarn") -> None:
        """Read ``factor`` (> 1) times the trained context, in place, by RoPE scaling ``kind`` (linear,
        ntk or yarn: ``lmlab.models.rope_scaling``); the context length grows by the factor."""
        cfg = self.config
        check_number("context-extension factor", factor, low=1.0, low_inclusive=False)
        if cfg.positions != "rope":
            raise ModelError(f"context extension rescales RoPE; this model has {cfg.positions} positions",
                             "extend a RoPE model (llama preset, SmolLM2)")
        if cfg.rope_scaling != 1.0:
            raise ModelError(f"this model is already extended ({cfg.rope_scaling_type} ×{cfg.rope_scaling})",
                             "extend the original model once")
        self.config = TransformerConfig.from_dict({
            **cfg.to_dict(), "rope_scaling": float(factor), "rope_scaling_type": kind,
            "rope_original_context": cfg.context_length, "context_length": int(cfg.context_length * factor)})
        self.context_length = self.config.context_length

    def select_state(self, state: KVCache, index: torch.Tensor) -> KVCache:
        return state.select(index)

    def concat_states(self, states: list[KVCache]) -> KVCache:
        return KVCache.concat(states)

    @torch.no_grad()
    def next_scores(self, tokens: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Logits [B, V] of the token after ``tokens`` (only the last position reaches the output head)."""
        tokens = as_id_tensor(tokens, self.vocab_size, self.device)
        logits, state = self(tokens, state, last_only=True)
        return logits[:, -1].float(), state

    @torch.no_grad()
    def next_scores_all(self, tokens: torch.Tensor, state: KVCache, attention_mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, KVCache]:
        """Logits [B, T, V] after every fed position, in one forward pass (rows left-padded by
        ``attention_mask``): what speculative decoding verifies drafted tokens with."""
        scores, _, state = self.next_scores_hidden(tokens, state, attention_mask)
        return scores, state

    @torch.no_grad()
    def next_scores_hidden(self, tokens: torch.Tensor, state: KVCache, attention_mask: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, KVCache]:
        """``next_scores_all`` plus the last layer's states [B, T, d_model] (after the final norm): what
        contrastive search compares candidates with."""
        tokens = as_id_tensor(tokens, self.vocab_size, self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
            if bool(attention_mask.bool().all()):
                attention_mask = None
        hidden, state = self.hidden_states(tokens, state, attention_mask)
        return self.logits(hidden).float(), hidden, state

    def rewind(self, state: KVCache, drop) -> KVCache:
        """Forget each row's last ``drop[i]`` tokens (``KVCache.truncate``)."""
        state.truncate(drop)
        return state

    @torch.no_grad()
    def prefill(self, prompts: list[list[int]], reserve: int = 0,
                setup: Callable[[KVCache], None] | None = None) -> tuple[torch.Tensor, KVCache]:
        """All prompts in one forward pass: left-padded to the longest, masked, into one growable cache
        with room for ``reserve`` more tokens (``setup(cache)`` first); the logits [N, V] after each prompt."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ModelError("every prompt needs at least one token", "start it with the tokenizer's BOS id")
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        ids = as_id_tensor(ids, self.vocab_size, self.device)
        state = self.initial_state(len(prompts), capacity=width + max(reserve, 1), growable=True)
        if setup is not None:
            setup(state)
        logits, state = self(ids, state, attention_mask=None if bool(mask.all()) else mask.to(self.device),
                             last_only=True)
        return logits[:, -1].float(), state

    def compiled_step(self) -> Callable[[torch.Tensor, KVCache], tuple[torch.Tensor, KVCache]]:
        """``next_scores`` for decoding with the forward pass under ``torch.compile`` (inductor; the
        cache length is a dynamic size so the growing cache does not recompile every step)."""
        try:
            import torch._inductor  # noqa: F401
        except ImportError as err:
            from ..core.errors import MissingDependencyError

            raise MissingDependencyError("torch.compile's inductor backend is not available here",
                                         "leave compile (--compile) out") from err
        compiled = torch.compile(self, dynamic=True)

        @torch.no_grad()
        def step(tokens: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
            logits, state = compiled(tokens, state, last_only=True)
            return logits[:, -1].float(), state

        return step

    # --- forward -------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, state: KVCache | tuple | None = None,
                attention_mask: torch.Tensor | None = None, last_only: bool = False, *,
                token_type_ids: torch.Tensor | None = None,
                prefix_length: torch.Tensor | int | None = None,
                segment_ids: torch.Tensor | None = None,
                logits_at: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """Logits [B, T, V] for ``ids`` [B, T] after the cached tokens, and the extended cache.

        ``attention_mask`` [B, T] marks real tokens (1) and padding (0) among ``ids``;
        ``last_only`` computes the logits of the last position only ([B, 1, V]);
        ``token_type_ids`` [B, T] are segment ids (models with ``type_vocab_size``);
        ``prefix_length`` (int or [B]) makes the first tokens of each row attend both ways (prefix LM);
        ``segment_ids`` [B, T] packs several sequences in a row: a token sees only earlier tokens of
        its own segment and positions restart at each segment (block-diagonal causal attention);
        ``logits_at`` [B, T] bool computes logits only where it is True, returned as [N, V] in row-major
        order (objectives that score a few positions skip the vocabulary projection of the rest).
        A model with ``memory_length`` given a memory tuple or None as ``state`` reads ``ids`` as the next
        segment and returns the next memory (``lmlab.models.segment_memory``); given a cache it decodes.
        """
        if isinstance(state, tuple) or (state is None and self.config.memory_length):
            state = SegmentMemory(self, state, ids.shape[0])  # Transformer-XL recurrence (lmlab.models.segment_memory)
        x, cache = self.hidden_states(ids, state, attention_mask, token_type_ids=token_type_ids,
                                      prefix_length=prefix_length, last_only=last_only,
                                      segment_ids=segment_ids)
        if logits_at is not None:
            x = x[logits_at.to(x.device).bool()]
        return self.logits(x), cache.tensors() if isinstance(cache, SegmentMemory) else cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output logits of last-layer states (through BERT's head transform when ``mlm_head``)."""
        return self.head(hidden if self.head_transform is None else self.head_transform(hidden))

    def hook_names(self) -> list[str]:
        """The named activation sites hooks can read or replace (``lmlab.models.hooks``)."""
        return hook_names(self)

    def add_hook(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> HookHandle:
        """Hook ``fn`` on the activation site ``name`` (``blocks.<layer>.<site>``); see ``lmlab.models.hooks``."""
        return add_hook(self, name, fn)

    def hidden_states(self, ids: torch.Tensor, state: KVCache | None = None,
                      attention_mask: torch.Tensor | None = None, *, token_type_ids: torch.Tensor | None = None,
                      prefix_length: torch.Tensor | int | None = None,
                      memory: tuple[list, list, torch.Tensor | None] | None = None,
                      last_only: bool = False,
                      segment_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, KVCache]:
        """The last layer's outputs [B, T, d_model] (after the final norm) and the extended cache.

        ``memory`` (decoders built with ``cross_attention``) is (keys per layer, values per layer,
        source mask [B, S] or None): the encoder output projected once by each layer;
        ``last_only`` keeps the last position only.
        An embedding that prepends soft tokens (prompt tuning, ``lmlab.peft.prompt``) is honoured on
        the first call: they take the first positions and the cache, and their outputs are dropped.
        """
        cfg = self.config
        state = state if state is not None else self.initial_state(ids.shape[0])
        past = state.length
        x = self.embed(ids)
        soft = x.shape[1] - ids.shape[1]
        if soft and past:  # decoding after the prompt: the soft tokens are already in the cache
            x, soft = x[:, soft:], 0
        if soft:
            if segment_ids is not None:
                raise ModelError("packed sequences (segment_ids) do not combine with soft prompts",
                                 "train prompt tuning without packing")
            ids = torch.cat([ids.new_zeros(ids.shape[0], soft), ids], dim=1)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask.new_ones(ids.shape[0], soft), attention_mask], dim=1)
        b, t = ids.shape
        if cfg.positions == "learned" and past + t > cfg.context_length:
            raise ModelError(f"a context of {past + t} tokens is longer than the {cfg.context_length} "
                             "positions this model learned", "use a sliding window (--stride) or shorter inputs")
        positions, mask = state.begin(t, attention_mask, ids.device)
        if segment_ids is not None:
            if past:
                raise ModelError("segment_ids (packed sequences) need an empty cache", "pack only for training")
            segment_ids = segment_ids.to(ids.device)
            positions = segment_positions(segment_ids)
        ctx = self._context(positions, mask, past, t, ids.device, prefix_length, segment_ids)
        if cfg.scale_embeddings:
            x = x * math.sqrt(cfg.d_model)
        if cfg.positions == "learned":
            x = x + self.positions(positions)
        elif cfg.positions == "sinusoidal":
            x = x + sinusoidal(positions, cfg.embedding_width).to(x.dtype)
        if self.segments is not None:
            x = x + self.segments(torch.zeros_like(ids) if token_type_ids is None else token_type_ids.to(ids.device))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.dropout(x)
        if self.embed_projection is not None:
            x = self.embed_projection(x)
        ctx["token_ids"], ctx["token_mask"] = ids, None if mask is None else mask[:, past:past + t]
        if memory is not None:
            ctx["memory_allowed"] = None if memory[2] is None else memory[2].bool().view(b, 1, 1, -1)
        recompute = self.activation_checkpointing and torch.is_grad_enabled() and not past and not state.capacity
        if recompute and isinstance(state, SegmentMemory):
            raise ConfigError("activation checkpointing does not combine with segment memory (the recomputed "
                              "blocks would attend without it)", "train Transformer-XL models without it")
        if recompute and cfg.moe_experts:
            raise ConfigError("activation checkpointing does not combine with mixture-of-experts layers "
                              "(their balancing statistics would count the recomputation)",
                              "train MoE models without activation checkpointing")
        for i, block in enumerate(self.blocks):
            if isinstance(state, SegmentMemory):
                state.record(i, x)
            cross = None if memory is None else (memory[0][i], memory[1][i])
            if recompute:  # keeps only the block's input; the backward pass runs the block again (no cache kept)
                x = checkpoint(block, x, ctx, None, self.fused, cross, use_reentrant=False)
            else:
                x = block(x, ctx, partial(state.layer_inputs, i), self.fused, cross)
        if not recompute:
            state.advance(t)
        x = x[:, soft:]
        if last_only:
            x = x[:, -1:]
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, state

    def _context(self, positions: torch.Tensor, mask: torch.Tensor | None, past: int, t: int,
                 device: torch.device, prefix_length: torch.Tensor | int | None = None,
                 segment_ids: torch.Tensor | None = None) -> dict:
        """What every layer shares: RoPE angles, the allowed-attention mask, the ALiBi bias."""
        cfg = self.config
        rope = None
        if cfg.positions == "rope":  # shaped [B, 1, T, D] and cast once for every layer
            dtype = self.embed.weight.dtype if self.embed.weight.is_floating_point() else torch.float32
            rope = tuple(a.unsqueeze(1).to(dtype) for a in
                         rope_angles(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling,
                                     cfg.rope_scaling_type, cfg.rope_original_context))
        allowed = None
        q_slot = torch.arange(past, past + t, device=device)
        k_slot = torch.arange(past + t, device=device)
        if not cfg.causal or prefix_length is not None:
            allowed = attention_pattern(q_slot, k_slot, mask, causal=cfg.causal, prefix_length=prefix_length)
        elif mask is not None:
            causal = k_slot.unsqueeze(0) <= q_slot.unsqueeze(1)  # [T, S]
            allowed = causal.unsqueeze(0) & mask.unsqueeze(1)
            allowed = allowed | (k_slot.unsqueeze(0) == q_slot.unsqueeze(1)).unsqueeze(0)  # never an empty row
            allowed = allowed.unsqueeze(1)
        elif t > 1 and past > 0:
            allowed = (k_slot.unsqueeze(0) <= q_slot.unsqueeze(1)).view(1, 1, t, past + t)
        if segment_ids is not None:  # block-diagonal: each packed sequence sees only itself
            same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)  # [B, T, T]
            causal = (k_slot.unsqueeze(0) <= q_slot.unsqueeze(1)).unsqueeze(0)
            allowed = (same & causal).unsqueeze(1) if allowed is None else allowed & same.unsqueeze(1)
        bias = None
        if cfg.positions in ("alibi", "relative_bias"):
            k_pos = k_slot.unsqueeze(0).float() if mask is None else (mask.long().cumsum(1) - 1).float()
            q_pos = q_slot.unsqueeze(0).float() if mask is None else k_pos[:, past:]
            bias = (alibi_bias(self.alibi, q_pos, k_pos) if cfg.positions == "alibi"
                    else self.relative_bias(q_pos, k_pos))
        distances = None  # Transformer-XL: each row's query-minus-key distances where padding moves positions
        if cfg.positions == "transformer_xl":
            if prefix_length is not None:
                raise ModelError("Transformer-XL's relative positions are causal: a prefix LM sees keys ahead",
                                 "use positions rope or alibi for a prefix LM")
            if mask is not None:
                k_pos = mask.long().cumsum(1) - 1
                distances = k_pos[:, past:].unsqueeze(-1) - k_pos.unsqueeze(-2)
        rows = None  # each row's own query/key positions where padding moves them off the slots
        if cfg.attention == "strided" and mask is not None:
            k_pos = mask.long().cumsum(1) - 1
            rows = (k_pos[:, past:], k_pos)
        return {"rope": rope, "allowed": allowed, "bias": bias, "causal": past == 0 and allowed is None,
                "q_slot": q_slot, "k_slot": k_slot, "row_positions": rows, "xl_distances": distances}


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token within its run of equal segment ids, [B, T] (0 at every segment start)."""
    index = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand_as(segment_ids)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return index - torch.where(starts, index, 0).cummax(dim=1).values


def attention_pattern(q_slot: torch.Tensor, k_slot: torch.Tensor, mask: torch.Tensor | None, *, causal: bool,
                      prefix_length: torch.Tensor | int | None = None) -> torch.Tensor:
    """Which keys each query may see, [B|1, 1, T, S]: every real key (bidirectional), earlier keys
    (causal), or earlier keys plus the first ``prefix_length`` of its row (prefix LM)."""
    if causal:
        allowed = (k_slot.unsqueeze(0) <= q_slot.unsqueeze(1)).unsqueeze(0)  # [1, T, S]
        if prefix_length is not None:
            prefix = torch.as_tensor(prefix_length, device=k_slot.device).reshape(-1, 1, 1)
            allowed = allowed | (k_slot.view(1, 1, -1) < prefix)
    else:
        allowed = torch.ones(1, q_slot.numel(), k_slot.numel(), dtype=torch.bool, device=k_slot.device)
    if mask is not None:
        allowed = allowed & mask.unsqueeze(1)
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # a row with nothing to see sees everything
    return allowed.unsqueeze(1)
