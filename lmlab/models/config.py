"""``TransformerConfig``: one dataclass for every decoder architecture, and the named presets.

Architectures are data (DESIGN principle 3): Vaswani, GPT-2 and LLaMA differ only in the
switches below. A preset is a small dict of switches; sizes come from the user.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..core.errors import ConfigError
from ..core.validate import check_choice, check_keys, check_number
from .attention import SCORES
from .long_attention import ATTENTIONS
from .memory_compression import COMPRESSIONS
from .mlp import ACTIVATIONS
from .moe import ROUTINGS
from .norms import NORMS
from .positions import POSITIONS
from .rope_scaling import ROPE_SCALINGS
from .sharing import SHARING

#: architecture switches of each named preset (sizes are not part of a preset)
PRESETS: dict[str, dict[str, Any]] = {
    "vaswani": dict(norm="layernorm", norm_position="post", activation="relu", positions="sinusoidal",
                    bias=True, tie_embeddings=True, scale_embeddings=True, norm_eps=1e-5),
    "gpt2": dict(norm="layernorm", norm_position="pre", activation="gelu", positions="learned",
                 bias=True, tie_embeddings=True, scale_embeddings=False, norm_eps=1e-5),
    "llama": dict(norm="rmsnorm", norm_position="pre", activation="swiglu", positions="rope",
                  bias=False, tie_embeddings=False, scale_embeddings=False, norm_eps=1e-5),
}

#: bidirectional encoder presets (``causal=False``): BERT's post-norm with segment embeddings
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "bert": dict(norm="layernorm", norm_position="post", activation="gelu", positions="learned",
                 bias=True, tie_embeddings=True, scale_embeddings=False, norm_eps=1e-12,
                 causal=False, type_vocab_size=2, embedding_norm=True, mlm_head=True),
    # Lan et al. (2020): BERT's layout with every layer's weights shared and GPT-2's tanh GELU; give
    # embedding_size < d_model for the factorised embeddings (vocab → E → H)
    "albert": dict(norm="layernorm", norm_position="post", activation="gelu_tanh", positions="learned",
                   bias=True, tie_embeddings=True, scale_embeddings=False, norm_eps=1e-12,
                   causal=False, type_vocab_size=2, embedding_norm=True, mlm_head=True, share_layers="all"),
}

#: encoder–decoder presets (``lmlab.models.seq2seq``); t5 has T5's bucketed relative position bias
SEQ2SEQ_PRESETS: dict[str, dict[str, Any]] = {
    "t5": dict(norm="rmsnorm", norm_position="pre", activation="relu", positions="relative_bias",
               bias=False, tie_embeddings=True, scale_embeddings=False, norm_eps=1e-6),
    "bart": dict(norm="layernorm", norm_position="post", activation="gelu", positions="learned",
                 bias=True, tie_embeddings=True, scale_embeddings=False, norm_eps=1e-5, embedding_norm=True),
}

ALL_PRESETS: dict[str, dict[str, Any]] = {**PRESETS, **ENCODER_PRESETS, **SEQ2SEQ_PRESETS}


@dataclass
class TransformerConfig:
    """Shape and switches of a transformer: decoder-only by default, an encoder with ``causal=False``."""

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (MHA); 1 = MQA; between = GQA
    d_ff: int | None = None  # None = 4·d_model, or the LLaMA rounding of 8/3·d_model for SwiGLU
    context_length: int = 256
    norm: str = "layernorm"
    norm_position: str = "pre"
    norm_eps: float = 1e-5
    activation: str = "gelu"
    positions: str = "learned"
    rope_theta: float = 10000.0
    rope_scaling: float = 1.0  # RoPE context-extension factor (1 = none), applied as rope_scaling_type says
    rope_scaling_type: str = "linear"  # linear (position interpolation), ntk (NTK-aware) or yarn
    rope_original_context: int = 0  # YaRN: the context the model was trained on (0 = context_length)
    relative_buckets: int = 32  # T5 relative bias (positions="relative_bias"): buckets per direction pair
    relative_max_distance: int = 128  # ... and the distance beyond which buckets are shared
    score: str = "scaled_dot"
    bias: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = True
    scale_embeddings: bool = False  # multiply token embeddings by √d_model (Vaswani)
    causal: bool = True  # False = bidirectional self-attention (an encoder: BERT)
    type_vocab_size: int = 0  # > 0 adds segment (token type) embeddings (BERT's sentence A/B)
    embedding_norm: bool = False  # normalise the summed embeddings before the first layer (BERT, BART)
    mlm_head: bool = False  # BERT's dense → act → norm transform before the output layer, which gets a bias
    embedding_size: int = 0  # > 0 (< d_model): ALBERT's factorised embeddings, vocab → E → d_model (0 = d_model)
    share_layers: str = "none"  # ALBERT's cross-layer sharing: none, all, attention or ffn (lmlab.models.sharing)
    attention: str = "full"  # full or a long-sequence variant (lmlab.models.long_attention)
    attention_window: int = 64  # sliding_window: keys seen; strided: block length; lsh: chunk; adaptive_span: largest span
    lsh_buckets: int = 8  # lsh: hash buckets per round (even)
    lsh_rounds: int = 1  # lsh: hashing rounds
    linformer_k: int = 64  # linformer: length keys and values are projected to
    nystrom_landmarks: int = 32  # nystrom: landmarks (segment means) of queries and keys
    adaptive_span_ramp: int = 32  # adaptive_span: width of the soft mask's ramp
    adaptive_span_loss: float = 2e-6  # adaptive_span: weight λ of the L1 penalty on the spans
    memory_length: int = 0  # > 0: Transformer-XL segment recurrence over this many previous layer inputs
    compressed_memory: int = 0  # > 0: compressive memory of this many slots (needs memory_length)
    compression_rate: int = 3  # compressive memory: old memories compressed this many to one
    compression: str = "mean"  # ... by mean or max pooling, or conv (learned: lmlab.models.memory_compression)
    compression_loss: float = 1.0  # conv: weight of the attention-reconstruction loss
    moe_experts: int = 0  # > 0 replaces every MLP by a mixture of this many experts (lmlab.models.moe)
    moe_top_k: int = 2  # experts per token (1 for switch routing)
    moe_routing: str = "topk"  # topk, noisy_topk, switch, expert_choice or hash
    moe_balance_loss: float = 0.01  # weight of the Switch load-balancing loss
    moe_bias_update_rate: float = 0.0  # > 0: DeepSeek-V3 auxiliary-loss-free bias balancing

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "context_length"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_choice("norm", self.norm, NORMS)
        check_choice("norm_position", self.norm_position, ("pre", "post"))
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("positions", self.positions, POSITIONS)
        check_choice("score", self.score, SCORES)
        check_number("dropout", self.dropout, low=0.0, high=1.0, high_inclusive=False)
        check_number("norm_eps", self.norm_eps, low=0.0, low_inclusive=False)
        check_number("rope_theta", self.rope_theta, low=0.0, low_inclusive=False)
        for name in ("bias", "tie_embeddings", "scale_embeddings", "causal", "embedding_norm", "mlm_head"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_choice("rope_scaling_type", self.rope_scaling_type, ROPE_SCALINGS)
        check_number("rope_scaling", self.rope_scaling, low=0.0, low_inclusive=False)  # finite, positive
        if self.rope_scaling < 1 or (self.rope_scaling == 1 and self.rope_scaling_type != "linear"):
            raise ConfigError(f"rope_scaling = {self.rope_scaling} does not extend the context "
                              f"({self.rope_scaling_type} scaling needs a factor above 1)",
                              "give the factor new context / trained context, e.g. 4 (or 1 with linear for none)")
        check_number("rope_original_context", self.rope_original_context, low=0, integer=True)
        if self.rope_scaling_type == "yarn" and not self.rope_original_context:
            self.rope_original_context = self.context_length
        self._check_long_attention()
        check_choice("share_layers", self.share_layers, SHARING)
        check_number("embedding_size", self.embedding_size, low=0, integer=True)
        if self.embedding_size >= self.d_model:
            raise ConfigError(f"embedding_size = {self.embedding_size} is not smaller than d_model = {self.d_model}: "
                              "a factorised embedding (vocab → E → d_model) saves parameters only with E < d_model",
                              f"use an embedding_size below {self.d_model} (ALBERT: 128 for 768), or 0 for none")
        check_number("type_vocab_size", self.type_vocab_size, low=0, integer=True)
        check_number("relative_buckets", self.relative_buckets, low=2, integer=True)
        check_number("relative_max_distance", self.relative_max_distance, low=2, integer=True)
        check_number("moe_experts", self.moe_experts, low=0, integer=True)
        if self.moe_experts:
            check_choice("moe_routing", self.moe_routing, ROUTINGS)
            check_number("moe_top_k", self.moe_top_k, low=1, high=self.moe_experts, integer=True)
            check_number("moe_balance_loss", self.moe_balance_loss, low=0.0)
            check_number("moe_bias_update_rate", self.moe_bias_update_rate, low=0.0)
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads = {self.n_heads} does not divide d_model = {self.d_model}",
                              "choose a width that is a multiple of the number of heads")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        check_number("n_kv_heads", self.n_kv_heads, low=1, integer=True)
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_kv_heads = {self.n_kv_heads} does not divide n_heads = {self.n_heads}",
                              "use a divisor of n_heads (1 = multi-query attention)")
        if self.positions == "transformer_xl":
            self._check_xl_positions()
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"RoPE needs an even head width, got {self.head_dim}", "change d_model or n_heads")
        if self.d_ff is None:
            if self.activation == "swiglu":
                self.d_ff = 64 * ((int(8 * self.d_model / 3) + 63) // 64)
            else:
                self.d_ff = 4 * self.d_model
        check_number("d_ff", self.d_ff, low=1, integer=True)

    def _check_long_attention(self) -> None:
        """The long-sequence switches: each variant's sizes, and the combinations that have no meaning."""
        check_choice("attention", self.attention, ATTENTIONS)
        for name in ("attention_window", "lsh_rounds", "linformer_k", "nystrom_landmarks", "adaptive_span_ramp",
                     "compression_rate"):
            check_number(name, getattr(self, name), low=1, integer=True)
        check_number("lsh_buckets", self.lsh_buckets, low=2, integer=True)
        check_number("adaptive_span_loss", self.adaptive_span_loss, low=0.0)
        if self.lsh_buckets % 2:
            raise ConfigError(f"lsh_buckets = {self.lsh_buckets} is odd (random rotations give ± pairs)",
                              "use an even number of buckets")
        for name in ("memory_length", "compressed_memory"):
            check_number(name, getattr(self, name), low=0, integer=True)
        variant = self.attention
        if variant != "full" and self.score not in ("dot", "scaled_dot"):
            raise ConfigError(f"{variant} attention works on dot-product scores, not {self.score!r}",
                              "use score scaled_dot (or dot)")
        if variant in ("linformer", "nystrom") and self.causal:
            raise ConfigError(f"{variant} attention mixes every position into its summary, so it cannot be causal",
                              "use it in an encoder (causal false, trained with the MLM objective)")
        if variant in ("sliding_window", "strided", "lsh", "adaptive_span") and not self.causal:
            raise ConfigError(f"{variant} attention is implemented for causal decoders",
                              "use causal true, or linformer/nystrom for an encoder")
        if variant == "lsh" and self.n_kv_heads not in (None, self.n_heads):
            raise ConfigError("LSH attention shares queries and keys, so it needs as many key heads as query heads",
                              "leave n_kv_heads unset")
        check_choice("compression", self.compression, COMPRESSIONS)
        check_number("compression_loss", self.compression_loss, low=0.0)
        if self.compression == "conv" and self.score not in ("dot", "scaled_dot"):
            raise ConfigError("the conv compression's reconstruction loss attends with dot-product scores, "
                              f"not {self.score!r}", "use score scaled_dot, or compression mean or max")
        if self.compressed_memory and not self.memory_length:
            raise ConfigError("compressive memory holds what leaves the memory: it needs memory_length > 0",
                              "set memory_length too")
        if self.memory_length:
            if self.positions in ("learned", "sinusoidal"):
                raise ConfigError(f"segment recurrence reuses states at new positions: {self.positions} positions "
                                  "are absolute", "use positions rope, alibi, relative_bias or transformer_xl (relative positions)")
            if variant != "full" or not self.causal:
                raise ConfigError("segment recurrence (memory_length) is implemented for full causal attention",
                                  "use attention full with causal true")

    def _check_xl_positions(self) -> None:
        """Transformer-XL's relative encoding: a causal dot-product score on full attention, even width."""
        if not self.causal or self.attention != "full" or self.score not in ("dot", "scaled_dot"):
            raise ConfigError("transformer_xl positions are implemented for causal full attention with dot-product "
                              f"scores (got causal {self.causal}, attention {self.attention}, score {self.score})",
                              "use causal true, attention full and score scaled_dot, or positions rope/alibi")
        if self.d_model % 2:
            raise ConfigError(f"transformer_xl positions need an even d_model (sin and cos halves), got {self.d_model}",
                              "choose an even width")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def embedding_width(self) -> int:
        """Width of the token, position and segment embeddings: ``embedding_size`` when factorised, else d_model."""
        return self.embedding_size or self.d_model

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TransformerConfig:
        """A config of the named preset with sizes and any switch overridden."""
        check_choice("preset", name, tuple(ALL_PRESETS))
        return cls.from_dict({**ALL_PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TransformerConfig:
        """Build from a dict, rejecting unknown keys with the list of known ones."""
        check_keys("transformer setting(s)", values, {f.name for f in fields(cls)})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def num_parameters(self) -> int:
        """The parameter count, from the architecture's formula (checked against the modules in tests)."""
        d, f, v, layers = self.d_model, self.d_ff, self.vocab_size, self.n_layers
        hd, h, kv = self.head_dim, self.n_heads, self.n_kv_heads
        b = 1 if self.bias else 0
        norm = d if self.norm == "rmsnorm" else d * (1 + b)
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d + b * (h * hd + 2 * kv * hd + d)
        attn += {"bilinear": h * hd * hd, "additive": 2 * hd * hd + hd}.get(self.score, 0)
        mlp = (3 if self.activation == "swiglu" else 2) * d * f
        mlp += b * ((2 if self.activation == "swiglu" else 1) * f + d)
        if self.moe_experts:  # experts, plus the router (none for hashing) and the noise projection
            router = {"hash": 0, "noisy_topk": 2}.get(self.moe_routing, 1) * d * self.moe_experts
            mlp = self.moe_experts * mlp + router
        if self.attention == "linformer":  # E and F, one per layer
            attn += 2 * self.linformer_k * self.context_length
        elif self.attention == "adaptive_span":  # one span per head
            attn += h
        e = self.embedding_width
        norm_e = e if self.norm == "rmsnorm" else e * (1 + b)
        attn_copies = 1 if self.share_layers in ("all", "attention") else layers  # shared sublayers count once
        mlp_copies = 1 if self.share_layers in ("all", "ffn") else layers
        total = v * e + attn_copies * (attn + norm) + mlp_copies * (mlp + norm)
        total += 0 if self.tie_embeddings else v * e
        total += self.context_length * e if self.positions == "learned" else 0
        total += self.relative_buckets * h if self.positions == "relative_bias" else 0
        total += attn_copies * (d * h * hd + 2 * h * hd) if self.positions == "transformer_xl" else 0  # W_R, u, v
        if self.compressed_memory and self.compression == "conv":  # f_c: a [d, d, c] convolution per layer
            total += layers * (d * d * self.compression_rate + d)
        total += norm if self.norm_position == "pre" else 0  # final norm
        total += self.type_vocab_size * e + (norm_e if self.embedding_norm else 0)
        if self.embedding_size:  # E → d_model in, and d_model → E before the tied output layer
            total += e * d + d + (0 if self.mlm_head else d * e)
        total += d * e + b * e + norm_e + v if self.mlm_head else 0
        return total
