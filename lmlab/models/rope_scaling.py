"""Context extension for RoPE models: how the rotation frequencies change when a model trained on
``original`` positions is asked to read ``factor`` times more.

* ``linear`` — position interpolation (Chen et al. 2023, "Extending Context Window of Large
  Language Models via Positional Interpolation"): every frequency divided by ``factor``.
* ``ntk`` — NTK-aware scaling (bloc97, 2023; the fixed form of Hugging Face's "dynamic" scaling):
  the base θ is raised to θ·factor^(d/(d-2)), so the fastest frequencies (local order) are
  kept and the slowest ones are interpolated.
* ``yarn`` — YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language
  Models"): frequencies that turn more than ``beta_fast`` times over the original context are
  kept, those turning less than ``beta_slow`` times are interpolated, a linear ramp between; and
  cos/sin are multiplied by 0.1·ln(factor) + 1 (the attention temperature of its Eq. 21).
"""

from __future__ import annotations

import math

import torch

ROPE_SCALINGS = ("linear", "ntk", "yarn")


def rope_frequencies(head_dim: int, theta: float, kind: str = "linear", factor: float = 1.0,
                     original: int = 0, beta_fast: float = 32.0, beta_slow: float = 1.0,
                     device: torch.device | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [head_dim / 2] and the factor cos/sin are multiplied by, for RoPE with
    base ``theta`` extended ``factor`` times (``original``: the trained context, YaRN only)."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    if kind == "ntk" and factor != 1.0:
        theta = theta * factor ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / theta ** exponents
    if kind != "yarn" or factor == 1.0:
        return inv_freq, 1.0

    def turns_dim(turns: float) -> float:  # the dimension whose frequency turns ``turns`` times over ``original``
        return head_dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(turns_dim(beta_fast)), 0)
    high = min(math.ceil(turns_dim(beta_slow)), head_dim - 1)
    ramp = ((torch.arange(head_dim // 2, device=device, dtype=torch.float32) - low)
            / max(high - low, 1e-3)).clamp(0, 1)  # 0: keep (extrapolate), 1: interpolate
    inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp)
    return inv_freq, 0.1 * math.log(factor) + 1.0
