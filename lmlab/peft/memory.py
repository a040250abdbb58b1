"""Memory arithmetic of training: weights + gradients + optimizer states + activations.

Weights, gradients and optimizer states are read off the (adapted) model exactly: every
parameter and buffer is stored, every trainable parameter has a gradient of its own dtype, and
AdamW keeps two states (first and second moments) of the parameter's dtype plus a float32 step
counter per tensor. Activations are predicted for a LLaMA-style pre-norm decoder block with
eager attention, no dropout and no activation checkpointing, by listing the tensors autograd
keeps for the backward pass, per token and layer (values):

- norm inputs 2h, attention scores' softmax n_heads·L, q/k/v after RoPE h + 2·kv,
  MLP gate, up and SiLU outputs 3i — kept whenever gradients flow through the block;
- linear-layer inputs — kept only for layers whose weight trains or that carry a trainable
  adapter reading their input: attention input h (q/k/v), attention output h (o), MLP input h
  (gate/up), MLP inner activation i (down). This is where a frozen base saves memory;
- normalised values 2h per layer (and h for the final norm) when the norm weights train
  (full fine-tuning);
- per method extra: LoRA/QLoRA r per adapted layer, bottleneck adapters 2·bottleneck + h per
  site; plus the final norm h and the logits and their softmax 2·V per token in float32.

It assumes gradients flow through every layer, as they do when every layer is adapted (or
the input is, for prompt tuning); a method confined to the top layers needs less.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..core.validate import check_choice, check_number

OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 0, "sgd_momentum": 1}
# Hugging Face's layer names and lmlab TransformerLM's (mlp.gate / mlp.up / mlp.down)
LINEAR_GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
                 "gate_up": ("gate_proj", "up_proj", "gate", "up"), "down": ("down_proj", "down")}
KEPT_GROUPS = (*LINEAR_GROUPS, "norm")


@dataclass
class DecoderShape:
    """The sizes of a LLaMA-style decoder that activation memory depends on."""

    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int

    @property
    def kv_width(self) -> int:
        return self.hidden // self.n_heads * self.n_kv_heads


def parameter_memory(model: nn.Module, optimizer: str = "adamw") -> dict[str, int]:
    """Bytes of weights (parameters and buffers), gradients and optimizer states of ``model``."""
    check_choice("optimizer", optimizer, list(OPTIMIZER_STATES))
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    trained = [p for p in params if p.requires_grad]
    gradients = sum(p.numel() * p.element_size() for p in trained)
    states = OPTIMIZER_STATES[optimizer] * gradients
    if optimizer in ("adamw", "adam"):
        states += 4 * len(trained)  # the float32 step counter PyTorch keeps per tensor
    return {"weights": weights, "gradients": gradients, "optimizer_states": states}


def activation_memory(shape: DecoderShape, batch_size: int, seq_len: int, *,
                      kept: tuple[str, ...] = KEPT_GROUPS,
                      extra_per_token_layer: int = 0, bytes_per_value: int = 4,
                      checkpointing: bool = False) -> int:
    """Predicted bytes of activations kept for the backward pass (see the module docstring).

    ``kept`` names the groups whose inputs must be kept: linear layers (qkv, o, gate_up,
    down) and "norm" for trainable norm weights;
    ``extra_per_token_layer`` adds a method's own values (LoRA's r, adapters' bottlenecks);
    ``checkpointing``: only each layer's input h is kept, plus one layer's activations while
    the backward pass recomputes it.
    """
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("seq_len", seq_len, low=1, integer=True)
    h, i = shape.hidden, shape.intermediate
    always = 2 * h + shape.n_heads * seq_len + h + 2 * shape.kv_width + 3 * i
    inputs = {"qkv": h, "o": h, "gate_up": h, "down": i, "norm": 2 * h}
    per_layer = always + sum(inputs[g] for g in set(kept)) + extra_per_token_layer
    tokens = batch_size * seq_len
    if checkpointing:
        blocks = tokens * (shape.n_layers * h + per_layer) * bytes_per_value
    else:
        blocks = tokens * shape.n_layers * per_layer * bytes_per_value
    final_norm = (2 if "norm" in kept else 1) * h * bytes_per_value
    head = tokens * (final_norm + 2 * shape.vocab_size * 4)
    return blocks + head


METHODS = ("full", "lora", "qlora", "ia3", "adapter", "adapter_fusion", "bitfit", "prompt",
           "prefix")


def _leaves(model: nn.Module, kind: type, where=lambda m: True) -> list[str]:
    return [n.rsplit(".", 1)[-1] for n, m in model.named_modules()
            if isinstance(m, kind) and where(m)]


def method_activation_terms(model: nn.Module, method: str, config,
                            shape: DecoderShape) -> tuple[tuple[str, ...], int]:
    """(groups whose inputs are kept, extra values per token and layer) for an adapted model."""
    from .adapters import WithAdapter
    from .fusion import WithFusion
    from .ia3 import IA3Linear
    from .lora import LoraLinear

    check_choice("method", method, METHODS)
    if method == "full":
        return KEPT_GROUPS, 0
    if method in ("lora", "qlora"):
        leaves = _leaves(model, LoraLinear)
        groups = tuple(g for g, names in LINEAR_GROUPS.items() if set(names) & set(leaves))
        return groups, config.r * len(leaves) // shape.n_layers
    if method == "ia3":
        inputs = set(_leaves(model, IA3Linear, lambda m: m.on_input))
        return ("down",) if inputs & set(LINEAR_GROUPS["down"]) else (), 0
    if method in ("adapter", "adapter_fusion"):
        sites = len(_leaves(model, (WithAdapter, WithFusion))) / shape.n_layers
        n = getattr(config, "n_adapters", 1)
        return (), round(sites * n * (2 * config.bottleneck + shape.hidden))
    if method == "prefix":
        return (), shape.n_heads * config.n_tokens  # every query also scores the P prefixes
    return (), 0  # bitfit, prompt (pass seq_len including the soft tokens)


def training_memory(model: nn.Module, shape: DecoderShape, batch_size: int, seq_len: int,
                    optimizer: str = "adamw", bytes_per_value: int = 4, checkpointing: bool = False) -> dict[str, int]:
    """Predicted training memory (bytes) of an adapted ``model``: weights, gradients,
    optimizer states, activations (``checkpointing``: with activation checkpointing) and their
    total. The method is read from the model's record.
    """
    record = getattr(model, "peft_record", None)
    method = record["method"] if record else "full"
    if record:
        from .saving import config_from_dict

        config = config_from_dict(record)
    else:
        config = None
    out = parameter_memory(model, optimizer)
    groups, extra = method_activation_terms(model, method, config, shape)
    out["activations"] = activation_memory(shape, batch_size, seq_len, kept=groups,
                                           extra_per_token_layer=extra,
                                           bytes_per_value=bytes_per_value, checkpointing=checkpointing)
    out["total"] = sum(out.values())
    return out
