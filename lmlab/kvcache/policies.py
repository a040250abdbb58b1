"""KV-cache policies: which cached tokens a row keeps once it holds more than its budget.

One frozen dataclass per idea, citing its paper. A policy sees the rows of one request through a
``CacheView`` and answers a keep mask — [b, length] (the same tokens in every layer and head) or
one [b, KV heads, slots] mask per layer (each head keeps its own) — which ``lmlab.kvcache.settings
.enforce`` hands to ``KVCache.evict``. It acts when a forward pass has ended: ``phase`` is
'prompt' once the request's whole prompt is in the cache, 'step' after every other pass (a decode
step, or a chunk of a prompt fed in pieces). Policies that only compress the prompt (SnapKV,
PyramidKV) act in the first phase only; the others ('online') evict in both, so a row never holds
more than its budget. A budget is per row, layer and KV head: ``Budget.tokens``.

``needs(prefilling)`` says which attention statistics the cache must record for the policy
(``lmlab.kvcache.observe``); policies that need none leave the fused attention untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, InputError
from ..core.validate import check_number
from .cache import KVCache
from .observe import Observation

Keep = torch.Tensor | list[torch.Tensor] | None


@dataclass(frozen=True)
class Budget:
    """How much a row may hold: ``tokens`` per layer and KV head; ``allowance`` is the same before
    rounding (a fraction of the prompt's length), which PyramidKV splits across layers."""

    tokens: int
    allowance: float


def check_budget(name: str, budget: int | float) -> None:
    """A budget is a number of tokens (an integer ≥ 1) or a fraction of the prompt in (0, 1)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ConfigError(f"{name} must be a number of tokens or a fraction of the prompt, got {budget!r}")
    if isinstance(budget, float) and not budget.is_integer():
        check_number(name, budget, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    else:
        check_number(name, budget, low=1)


def resolve_budget(budget: int | float, prompt_tokens: int) -> Budget:
    """``budget`` for a prompt of ``prompt_tokens`` tokens (a fraction keeps at least one token)."""
    if isinstance(budget, float) and budget < 1:
        allowance = prompt_tokens * budget
        return Budget(max(1, int(allowance)), allowance)
    return Budget(int(budget), float(budget))


class CacheView:
    """The rows of one request in a cache, as a policy reads them (all tensors for those rows only)."""

    def __init__(self, cache: KVCache, rows: list[int]) -> None:
        self.cache = cache
        self.rows = torch.tensor(rows, dtype=torch.long)
        self.n_layers = cache.n_layers

    def _pick(self, t: torch.Tensor) -> torch.Tensor:
        return t.index_select(0, self.rows.to(t.device))

    def row_live(self) -> torch.Tensor:
        """Which slots each row holds, [b, length] (bool)."""
        c = self.cache
        if c.mask is None:
            return torch.ones(len(self.rows), c.length, dtype=torch.bool)
        return self._pick(c.mask[:, :c.length])

    def live(self, layer: int) -> torch.Tensor:
        """Which slots of the layer each row and KV head holds, [b, KV, slots] (bool)."""
        return self._pick(self.cache.live(layer))

    def keys(self, layer: int) -> torch.Tensor:
        """The layer's keys as attention reads them, [b, KV, slots, D]."""
        return self._pick(self.cache.layer_keys(layer))

    def attention(self, layer: int) -> torch.Tensor:
        """Attention each slot received so far, summed over queries and the KV head's query heads."""
        store = self.cache.slot_data.get("attention", [None] * self.n_layers)[layer]
        if store is None:
            raise ConfigError("no attention was recorded for this cache", "set its observation before the prompt")
        return self._pick(store[:, :, :self.cache._slots(layer)])

    def observed(self, name: str, layer: int) -> torch.Tensor:
        """A recorded observation ('window' or 'last') of the layer, [b, H, slots]."""
        found = self.cache.observed.get(name, [None] * self.n_layers)[layer]
        if found is None:
            raise ConfigError(f"the cache recorded no '{name}' attention in its last pass",
                              "set its observation before the forward pass")
        return self._pick(found)

    def queries_seen(self, layer: int) -> torch.Tensor:
        """How many real tokens attended each slot of the layer (itself and every later one), [b, slots]."""
        real = self.row_live()[:, self.cache.offsets[layer]:].float()
        return real.flip(-1).cumsum(-1).flip(-1).clamp(min=1)


def _recent(live: torch.Tensor, n: int) -> torch.Tensor:
    """The last ``n`` held slots along the last dimension."""
    return live & (live.flip(-1).long().cumsum(-1).flip(-1) <= n)


def _first(live: torch.Tensor, n: int) -> torch.Tensor:
    return live & (live.long().cumsum(-1) <= n)


def _top(scores: torch.Tensor, candidates: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` highest-scoring candidates along the last dimension (all of them when fewer). Exact ties
    are broken by ``torch.topk``, as kvpress breaks them, so a choice among tied tokens (Knorm's
    layer-0 keys of one repeated token, whose norms RoPE leaves equal) may depend on the batch layout."""
    out = torch.zeros_like(candidates)
    if n <= 0:
        return out
    masked = scores.float().masked_fill(~candidates, float("-inf"))
    out.scatter_(-1, masked.topk(min(n, scores.shape[-1]), dim=-1).indices, True)
    return out & candidates


def _over(live: torch.Tensor, tokens: int) -> bool:
    return bool((live.sum(dim=-1) > tokens).any())


def _per_head(view: CacheView, budget: Budget, phase: str, choose) -> Keep:
    """Per-layer keep masks from ``choose(layer, live [b, KV, S]) -> keep``, or None when no row,
    layer and head holds more than its budget."""
    lives = [view.live(i) for i in range(view.n_layers)]
    if not any(_over(live, budget.tokens) for live in lives):
        return None
    return [choose(i, live) for i, live in enumerate(lives)]


class Policy:
    """What every policy has: a ``name``, whether it evicts during decoding (``online``) or only
    compresses the prompt, and whether it closes up positions (``repositions``)."""

    name: ClassVar[str]
    online: ClassVar[bool] = True
    repositions: ClassVar[bool] = False
    budget: int | float | None = None

    def acts(self, phase: str) -> bool:
        return self.online or phase == "prompt"

    def needs(self, prefilling: bool) -> Observation:
        return Observation()

    def minimum(self) -> int:
        """The smallest budget (in tokens) the policy's other settings leave room for."""
        return 1

    def check(self) -> None:
        if self.budget is None:
            raise ConfigError(f"the {self.name} policy needs a budget", "pass --kv-budget N (tokens) or a fraction")
        check_budget("kv budget", self.budget)
        if not (isinstance(self.budget, float) and self.budget < 1) and self.budget < self.minimum():
            raise ConfigError(f"a {self.name} budget of {self.budget:g} tokens is smaller than "
                              f"{self._minimum_reason()} ({self.minimum()})", "raise --kv-budget or lower the others")

    def _minimum_reason(self) -> str:
        return "one token"

    def resolve(self, prompt_tokens: int) -> Budget:
        """The budget of a request whose prompt has ``prompt_tokens`` tokens."""
        budget = resolve_budget(self.budget, prompt_tokens)
        if budget.tokens < self.minimum():
            raise InputError(f"a {self.name} budget of {self.budget:g} of a {prompt_tokens}-token prompt is "
                             f"{budget.tokens} tokens, smaller than {self._minimum_reason()} ({self.minimum()})",
                             "raise --kv-budget")
        return budget

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        raise NotImplementedError


@dataclass(frozen=True)
class FullCache(Policy):
    """Every token stays (the cache without a policy); a quantization still shrinks it."""

    name: ClassVar[str] = "full"
    online: ClassVar[bool] = False
    budget: int | float | None = None

    def check(self) -> None:
        if self.budget is not None:
            raise ConfigError("the full cache keeps every token: a budget means nothing to it",
                              "leave --kv-budget out or choose an evicting --kv-policy")

    def resolve(self, prompt_tokens: int) -> Budget:
        return Budget(prompt_tokens, float(prompt_tokens))

    def acts(self, phase: str) -> bool:
        return False

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        return None


@dataclass(frozen=True)
class SlidingWindow(Policy):
    """The last ``budget`` tokens of each row (Beltagy et al., 2020's sliding-window attention as a
    cache). Position ids are unchanged, so decoding equals a full forward pass whose queries each see
    only the previous ``budget`` keys."""

    name: ClassVar[str] = "window"
    budget: int | float | None = None

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        live = view.row_live()
        return _recent(live, budget.tokens) if _over(live, budget.tokens) else None


@dataclass(frozen=True)
class StreamingLLM(Policy):
    """StreamingLLM (Xiao et al., 2024, "Efficient Streaming Language Models with Attention Sinks"):
    the first ``sinks`` tokens — the attention sinks a model dumps attention on — and the most recent
    ``window`` (default: the rest of the budget). Positions are those within the cache, as in the
    paper: a kept token's position is its place in the cache, so generation goes on past the
    trained context with every position the model sees below sinks + window."""

    name: ClassVar[str] = "streaming"
    repositions: ClassVar[bool] = True
    budget: int | float | None = None
    sinks: int = 4
    window: int | None = None

    def check(self) -> None:
        check_number("kv sinks", self.sinks, low=0, integer=True)
        if self.window is not None:
            check_number("kv window", self.window, low=1, integer=True)
        if self.budget is None and self.window is not None:
            return
        super().check()

    def minimum(self) -> int:
        return self.sinks + (self.window or 1)

    def _minimum_reason(self) -> str:
        return "sinks + window" if self.window is not None else "sinks + one recent token"

    def resolve(self, prompt_tokens: int) -> Budget:
        if self.budget is None:
            return Budget(self.minimum(), float(self.minimum()))
        return super().resolve(prompt_tokens)

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        live = view.row_live()
        if not _over(live, budget.tokens):
            return None
        window = self.window if self.window is not None else budget.tokens - self.sinks
        return _first(live, self.sinks) | _recent(live, window)


@dataclass(frozen=True)
class H2O(Policy):
    """H2O, the heavy-hitter oracle (Zhang et al., 2023): per layer and KV head, the ``recent`` newest
    tokens (default half the budget) and the rest of the budget to the heavy hitters — the tokens
    with the largest attention accumulated over every query so far (a KV head sums its query heads).
    ``normalize`` divides each token's sum by the queries that saw it (kvpress's
    ObservedAttentionPress, which also keeps no recent window: ``recent=0``)."""

    name: ClassVar[str] = "h2o"
    budget: int | float | None = None
    recent: int | None = None
    normalize: bool = False

    def check(self) -> None:
        if self.recent is not None:
            check_number("kv recent", self.recent, low=0, integer=True)
        super().check()

    def minimum(self) -> int:
        return max(self.recent or 0, 1)

    def _minimum_reason(self) -> str:
        return "the recent window"

    def needs(self, prefilling: bool) -> Observation:
        return Observation(accumulate=True)

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        recent = self.recent if self.recent is not None else budget.tokens // 2

        def choose(layer: int, live: torch.Tensor) -> torch.Tensor:
            scores = view.attention(layer)
            if self.normalize:
                scores = scores / view.queries_seen(layer).unsqueeze(1)
            kept = _recent(live, recent)
            return kept | _top(scores, live & ~kept, budget.tokens - recent)

        return _per_head(view, budget, phase, choose)


def window_scores(view: CacheView, layer: int, live: torch.Tensor, window: int, kernel: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """SnapKV's scores of the layer's slots, [b, KV, S], and the observation window [b, KV, S] (bool):
    the window's mean attention over the tokens before it, pooled over ``kernel`` neighbours
    (average, zero padding at both ends of the prefix) and averaged over each KV head's query heads."""
    observed = view.observed("window", layer)  # [b, H, S]
    b, h, s = observed.shape
    kv = live.shape[1]
    in_window = _recent(live, window)
    prefix = live & ~in_window
    heads_prefix = prefix.repeat_interleave(h // kv, dim=1)
    pooled = F.avg_pool1d((observed * heads_prefix).reshape(b * h, 1, s), kernel_size=kernel,
                          padding=kernel // 2, stride=1).view(b, h, s)
    return pooled.view(b, kv, h // kv, s).mean(dim=2), in_window


@dataclass(frozen=True)
class SnapKV(Policy):
    """SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation"): once
    the prompt is in, each layer and KV head keeps the last ``window`` prompt tokens (the observation
    window) and the ``budget − window`` earlier tokens the window attends to most, after average
    pooling over ``kernel`` neighbours so a selected token keeps its context. Tokens generated
    afterwards are all kept (the paper compresses the prompt only)."""

    name: ClassVar[str] = "snapkv"
    online: ClassVar[bool] = False
    budget: int | float | None = None
    window: int = 32
    kernel: int = 5

    def check(self) -> None:
        check_number("kv window", self.window, low=1, integer=True)
        check_number("kv kernel", self.kernel, low=1, integer=True)
        if self.kernel % 2 == 0:
            raise ConfigError(f"kv kernel must be odd (a centred pooling window), got {self.kernel}")
        super().check()

    def minimum(self) -> int:
        return self.window

    def _minimum_reason(self) -> str:
        return "the observation window"

    def needs(self, prefilling: bool) -> Observation:
        return Observation(window=self.window) if prefilling else Observation()

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        def choose(layer: int, live: torch.Tensor) -> torch.Tensor:
            return self._select(view, layer, live, budget.tokens)

        return _per_head(view, budget, phase, choose)

    def _select(self, view: CacheView, layer: int, live: torch.Tensor, tokens: int) -> torch.Tensor:
        scores, in_window = window_scores(view, layer, live, self.window, self.kernel)
        return in_window | _top(scores, live & ~in_window, tokens - self.window)


@dataclass(frozen=True)
class PyramidKV(SnapKV):
    """PyramidKV (Cai et al., 2024, "PyramidKV: Dynamic KV Cache Compression based on Pyramidal
    Information Funneling"): SnapKV's selection with a budget per layer falling linearly from the
    first layer to the last (attention is broad low down, focused high up), the same total as
    ``budget`` in every layer. The split is KVCache-Factory's, as kvpress computes it; ``beta``
    sets the slope (the last layer keeps 1/beta of the average beyond the window)."""

    name: ClassVar[str] = "pyramidkv"
    beta: int = 20

    def check(self) -> None:
        check_number("kv beta", self.beta, low=1, integer=True)
        super().check()

    def layer_budgets(self, prompt_tokens: int, allowance: float, n_layers: int) -> list[int]:
        """Tokens each layer keeps of a ``prompt_tokens`` prompt when the average is ``allowance``."""
        top = self.window + allowance
        low = (top - self.window) / self.beta
        high = (top - self.window) * 2 - low
        if high >= prompt_tokens - self.window:
            high = prompt_tokens - self.window
            low = (top - self.window) * 2 - high
        if not prompt_tokens >= high >= low >= self.window:
            return [max(1, round(allowance))] * n_layers  # too short for a pyramid: SnapKV's budget
        steps = (high - low) / (n_layers - 1) if n_layers > 1 else 0.0
        return [round(high - layer * steps) for layer in range(n_layers)]

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        lives = [view.live(i) for i in range(view.n_layers)]
        prompt = int(lives[0].sum(dim=-1).max())
        budgets = self.layer_budgets(prompt, budget.allowance, view.n_layers)
        if not any(_over(live, n) for live, n in zip(lives, budgets, strict=True)):
            return None
        return [self._select(view, i, live, n) for i, (live, n) in enumerate(zip(lives, budgets, strict=True))]


@dataclass(frozen=True)
class TOVA(Policy):
    """TOVA, token omission via attention (Oren et al., 2024, "Transformers are Multi-State RNNs"):
    whenever a layer holds more than its budget, drop the tokens the newest query attends to least,
    its weights averaged over all heads (one choice per layer, shared by its heads). The newest
    token itself always stays (as kvpress keeps it)."""

    name: ClassVar[str] = "tova"
    budget: int | float | None = None

    def needs(self, prefilling: bool) -> Observation:
        return Observation(last=True)

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        def choose(layer: int, live: torch.Tensor) -> torch.Tensor:
            scores = view.observed("last", layer).mean(dim=1)  # [b, S]
            row = live.any(dim=1)
            newest = _recent(row, 1)
            kept = newest | _top(scores, row & ~newest, budget.tokens - 1)
            return kept.unsqueeze(1).expand_as(live) & live

        return _per_head(view, budget, phase, choose)


@dataclass(frozen=True)
class KeyNorm(Policy):
    """Knorm (Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache
    Compression"): per layer and KV head, keep the ``budget`` tokens whose keys have the smallest L2
    norm — low-norm keys draw high attention — with no attention weights needed at all."""

    name: ClassVar[str] = "knorm"
    budget: int | float | None = None

    def keep(self, view: CacheView, budget: Budget, phase: str) -> Keep:
        def choose(layer: int, live: torch.Tensor) -> torch.Tensor:
            norms = torch.linalg.vector_norm(view.keys(layer).float(), dim=-1)
            return _top(-norms, live, budget.tokens)

        return _per_head(view, budget, phase, choose)


POLICIES: dict[str, type[Policy]] = {p.name: p for p in
                                     (FullCache, SlidingWindow, StreamingLLM, H2O, SnapKV, PyramidKV, TOVA, KeyNorm)}
