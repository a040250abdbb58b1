"""KV-cache policies on tiny random models: exact where the maths is exact (a budget with room for
everything is the full cache; a sliding window is a banded full forward; StreamingLLM keeps sinks +
window at positions within the cache), the selections of H2O/SnapKV/TOVA/Knorm/PyramidKV on
hand-built patterns, the int8/int4 error bound, batching with a budget per row, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, InputError, LmlabError
from lmlab.generate.engine import Engine, Request
from lmlab.generate.loop import DecodeLoop
from lmlab.generate.settings import DecodingSettings
from lmlab.kvcache import (
    H2O,
    POLICIES,
    TOVA,
    Budget,
    CacheView,
    KeyNorm,
    KVCache,
    PyramidKV,
    SnapKV,
    cache_settings,
    enforce,
    prefill_setup,
)
from lmlab.models.config import TransformerConfig
from lmlab.models.positions import rope_angles
from lmlab.models.transformer import TransformerLM

OPTIONS = {"full": {}, "window": {}, "streaming": {"sinks": 2}, "h2o": {}, "snapkv": {"window": 3},
           "pyramidkv": {"window": 3}, "tova": {}, "knorm": {}}


def make(context_length: int = 256, preset: str = "llama", n_layers: int = 3, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    args = dict(vocab_size=40, d_model=32, n_layers=n_layers, n_heads=4, n_kv_heads=2, context_length=context_length)
    if preset != "llama":
        args.pop("n_kv_heads")
    lm = TransformerLM(TransformerConfig.from_preset(preset, **args)).eval()
    with torch.no_grad():  # sharp logits: greedy paths are not near-ties
        lm.head.weight.mul_(30)
    return lm


def prompts(*lengths: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 40, (n,), generator=g).tolist() for n in lengths]


def run(lm, requests, **settings):
    engine = Engine(lm, settings=DecodingSettings(**settings), decode_layout=False)
    return engine.generate([r if isinstance(r, Request) else Request(r) for r in requests])


def kv(name: str, budget=None, **options):
    return cache_settings(name, budget, **{**OPTIONS[name], **options})


# --- exactness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("strategy", [dict(greedy=True), dict(beam_size=3, n=2), dict(n=2, seed=3)])
def test_a_budget_with_room_for_everything_equals_the_full_cache(name, strategy):
    lm = make()
    batch = prompts(17, 9)
    full = run(lm, batch, max_new_tokens=12, **strategy)
    got = run(lm, batch, max_new_tokens=12, kv_cache=kv(name, None if name == "full" else 64), **strategy)
    assert [c.ids for c in got] == [c.ids for c in full]
    for a, b in zip(got, full, strict=True):
        assert max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)), default=0) < 1e-5


def masked_forward(lm: TransformerLM, ids: list[int], allowed: torch.Tensor) -> torch.Tensor:
    """Logits [T, V] of one forward pass over ``ids`` where query t sees the keys ``allowed[t]``: no cache."""
    cfg = lm.config
    x = lm.embed(torch.tensor([ids]))
    positions = torch.arange(len(ids)).unsqueeze(0)
    rope = tuple(a.unsqueeze(1) for a in rope_angles(positions, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    ctx = {"rope": rope, "allowed": allowed.view(1, 1, *allowed.shape), "bias": None, "causal": False}
    with torch.no_grad():
        for block in lm.blocks:
            x = block(x, ctx, None, True)
        return lm.logits(lm.final_norm(x))[0]


def banded(n_prompt: int, total: int, window: int) -> torch.Tensor:
    """Prompt queries see the whole prompt before them; later query p sees keys p − window … p."""
    q = torch.arange(total).view(-1, 1)
    k = torch.arange(total).view(1, -1)
    return (k <= q) & ((q < n_prompt) | (k >= q - window))


def test_sliding_window_equals_a_banded_full_forward():
    lm = make()
    prompt = prompts(14)[0]
    window, steps = 5, 10
    out = run(lm, [prompt], greedy=True, max_new_tokens=steps, kv_cache=kv("window", window))[0]
    ids = prompt + out.ids
    logits = masked_forward(lm, ids, banded(len(prompt), len(ids), window))
    ref = logits[len(prompt) - 1:-1].log_softmax(-1)
    assert ref.argmax(-1).tolist() == out.ids
    chosen = ref.gather(1, torch.tensor(out.ids).unsqueeze(1)).squeeze(1)
    assert (chosen - torch.tensor(out.logprobs)).abs().max() < 1e-5
    full = masked_forward(lm, ids, banded(len(ids), len(ids), window))[len(prompt) - 1:-1]
    assert (full.log_softmax(-1) - ref).abs().max() > 1e-3  # the band really changes the answer


def rotate(x: torch.Tensor, delta: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE by ``delta`` positions, written out pairwise (x_i, x_{i+D/2}) → rotation by delta·θ_i."""
    half = x.shape[-1] // 2
    freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    angle = delta.double().view(-1, 1) * freq
    a, b = x[..., :half].double(), x[..., half:].double()
    return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()], dim=-1).float()


