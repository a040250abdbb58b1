"""What a request asks of its KV cache — a policy and a quantization — and how a decoding loop applies it.

``KVCacheSettings`` is built once, from CLI flags or request fields (``cache_settings``), and
validated here, so every surface refuses the same bad input with the same message. The decoding
loop (``lmlab.generate.loop``) calls four functions and never looks inside the cache:

* ``prefill_setup`` — given to ``LanguageModel.prefill``: the fresh cache's storage
  (quantization) and what it records about attention while the prompts go in;
* ``observe_decoding`` — before each decode step, what to record for the running rows' policies;
* ``enforce`` — after each forward pass, every request's policy evicts its rows down to budget;
* ``held_bytes`` — the bytes the cache holds, for the figures a run reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..core.errors import ConfigError
from ..core.validate import check_choice
from .cache import HEADROOM, KVCache
from .observe import Observation
from .options import POLICY_OPTIONS
from .policies import POLICIES, Budget, CacheView, FullCache, Policy, check_budget
from .quantized import KVQuantization, QuantizedStorage

QUANT_NAMES = {"int8": 8, "int4": 4}


@dataclass(frozen=True)
class KVCacheSettings:
    """A request's cache: an eviction ``policy`` (``lmlab.kvcache.policies``) and an optional
    ``quantization`` of what it keeps."""

    policy: Policy = field(default_factory=FullCache)
    quantization: KVQuantization | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise ConfigError(f"policy must be one of lmlab.kvcache.policies, got {type(self.policy).__name__}")
        self.policy.check()

    @property
    def needs_attention(self) -> bool:
        return bool(self.policy.needs(True) or self.policy.needs(False))

    @property
    def bounded(self) -> bool:
        """Whether the cache stays within a budget while decoding (so it needs little room ahead)."""
        return self.policy.online and not isinstance(self.policy, FullCache)

    def budget(self, prompt_tokens: int) -> Budget:
        return self.policy.resolve(prompt_tokens)

    def reserve(self, max_new_tokens: int) -> int:
        """Slots to allocate beyond the prompt: a bounded cache grows in steps instead of all at once."""
        return min(max_new_tokens, HEADROOM) if self.bounded else max_new_tokens

    def check_model(self, lm: Any) -> None:
        """Refuse, with one clear line, a model this cache cannot serve."""
        state = lm.initial_state(1)
        if not isinstance(state, KVCache):
            raise ConfigError(f"KV-cache policies and quantization need a model with a KV cache (a transformer); "
                              f"{type(lm).__name__} keeps a {type(state).__name__}", "leave --kv-policy/--kv-quant out")
        if self.policy.repositions and state.positions == "absolute":
            raise ConfigError(f"{self.policy.name} moves cached tokens to positions within the cache, but this model "
                              "adds absolute positions to its embeddings", "use --kv-policy window with this model")
        if self.needs_attention and any(getattr(m, "past_prefix", None) is not None for m in _modules(lm)):
            raise ConfigError(f"{self.policy.name} scores tokens by attention, and prefix tuning adds keys outside "
                              "the cache that the scores would miss", "use window, streaming or knorm with this adapter")

    def to_dict(self) -> dict[str, Any]:
        out = {"policy": self.policy.name}
        out.update({f.name: getattr(self.policy, f.name) for f in fields(self.policy)
                    if getattr(self.policy, f.name) is not None})
        if self.quantization is not None:
            q = self.quantization
            out["quantization"] = {"bits": q.bits, "key_axis": q.key_axis, "value_axis": q.value_axis, "group": q.group}
        return out


def _modules(lm: Any) -> list:
    return list(lm.modules()) if hasattr(lm, "modules") else []


def cache_settings(policy: str | None = None, budget: int | float | None = None, *, quant: str | None = None,
                   key_axis: str | None = None, value_axis: str | None = None, group: int | None = None,
                   **options: Any) -> KVCacheSettings | None:
    """Settings from flat options as the CLI and the server take them (None means "not given"):
    ``policy`` (a name of ``POLICIES``), ``budget``, the policy's own options (``POLICY_OPTIONS``)
    and the quantization (``quant`` 'int8'/'int4', axes, group). An option the chosen policy does
    not take is an error, not ignored. Nothing given: None (the plain cache)."""
    given = {k: v for k, v in options.items() if v is not None}
    quant_options = {k: v for k, v in (("key_axis", key_axis), ("value_axis", value_axis), ("group", group))
                     if v is not None}
    if policy is None and budget is None and not given and quant is None and not quant_options:
        return None
    name = policy or "full"
    check_choice("kv policy", name, tuple(POLICIES))
    unknown = sorted(set(given) - set(POLICY_OPTIONS[name]))
    if unknown:
        takes = ", ".join(POLICY_OPTIONS[name]) or "no options"
        raise ConfigError(f"the {name} policy does not take {', '.join(unknown)}", f"it takes {takes}")
    if budget is not None:
        check_budget("kv budget", budget)
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
    quantization = None
    if quant is not None:
        check_choice("kv quant", quant, tuple(QUANT_NAMES))
        quantization = KVQuantization(QUANT_NAMES[quant], **quant_options)
    elif quant_options:
        raise ConfigError(f"{', '.join(quant_options)} set how the cache is quantized", "add --kv-quant int8 or int4")
    return KVCacheSettings(POLICIES[name](budget=budget, **given), quantization)


# --- what the decoding loop calls ----------------------------------------------------------------
def prefill_setup(requests: Sequence[KVCacheSettings | None]) -> Callable[[Any], None] | None:
    """What ``prefill`` applies to the fresh cache of a batch of prompts (None: nothing to set up)."""
    present = [r for r in requests if r is not None]
    if not present:
        return None
    formats = {r.quantization for r in present}
    if len(formats) > 1 or (len(present) < len(requests) and formats != {None}):
        raise ConfigError("requests with different KV quantization cannot share a batch",
                          "give every request the same --kv-quant")
    quantization = present[0].quantization
    observation = _union(r.policy.needs(True) for r in present)

    def setup(state: Any) -> None:
        cache = _cache(state)
        if quantization is not None:
            cache.quant = QuantizedStorage(quantization, cache.n_layers)
        cache.observe = observation or None

    return setup


def observe_decoding(state: Any, requests: Sequence[KVCacheSettings | None]) -> None:
    """Before a decode step: record what the running rows' policies read after it."""
    if isinstance(state, KVCache):
        observation = _union(r.policy.needs(False) for r in requests if r is not None)
        state.observe = observation or None


