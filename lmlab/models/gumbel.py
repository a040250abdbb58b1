"""Gumbel-softmax (Jang et al., 2017; Maddison et al., 2017, "the Concrete distribution"): a differentiable
sample from a categorical distribution. Adding Gumbel(0, 1) noise g = −log(−log u) to the logits and
taking the argmax samples the categorical exactly (the Gumbel-max trick); the softmax of (logits + g)/τ is
its relaxation, which tends to that one-hot sample as the temperature τ → 0. ``hard=True`` is the
straight-through estimator: the forward value is the one-hot sample, the gradient the relaxed one's.
"""

from __future__ import annotations

import torch

from ..core.validate import check_number


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise shaped like ``like``: −log E with E ~ Exponential(1) (= −log(−log U))."""
    return -torch.empty_like(like).exponential_(generator=generator).log()


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, *, hard: bool = False, dim: int = -1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A relaxed (``hard=False``) or straight-through one-hot (``hard=True``) sample of the categorical
    distributions whose unnormalised log-probabilities are ``logits`` along ``dim``."""
    check_number("tau", tau, low=0.0, low_inclusive=False)
    soft = ((logits + gumbel_noise(logits, generator)) / tau).softmax(dim)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


def categorical_kl_uniform(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """KL(q ‖ uniform) of the categoricals q = softmax(``logits``) along ``dim``: Σ q log q + log K."""
    log_q = logits.float().log_softmax(dim)
    return (log_q.exp() * log_q).sum(dim) + torch.log(torch.tensor(float(logits.shape[dim])))
