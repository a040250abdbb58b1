"""A tiny random transformer with sharp logits for decoding tests (greedy paths are not near-ties)."""

from __future__ import annotations

import torch

from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!"


def tiny_transformer(tok, preset: str = "llama", seed: int = 0, **config) -> TransformerLM:
    """A 2-layer, 32-wide ``preset`` model over ``tok``'s vocabulary (context 64 unless given)."""
    torch.manual_seed(seed)
    args = dict(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, context_length=64)
    args.update(config)
    if preset != "llama":
        args.pop("n_kv_heads")
    lm = TransformerLM(TransformerConfig.from_preset(preset, **args)).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init
        lm.head.weight.mul_(40)
    return lm
