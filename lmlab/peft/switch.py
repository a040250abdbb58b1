"""Switch a PEFT adapter off for a while: the base model's outputs with no second copy in memory.

Preference optimisation (DPO and its family) and RL post-training measure the policy against a
frozen reference model. When the policy is the base plus an adapter, the reference is the same
network with the adapter switched off — what TRL does through PEFT's ``disable_adapter`` — so
the 135M-parameter base is held once. LoRA/QLoRA/DoRA, bottleneck adapters, IA3 and prompt
tuning switch off; methods that change the base's own parameters (BitFit, full fine-tuning) or
whose prefix lives inside attention cannot, and are refused by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ..core.errors import ConfigError
from . import record
from .adapters import WithAdapter
from .ia3 import IA3Linear
from .lora import LoraLinear
from .prompt import PromptEmbedding

SWITCHABLE_METHODS = ("lora", "qlora", "adapter", "ia3", "prompt")
_SWITCHES = (LoraLinear, WithAdapter, IA3Linear, PromptEmbedding)


def can_disable(model: nn.Module) -> bool:
    """Whether ``model`` carries a PEFT method that ``adapters_disabled`` can switch off."""
    rec = getattr(model, record.RECORD_ATTR, None)
    return rec is not None and rec["method"] in SWITCHABLE_METHODS


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` computes as its base model (every adapter module off); on exit
    each module is back as it was. Refuses merged adapters (their update is inside the weights)."""
    method = record.record_of(model)["method"]
    if method not in SWITCHABLE_METHODS:
        raise ConfigError(f"the {method} method changes the base model's own weights, so it cannot be "
                          "switched off to recover the base",
                          f"train with one of {', '.join(SWITCHABLE_METHODS)}, or give a separate reference "
                          "model (or precomputed reference log-probabilities)")
    switches = [m for m in model.modules() if isinstance(m, _SWITCHES)]
    if any(getattr(m, "merged", False) for m in switches):
        raise ConfigError("the adapter is merged into the base weights, so it cannot be switched off",
                          "unmerge it first (lmlab.peft.unmerge)")
    before = [m.enabled for m in switches]
    for m in switches:
        m.enabled = False
    try:
        yield model
    finally:
        for m, state in zip(switches, before, strict=True):
            m.enabled = state