def test_streaming_keeps_exactly_sinks_and_window_at_positions_within_the_cache():
    lm = make(context_length=32)
    prompt = prompts(20)[0]
    sinks, window = 2, 6
    settings = kv("streaming", None, sinks=sinks, window=window)
    _, full = lm.prefill([prompt])
    _, state = lm.prefill([prompt], setup=prefill_setup([settings]))
    enforce(state, [([0], settings, len(prompt), "prompt")])
    assert state.real_tokens().tolist() == [sinks + window] and state.next_position.tolist() == [sinks + window]
    kept = list(range(sinks)) + list(range(len(prompt) - window, len(prompt)))
    for layer in range(lm.config.n_layers):
        live = state.live(layer)[0, 0]
        assert torch.equal(state.values[layer][0, :, :state.length][:, live], full.values[layer][0, :, kept])
        moved = torch.tensor([new - old for new, old in enumerate(kept)])
        expected = rotate(full.keys[layer][0, :, kept], moved, lm.config.rope_theta)
        assert (state.layer_keys(layer)[0][:, live] - expected).abs().max() < 1e-5
    # decoding runs far past the model's 32-token context with every position below sinks + window
    out = run(lm, [prompt], greedy=True, max_new_tokens=60, kv_cache=settings)[0]
    assert len(out.ids) == 60 and out.stats.kv_cache_bytes > 0
    with pytest.raises(LmlabError, match="context"):
        run(lm, [prompt], greedy=True, max_new_tokens=60, kv_cache=kv("window", 8))


def test_streaming_decode_step_equals_attention_over_the_moved_keys():
    """The next token after an eviction attends sinks + window at positions 0 … budget-1: the same
    logits as a fresh cache built from the kept tokens' keys/values moved there."""
    lm = make()
    prompt = prompts(15)[0]
    settings = kv("streaming", 7, sinks=2)
    _, state = lm.prefill([prompt], setup=prefill_setup([settings]))
    enforce(state, [([0], settings, len(prompt), "prompt")])
    _, full = lm.prefill([prompt])
    kept = [0, 1] + list(range(len(prompt) - 5, len(prompt)))
    fresh = lm.initial_state(1, capacity=16)
    fresh.length = len(kept)
    moved = torch.tensor([new - old for new, old in enumerate(kept)])
    fresh.keys = [rotate(k[:, :, kept], moved, lm.config.rope_theta).contiguous() for k in full.keys]
    fresh.values = [v[:, :, kept].contiguous() for v in full.values]
    fresh.keys = [torch.cat([k, k.new_zeros(1, k.shape[1], 16 - len(kept), k.shape[3])], 2) for k in fresh.keys]
    fresh.values = [torch.cat([v, v.new_zeros(1, v.shape[1], 16 - len(kept), v.shape[3])], 2) for v in fresh.values]
    token = torch.tensor([[5]])
    a, _ = lm.next_scores(token, state)
    b, _ = lm.next_scores(token, fresh)
    assert (a - b).abs().max() < 1e-4


