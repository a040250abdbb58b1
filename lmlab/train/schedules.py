"""Learning-rate schedules as pure functions of the step (nothing to save for resuming).

``constant``, ``cosine`` and ``linear`` warm up linearly over ``warmup`` steps, then hold or
decay to ``min_lr`` at ``decay_steps``. ``step`` (Zaremba et al.'s LSTM recipe) holds ``lr``
until ``decay_steps``, then multiplies it by ``decay_factor`` every ``decay_every`` steps
(the first time at ``decay_steps``). ``noam`` is the inverse-square-root schedule of
Vaswani et al.: linear warm-up to ``lr`` at ``warmup``, then lr·√(warmup/step). (Their
d_model^-0.5 factor is folded into the peak ``lr``.)
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear", "step", "noam")


def lr_at(step: int, *, schedule: str, lr: float, warmup: int = 0, decay_steps: int = 1,
          min_lr: float = 0.0, decay_every: int = 1, decay_factor: float = 0.5) -> float:
    """The learning rate of optimizer step ``step`` (0-based)."""
    if schedule == "noam":
        w = max(warmup, 1)
        return lr * min((step + 1) / w, math.sqrt(w / (step + 1)))
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr if step < decay_steps else lr * decay_factor ** (1 + (step - decay_steps) // max(decay_every, 1))
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup) / max(decay_steps - warmup, 1)
    if schedule == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
    return lr - progress * (lr - min_lr)
