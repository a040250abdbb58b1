"""lmlab.kvcache: the KV cache of transformer decoding — its layout, row operations and eviction hook —
and the cache policies built on it.

It sits beside ``lmlab.models`` (the transformer writes into it) and imports nothing above
``lmlab.core``. ``cache`` is the layout; ``policies`` the eviction policies (sliding window,
StreamingLLM, H2O, SnapKV, PyramidKV, TOVA, Knorm); ``quantized`` KIVI's int8/int4 storage;
``observe`` the attention statistics policies read; ``settings`` what a request asks of its cache
and how the decoding loop applies it; ``options`` the policies' names and options (no torch).

Its names are imported on first use (``lmlab.core.lazy``), so that the command line can list the
policies (``options``) without importing torch.
"""

from ..core.lazy import lazy_exports

#: the names this package exports, and the module each lives in
EXPORTS = {"HEADROOM": "cache", "KVCache": "cache", "Observation": "observe", "H2O": "policies", "POLICIES":
           "policies", "TOVA": "policies", "Budget": "policies", "CacheView": "policies", "FullCache": "policies",
           "KeyNorm": "policies", "Policy": "policies", "PyramidKV": "policies", "SlidingWindow": "policies",
           "SnapKV": "policies", "StreamingLLM": "policies", "KVQuantization": "quantized", "KVCacheSettings":
           "settings", "cache_settings": "settings", "enforce": "settings", "held_bytes": "settings",
           "observe_decoding": "settings", "prefill_setup": "settings", "POLICY_OPTIONS": "options"}

__all__ = sorted(EXPORTS)
__getattr__ = lazy_exports(__name__, EXPORTS)