def test_lazy_eviction_only_masks_until_compacting_pays():
    lm = make()
    prompt = prompts(20)[0]
    keep = torch.ones(1, 20, dtype=torch.bool)
    keep[0, 3:9] = False
    _, eager = lm.prefill([prompt], reserve=4)
    _, lazy = lm.prefill([prompt], reserve=4)
    eager.evict(keep)
    lazy.evict(keep, slack=10)  # frees 6 < 10 slots: masked only
    assert eager.length == 14 and lazy.length == 20 and lazy.bytes_held() > eager.bytes_held()
    token = torch.tensor([[7]])
    a, _ = lm.next_scores(token, eager)
    b, lazy = lm.next_scores(token, lazy)
    assert (a - b).abs().max() < 1e-5
    lazy.evict(torch.ones(1, lazy.length, dtype=torch.bool), slack=6)  # now 6 ≥ 6: compacted
    assert lazy.length == 15


# --- what each policy selects, on hand-built patterns ------------------------------------------
def hand_cache(slots: int = 10, heads: int = 2, dim: int = 4) -> KVCache:
    cache = KVCache(1, 1, capacity=16)
    cache.keys = [torch.zeros(1, heads, 16, dim)]
    cache.values = [torch.zeros(1, heads, 16, dim)]
    cache.length = slots
    return cache


def kept(keep) -> list[list[int]]:
    layer = keep[0][0] if isinstance(keep, list) else keep
    return [row.nonzero().flatten().tolist() for row in layer]


def test_h2o_keeps_the_recent_tokens_and_the_heaviest_hitters():
    cache = hand_cache()
    sums = torch.ones(1, 2, 16)
    sums[0, 0, :10] = torch.tensor([5, 1, 1, 9, 1, 1, 1, 2, 1, 1.0])
    sums[0, 1, :10] = torch.tensor([1, 7, 1, 1, 8, 1, 3, 1, 1, 1.0])
    cache.slot_data["attention"] = [sums]
    keep = H2O(budget=5, recent=2).keep(CacheView(cache, [0]), Budget(5, 5.0), "step")
    assert kept(keep) == [[0, 3, 7, 8, 9], [1, 4, 6, 8, 9]]
    # normalised (kvpress's observed attention): slot 0's 5 is spread over 10 queries, slot 7's 2 over 3
    keep = H2O(budget=3, recent=0, normalize=True).keep(CacheView(cache, [0]), Budget(3, 3.0), "step")
    assert kept(keep)[0] == [3, 7, 9]


def test_snapkv_pools_the_window_attention_and_keeps_the_window():
    cache = hand_cache()
    window = torch.zeros(1, 4, 10)  # 4 query heads over 2 KV heads
    window[:, :, 2], window[:, :, 6] = 1.0, 0.4
    window[:, :, 8:] = 5.0  # the window's own columns never count
    cache.observed["window"] = [window]
    keep = SnapKV(budget=5, window=2, kernel=3).keep(CacheView(cache, [0]), Budget(5, 5.0), "prompt")
    assert kept(keep) == [[1, 2, 3, 8, 9], [1, 2, 3, 8, 9]]  # 1 and 3 only through pooling
    assert SnapKV(budget=5, window=2).keep(CacheView(cache, [0]), Budget(5, 5.0), "step") is not None
    assert not SnapKV(budget=5, window=2).acts("step")


def test_tova_drops_what_the_newest_query_attends_least_averaged_over_heads():
    cache = hand_cache()
    last = torch.zeros(1, 4, 10)
    last[0, 0, 0] = last[0, 1, 5] = 0.5
    last[0, 2, 3] = last[0, 3, 3] = 0.3
    last[0, 2, 7] = 0.2
    cache.observed["last"] = [last]
    keep = TOVA(budget=4).keep(CacheView(cache, [0]), Budget(4, 4.0), "step")
    assert kept(keep) == [[0, 3, 5, 9], [0, 3, 5, 9]]  # means .125, .15, .125 (+ the newest, 9)


def test_knorm_keeps_the_smallest_keys_per_head():
    cache = hand_cache()
    norms = torch.tensor([[3, 1, 4, 1.5, 9, 2, 6, 5, 0.5, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10.0]])
    cache.keys[0][0, :, :10, 0] = norms
    keep = KeyNorm(budget=3).keep(CacheView(cache, [0]), Budget(3, 3.0), "step")
    assert kept(keep) == [[1, 3, 8], [0, 1, 2]]