def enforce(state: Any, requests: Sequence[tuple[Sequence[int], KVCacheSettings | None, int, str]]) -> None:
    """After a forward pass: each request — (its rows in ``state``, its cache settings, its prompt's
    length, phase 'prompt' or 'step') — evicts its rows down to its budget, all in one ``evict``."""
    acting = [(rows, s, n, phase) for rows, s, n, phase in requests
              if s is not None and rows and s.policy.acts(phase)]
    if not acting:
        return
    cache = _cache(state)
    keeps: list[tuple[torch.Tensor, Any]] = []
    repositioned: list[int] = []
    slack = HEADROOM
    for rows, settings, prompt_tokens, phase in acting:
        budget = settings.budget(prompt_tokens)
        keep = settings.policy.keep(CacheView(cache, list(rows)), budget, phase)
        slack = min(slack, max(1, budget.tokens // 8))
        if keep is not None:
            keeps.append((torch.tensor(list(rows), dtype=torch.long), keep))
            if settings.policy.repositions:
                repositioned += list(rows)
    if any(phase == "prompt" for *_, phase in acting):
        cache.observed.pop("queries", None)  # the prompt's observation window is spent
    rows_alike = [(rows, keep) for rows, keep in keeps if not isinstance(keep, list)]
    per_head = [(rows, keep) for rows, keep in keeps if isinstance(keep, list)]
    actions = []
    if rows_alike:  # the same tokens in every layer and head (StreamingLLM closes up positions here)
        reposition = None
        if repositioned:
            reposition = torch.zeros(cache.batch_size, dtype=torch.bool)
            reposition[repositioned] = True
        actions.append((_combined(cache, rows_alike), reposition))
    if per_head:
        actions.append((_combined(cache, per_head), None))
    for i, (keep, reposition) in enumerate(actions):  # every mask was chosen on the same slots: compact last
        last = i == len(actions) - 1
        cache.evict(keep, reposition=reposition, slack=slack if last else cache.length + 1)


def _combined(cache: KVCache, keeps: list[tuple[torch.Tensor, Any]]) -> Any:
    """One keep mask for the whole batch: every request's rows as it chose, the other rows untouched."""
    if not any(isinstance(keep, list) for _, keep in keeps):
        out = torch.ones(cache.batch_size, cache.length, dtype=torch.bool)
        for rows, keep in keeps:
            out[rows] = keep.to(out.device)
        return out
    out = [torch.ones(cache.batch_size, cache.keys[i].shape[1], cache._slots(i), dtype=torch.bool)
           for i in range(cache.n_layers)]
    for rows, keep in keeps:
        for i, layer in enumerate(out):
            chosen = keep[i] if isinstance(keep, list) else keep[:, cache.offsets[i]:].unsqueeze(1)
            layer[rows] = chosen.to(layer.device).expand(len(rows), *layer.shape[1:])
    return out


def held_bytes(state: Any) -> int:
    """Bytes of KV-cache tensors ``state`` holds (0 for states that are not KV caches)."""
    return state.bytes_held() if isinstance(state, KVCache) else 0


def _cache(state: Any) -> KVCache:
    if not isinstance(state, KVCache):
        raise ConfigError(f"KV-cache policies need a KV cache; this model's state is a {type(state).__name__}",
                          "leave --kv-policy/--kv-quant out for this model")
    return state


def _union(observations) -> Observation:
    out = Observation()
    for o in observations:
        out = out | o
    return out
