"""lmlab.kvcache: the KV cache of transformer decoding — its layout, row operations and eviction hook —
and the cache policies built on it.

It sits beside ``lmlab.models`` (the transformer writes into it) and imports nothing above
``lmlab.core``. ``cache`` is the layout; ``policies`` the eviction policies (sliding window,
StreamingLLM, H2O, SnapKV, PyramidKV, TOVA, Knorm); ``quantized`` KIVI's int8/int4 storage;
``observe`` the attention statistics policies read; ``settings`` what a request asks of its cache
and how the decoding loop applies it.
"""

from .cache import HEADROOM, KVCache
from .observe import Observation
from .policies import (
    H2O,
    POLICIES,
    TOVA,
    Budget,
    CacheView,
    FullCache,
    KeyNorm,
    Policy,
    PyramidKV,
    SlidingWindow,
    SnapKV,
    StreamingLLM,
)
from .quantized import KVQuantization
from .settings import (
    KVCacheSettings,
    cache_settings,
    enforce,
    held_bytes,
    observe_decoding,
    prefill_setup,
)

__all__ = ["H2O", "HEADROOM", "POLICIES", "TOVA", "Budget", "CacheView", "FullCache", "KVCache", "KVCacheSettings",
           "KVQuantization", "KeyNorm", "Observation", "Policy", "PyramidKV", "SlidingWindow", "SnapKV",
           "StreamingLLM", "cache_settings", "enforce", "held_bytes", "observe_decoding", "prefill_setup"]