def test_pyramidkv_budgets_fall_linearly_and_keep_the_average():
    policy = PyramidKV(budget=0.8, window=32, beta=20)
    budgets = policy.layer_budgets(1000, 800.0, 30)  # KVCache-Factory's split: 968 at the bottom, 632 at the top
    assert budgets[0] == 968 and budgets[-1] == 632 and abs(sum(budgets) / 30 - 800) < 1
    assert all(a >= b for a, b in zip(budgets, budgets[1:], strict=False))
    assert policy.layer_budgets(1000, 200.0, 30) == [200] * 30  # too flat for a pyramid: SnapKV's budget


def test_pyramidkv_layers_hold_their_own_budgets_and_bytes_show_it():
    lm = make(n_layers=4)
    prompt = prompts(40)[0]
    _, snap = lm.prefill([prompt], setup=prefill_setup([kv("snapkv", 0.5)]))
    enforce(snap, [([0], kv("snapkv", 0.5), 40, "prompt")])
    pyramid = kv("pyramidkv", 0.5, beta=2)
    _, state = lm.prefill([prompt], setup=prefill_setup([pyramid]))
    enforce(state, [([0], pyramid, 40, "prompt")])
    held = [int(state.live(i).sum(-1).max()) for i in range(4)]
    assert held == pyramid.policy.layer_budgets(40, 20.0, 4) and held[0] > held[-1]
    assert state.offsets[0] == 0 and state.offsets[-1] == held[0] - held[-1]
    assert state.bytes_held() < snap.bytes_held() + 4 * 2 * 2 * 8 * 4 * (held[0] - 20)  # no padding to the widest
    a, _ = lm.next_scores(torch.tensor([[3]]), state)
    assert torch.isfinite(a).all()


# --- attention statistics ------------------------------------------------------------------------
def test_recorded_attention_adds_up_and_does_not_depend_on_chunking():
    lm = make()
    prompt = prompts(23)[0]
    settings = cache_settings("h2o", 64)
    snap = kv("snapkv", 16, window=6)
    _, whole = lm.prefill([prompt], setup=prefill_setup([settings, snap]))
    _, parts = lm.prefill([prompt[:9]], setup=prefill_setup([settings, snap]))
    _, parts = lm.next_scores(torch.tensor([prompt[9:20]]), parts)
    _, parts = lm.next_scores(torch.tensor([prompt[20:]]), parts)
    for layer in range(lm.config.n_layers):
        sums = whole.slot_data["attention"][layer][0, :, :23]
        assert torch.allclose(sums.sum(-1), torch.full((2,), 23.0 * 2))  # every query's weights sum to 1, ×2 heads
        assert torch.allclose(sums, parts.slot_data["attention"][layer][0, :, :23], atol=1e-5)
        window = whole.observed["window"][layer]
        assert torch.allclose(window.sum(-1), torch.ones(1, 4))
        assert torch.allclose(window, parts.observed["window"][layer], atol=1e-5)


def test_snapkv_gives_the_same_answer_when_the_prompt_comes_in_chunks():
    lm = make()
    prompt = prompts(30)[0]
    settings = DecodingSettings(greedy=True, max_new_tokens=8, kv_cache=kv("snapkv", 12, window=5))
    whole = run(lm, [Request(prompt, settings=settings)])[0]
    loop = DecodeLoop(lm, prefill_tokens=7)
    done = []
    loop.add(Request(prompt, settings=settings), lambda e: e.done and done.append(e))
    while loop.busy:
        loop.turn()
    chunked = done[0].completions[0]
    assert chunked.ids == whole.ids
    assert max(abs(a - b) for a, b in zip(chunked.logprobs, whole.logprobs, strict=True)) < 1e-4


