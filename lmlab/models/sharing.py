"""Cross-layer parameter sharing (ALBERT, Lan et al., 2020, §3.1): every layer uses the first layer's
sublayers — all of them, the attention only, or the feed-forward network only. Each sublayer goes
with its own norm (the norm that closes it in a post-norm layer). The layers stay separate modules
(hooks and caches still see ``n_layers`` layers); they hold the same tensors, so a shared model has
the parameters of one layer and the computation of ``n_layers``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..core.validate import check_choice

#: the sublayers each sharing mode ties across layers (``Block`` attribute names)
SHARED_PARTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "all": ("attn_norm", "attn", "long", "xl", "cross_norm", "cross", "mlp_norm", "mlp"),
    "attention": ("attn_norm", "attn", "long", "xl"),
    "ffn": ("mlp_norm", "mlp"),
}
SHARING = tuple(SHARED_PARTS)


def share_layers(blocks: Sequence[nn.Module], mode: str) -> None:
    """Make every block after the first use the first block's sublayers that ``mode`` names, in place."""
    check_choice("share_layers", mode, SHARING)
    first = blocks[0]
    for block in blocks[1:]:
        for name in SHARED_PARTS[mode]:
            setattr(block, name, getattr(first, name))
