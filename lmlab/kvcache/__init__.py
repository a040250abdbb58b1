"""lmlab.kvcache: the KV cache of transformer decoding — its layout, row operations and eviction hook.

It sits beside ``lmlab.models`` (the transformer writes into it) and imports nothing above
``lmlab.core``; cache policies that decide what to keep build on ``KVCache.evict``.
"""

from .cache import HEADROOM, KVCache

__all__ = ["HEADROOM", "KVCache"]