# --- quantization ------------------------------------------------------------------------------
def ranges(x: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """Half a quantization step of ``x`` grouped along ``dim``, with float16's rounding of the stored range."""
    lo = x.amin(dim, keepdim=True)
    return ((x.amax(dim, keepdim=True) - lo + lo.abs() * 2 ** -10) / (2 ** bits - 1) * (1 + 2 ** -9)) / 2


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cache_is_within_half_a_step_and_eviction_never_requantizes(bits):
    torch.manual_seed(0)
    k, v = torch.randn(2, 2, 40, 8) * 3, torch.randn(2, 2, 40, 8)
    k[..., 3] *= 20  # an outlier channel: why KIVI quantizes keys per channel
    settings = cache_settings("full", quant=f"int{bits}", group=16)
    cache = KVCache(1, 2, capacity=48)
    prefill_setup([settings, settings])(cache)
    cache.begin(40, None, k.device)
    got_k, got_v = cache.append(0, k, v)
    cache.advance(40)
    assert torch.equal(got_k, k) and torch.equal(got_v, v)  # this pass attends with the exact values
    read_k, read_v = cache.quant.read(cache, 0, 40)
    key_step = torch.cat([ranges(k[:, :, a:a + 16], 2, bits).expand(-1, -1, 16, -1) for a in (0, 16)], dim=2)
    assert ((read_k[:, :, :32] - k[:, :, :32]).abs() <= key_step + 1e-5).all()  # per channel, 16 tokens
    assert torch.equal(read_k[:, :, 32:], k[:, :, 32:])  # the residual waits in full precision
    assert ((read_v[:, :, :32] - v[:, :, :32]).abs() <= ranges(v[:, :, :32], -1, bits) + 1e-5).all()
    assert (read_k[:, :, :32] - k[:, :, :32]).abs().max() > 0  # it is quantized
    cache.quant.flush(cache)
    before = cache.quant.read(cache, 0, 40)
    keep = torch.rand(2, 40) > 0.4
    cache.evict(keep)
    after = cache.quant.read(cache, 0, cache.length)
    for row in range(2):
        live = cache.live(0)[row, 0, :cache.length]
        assert torch.equal(after[0][row][:, live], before[0][row][:, keep[row]])
        assert torch.equal(after[1][row][:, live], before[1][row][:, keep[row]])


def test_int8_cache_holds_over_three_times_less_than_float32_and_decodes_close():
    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=40, d_model=128, n_layers=2, n_heads=2,
                                                     n_kv_heads=1, context_length=1024)).eval()
    prompt = prompts(600)[0]  # long enough that the full-precision residual (32 tokens) is a small part
    full = run(lm, [prompt], greedy=True, max_new_tokens=16)[0]
    int8 = run(lm, [prompt], greedy=True, max_new_tokens=16, kv_cache=cache_settings(quant="int8"))[0]
    assert full.stats.kv_cache_bytes > 3 * int8.stats.kv_cache_bytes
    assert max(abs(a - b) for a, b in zip(int8.logprobs[:8], full.logprobs[:8], strict=True)) < 0.05


# --- batching: a budget per row ------------------------------------------------------------------
def test_requests_with_different_policies_share_a_batch_exactly():
    lm = make()
    batch = prompts(18, 11, 25, 30, 16)
    settings = [DecodingSettings(n=2, seed=5, max_new_tokens=10, kv_cache=kv("h2o", 8)),
                DecodingSettings(greedy=True, max_new_tokens=10, kv_cache=kv("streaming", 6, sinks=2)),
                DecodingSettings(beam_size=2, max_new_tokens=10, kv_cache=kv("tova", 0.5)),
                DecodingSettings(beam_size=3, n=2, max_new_tokens=10, kv_cache=kv("pyramidkv", 0.6, beta=2)),
                # greedy: sampled rows repeat tokens, whose layer-0 key norms tie exactly (RoPE keeps norms),
                # and torch.topk breaks exact ties by layout, as kvpress's does
                DecodingSettings(greedy=True, max_new_tokens=10, kv_cache=kv("knorm", 9)),
                DecodingSettings(greedy=True, max_new_tokens=10)]
    requests = [Request(p, settings=s) for p, s in zip([*batch, batch[0]], settings, strict=True)]
    together = run(lm, requests)
    alone = [c for r in requests for c in run(lm, [r])]
    for a, b in zip(together, alone, strict=True):
        assert a.ids == b.ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


