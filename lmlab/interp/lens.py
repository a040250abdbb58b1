"""The logit lens (nostalgebraist 2020): each layer's residual stream read through the final norm and
the output head, as if the model stopped there."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .cache import run_with_cache


def residual_streams(lm: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The residual stream before block 0 and after every block, [n_layers + 1, B, T, d_model]."""
    n = len(lm.blocks)
    names = ["blocks.0.resid_pre"] + [f"blocks.{i}.resid_post" for i in range(n)]
    _, cache = run_with_cache(lm, ids, names)
    return torch.stack([cache[name] for name in names])


@torch.no_grad()
def logit_lens(lm: nn.Module, ids: torch.Tensor, position: int | None = None) -> torch.Tensor:
    """Logits [n_layers + 1, B, T, V] of every layer's stream (index 0: the embeddings), or
    [n_layers + 1, B, V] at one ``position``. The last row equals the model's own logits."""
    streams = residual_streams(lm, ids)
    if position is not None:
        streams = streams[:, :, position]
    if lm.final_norm is not None:
        streams = lm.final_norm(streams)
    return lm.logits(streams).float()


def lens_top_tokens(lm: nn.Module, tokenizer: Any, ids: list[int], *, top: int = 5,
                    position: int = -1) -> list[dict[str, Any]]:
    """Per layer, the ``top`` next tokens the lens predicts at ``position`` of one prompt, with
    their probabilities: [{"layer": "embed" | i, "tokens": [...], "ids": [...], "probs": [...]}]."""
    logits = logit_lens(lm, torch.tensor([ids]), position=position)[:, 0]
    probs, best = torch.softmax(logits, dim=-1).topk(top, dim=-1)
    rows = []
    for layer in range(logits.shape[0]):
        token_ids = best[layer].tolist()
        rows.append({"layer": "embed" if layer == 0 else layer - 1, "ids": token_ids,
                     "tokens": [tokenizer.decode([i]) for i in token_ids],
                     "probs": [round(p, 6) for p in probs[layer].tolist()]})
    return rows