def test_quantized_requests_with_different_policies_share_a_batch():
    lm = make()
    batch = prompts(40, 23)
    settings = [DecodingSettings(greedy=True, max_new_tokens=8, kv_cache=kv("snapkv", 12, quant="int8", group=8)),
                DecodingSettings(greedy=True, max_new_tokens=8, kv_cache=kv("streaming", 10, quant="int8", group=8))]
    together = run(lm, [Request(p, settings=s) for p, s in zip(batch, settings, strict=True)])
    alone = [run(lm, [Request(p, settings=s)])[0] for p, s in zip(batch, settings, strict=True)]
    for a, b in zip(together, alone, strict=True):  # quantization groups start at other slots when padded
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 0.05


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (dict(policy="streaming", budget=10, sinks=4, window=8), "smaller than sinks \\+ window"),
    (dict(policy="snapkv", budget=16, window=32), "observation window"),
    (dict(policy="h2o", budget=8, recent=9), "recent window"),
    (dict(policy="window", budget=16, sinks=2), "does not take sinks"),
    (dict(policy="full", budget=16), "keeps every token"),
    (dict(policy="window"), "needs a budget"),
    (dict(policy="window", budget=0), "kv budget"),
    (dict(policy="window", budget=1.5), "kv budget"),
    (dict(policy="snapkv", budget=16, kernel=4), "odd"),
    (dict(policy="nope", budget=16), "kv policy"),
    (dict(policy="window", budget=16, group=8), "--kv-quant"),
])
def test_bad_cache_settings_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        cache_settings(**options)


def test_models_and_paths_that_cannot_serve_a_policy_say_so():
    prompt = prompts(12)[0]
    with pytest.raises(ConfigError, match="absolute positions"):
        run(make(preset="gpt2"), [prompt], greedy=True, max_new_tokens=2, kv_cache=kv("streaming", 8))
    run(make(preset="gpt2"), [prompt], greedy=True, max_new_tokens=2, kv_cache=kv("window", 8))  # keeps positions
    from lmlab.ngram import UnigramLM
    from lmlab.tokenizers import WordLevelTokenizer

    tok = WordLevelTokenizer("word").train(["a b c a b"])
    unigram = UnigramLM.fit_corpus(["a b c a b"], tok)
    with pytest.raises(ConfigError, match="KV cache"):
        run(unigram, [[1, 2]], greedy=True, max_new_tokens=2, kv_cache=kv("window", 8))
    with pytest.raises(InputError, match="smaller than the observation window"):
        run(make(), [prompt], greedy=True, max_new_tokens=2, kv_cache=kv("snapkv", 0.1))
    loop = DecodeLoop(make(), step=lambda tokens, state: (None, state))  # stands for a compiled step
    with pytest.raises(ConfigError, match="compile"):
        loop.add(Request(prompt, settings=DecodingSettings(kv_cache=kv("h2o", 8))), lambda e: None)
    mixed = [Request(prompt, settings=DecodingSettings(max_new_tokens=2, kv_cache=cache_settings(quant="int8"))),
             Request(prompt, settings=DecodingSettings(max_new_tokens=2))]
    with pytest.raises(ConfigError, match="different KV quantization"):
        run(make(), mixed)
    prefixed = make()
    prefixed.blocks[0].attn.past_prefix = lambda batch: (torch.zeros(batch, 2, 3, 8), torch.zeros(batch, 2, 3, 8))
    with pytest.raises(ConfigError, match="prefix tuning"):
        run(prefixed, [prompt], max_new_tokens=2, kv_cache=kv("tova", 8))
    run(prefixed, [prompt], max_new_tokens=2, kv_cache=kv("knorm", 8))  # no attention weights needed
    odd = TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=40, d_model=36, n_layers=1,
                                                      n_heads=4)).eval()
    with pytest.raises(ConfigError, match="odd"):
        run(odd, [prompt], max_new_tokens=2, kv_cache=cache_settings(quant="int4"))


def test_settings_report_the_cache():
    settings = DecodingSettings(kv_cache=kv("streaming", 64, sinks=4))
    assert settings.to_dict()["kv_cache"] == {"policy": "streaming", "budget": 64, "sinks": 4}
    assert math.isclose(cache_settings("h2o", 0.25).budget(40).allowance, 10.0)
