"""Long-sequence attention variants (lmlab.models.long_attention and its modules): each against a
dense reference computed here or a peer (transformers' Nyströmformer and YaRN/NTK frequencies)."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.core.errors import ConfigError, ModelError
from lmlab.models.adaptive_span import AdaptiveSpan, span_mask
from lmlab.models.config import TransformerConfig
from lmlab.models.linformer import linformer_attention
from lmlab.models.lsh_attention import SELF_SCORE, hash_buckets, lsh_attention
from lmlab.models.nystrom import iterative_pinv, nystrom_attention
from lmlab.models.rope_scaling import rope_frequencies
from lmlab.models.sparse_attention import (
    strided_attention,
    strided_pattern,
    window_attention,
    window_pattern,
)
from lmlab.models.transformer import TransformerLM


def _qkv(t=21, h=3, d=8, seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, t, d, generator=g) for _ in range(3))


def _dense(q, k, v, allowed, scale, bias=None):
    scores = q @ k.transpose(-1, -2) * scale + (0 if bias is None else bias)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


@pytest.mark.parametrize("t,w", [(21, 4), (16, 8), (5, 8)])
def test_window_attention_equals_the_masked_dense_attention(t, w):
    q, k, v = _qkv(t)
    slots = torch.arange(t)
    expected = _dense(q, k, v, window_pattern(slots, slots, w), 1 / math.sqrt(8))
    assert torch.allclose(window_attention(q, k, v, w, 1 / math.sqrt(8)), expected, atol=1e-5)
    # the pattern itself, by hand: query 5 with window 3 sees keys 3, 4, 5
    assert window_pattern(torch.tensor([5]), torch.arange(8), 3).nonzero()[:, 1].tolist() == [3, 4, 5]


@pytest.mark.parametrize("t,block", [(21, 4), (16, 4), (3, 4)])
def test_strided_attention_equals_the_masked_dense_attention(t, block):
    q, k, v = _qkv(t)
    slots = torch.arange(t)
    expected = _dense(q, k, v, strided_pattern(slots, slots, block), 0.5)
    assert torch.allclose(strided_attention(q, k, v, block, 0.5), expected, atol=1e-5)
    # query 9 with blocks of 4: its own block (8, 9) and the ends of the earlier blocks (3, 7)
    assert strided_pattern(torch.tensor([9]), torch.arange(12), 4).nonzero()[:, 1].tolist() == [3, 7, 8, 9]


def test_adaptive_span_mask_by_hand_and_its_attention():
    distance = torch.tensor([0.0, 2.0, 5.0, 7.0, 9.0])
    # span 4, ramp 2: m(x) = clamp((2 + 4 - x) / 2, 0, 1)
    assert span_mask(distance, torch.tensor([4.0]), 2)[0].tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]
    span = AdaptiveSpan(3, max_span=6, ramp=2)
    with torch.no_grad():
        span.fraction.copy_(torch.tensor([0.0, 0.5, 2.0]))  # the last clamps to 1: span 6
    assert span.spans().tolist() == [0.0, 3.0, 6.0]
    q, k, v = _qkv(17)
    slots = torch.arange(17)
    dist = slots.unsqueeze(1) - slots.unsqueeze(0)
    weights = span_mask(dist.clamp(min=0), span.spans(), 2) * (dist >= 0)  # m·exp(s) renormalised, by hand
    e = torch.exp(q @ k.transpose(-1, -2) * 0.3) * weights
    expected = (e / e.sum(-1, keepdim=True)) @ v
    got = window_attention(q, k, v, span.window, 0.3, distance_bias=span.bias)
    assert torch.allclose(got, expected, atol=1e-5)
    got.sum().backward()  # the span gets a finite gradient through the ramp (none beyond it)
    assert torch.isfinite(span.fraction.grad).all() and span.fraction.grad[1] != 0
    # a span covering the whole sequence is ordinary causal attention
    with torch.no_grad():
        span.fraction.fill_(1.0)
    q, k, v = (x[:, :, :7] for x in (q, k, v))  # distances up to 6: all inside the span
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    assert torch.allclose(window_attention(q, k, v, span.window, 0.3, distance_bias=span.bias), full, atol=1e-5)


def test_adaptive_span_penalty_and_clamp_reach_the_trainer():
    from lmlab.train.trainer import TrainingHooks

    model = TransformerLM(TransformerConfig.from_preset("llama", **TINY, attention="adaptive_span", attention_window=10,
                                                        adaptive_span_loss=0.5))
    hooks = TrainingHooks(model)
    spans = [block.long.span for block in model.blocks]
    assert hooks.losses == spans
    with torch.no_grad():
        spans[0].fraction.copy_(torch.tensor([0.2, 0.4, 1.5, -0.3]))
    # λ·S·mean(z) = 0.5 · 10 · 0.45 (layer 1's spans are 0)
    assert float(hooks.add_auxiliary_losses(torch.zeros(())).detach()) == pytest.approx(2.25)
    hooks.after_optimizer_step()
    assert spans[0].fraction.tolist() == pytest.approx([0.2, 0.4, 1.0, 0.0])
    assert hooks.stats()["mean_span"]["blocks.0.long.span"] == pytest.approx(4.0)


def _lsh_reference(q, k, v, rotations, chunk, scale, dedupe=True):
    """Dense LSH attention: per round, the keys of the same bucket, earlier or equal, whose sorted
    chunk is the query's or the one before (self only as a last resort), each score less the log of
    the rounds in which the pair shares a bucket (``dedupe``); rounds by logsumexp."""
    t = q.shape[2]
    buckets = hash_buckets(k, rotations)
    shared = (buckets.unsqueeze(-1) == buckets.unsqueeze(-2)).sum(0)  # [B, H, T, T]
    outs, norms = [], []
    for bucket in buckets:
        rank = (bucket * t + torch.arange(t)).argsort(-1).argsort(-1)  # where each position lands
        chunk_of = rank // chunk
        qc, kc = chunk_of.unsqueeze(-1), chunk_of.unsqueeze(-2)
        pos = torch.arange(t)
        allowed = ((kc == qc) | (kc == qc - 1)) & (bucket.unsqueeze(-1) == bucket.unsqueeze(-2))
        allowed &= pos.view(1, t) <= pos.view(t, 1)
        scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
        scores = scores.masked_fill(torch.eye(t, dtype=torch.bool), SELF_SCORE)
        if dedupe and len(buckets) > 1:
            scores = scores - shared.clamp(min=1).log()
        outs.append(torch.softmax(scores, -1) @ v)
        norms.append(torch.logsumexp(scores, -1))
    w = torch.softmax(torch.stack(norms), 0).unsqueeze(-1)
    return (torch.stack(outs) * w).sum(0)


@pytest.mark.parametrize("rounds,chunk,dedupe", [(1, 4, True), (2, 5, True), (3, 32, True), (3, 4, True),
                                                 (3, 4, False)])
def test_lsh_attention_equals_its_dense_definition(rounds, chunk, dedupe):
    q, _, v = _qkv(19, h=2)
    k = F.normalize(q, dim=-1)  # shared queries and keys
    rotations = torch.randn(rounds, 2, 8, 2, generator=torch.Generator().manual_seed(1))
    got = lsh_attention(q, k, v, rotations, chunk, 0.35, dedupe=dedupe)
    assert torch.allclose(got, _lsh_reference(q, k, v, rotations, chunk, 0.35, dedupe), atol=1e-5)


def test_lsh_duplicate_correction_makes_rounds_one_attention_over_their_union():
    """Round 0 hashes every key into one bucket (so the union of the rounds is full causal attention);
    the other rounds hash at random, so some pairs meet in more rounds than others. Corrected, the
    rounds combine to full attention exactly; uncorrected, the keys met twice weigh double."""
    g = torch.Generator().manual_seed(4)
    t, h, d = 23, 2, 8
    q = torch.randn(1, h, t, d, generator=g, dtype=torch.float64)
    q[..., 0] = q[..., 0].abs() + 0.1  # a positive first coordinate: bucket 0 under round 0's rotation
    k = F.normalize(q, dim=-1)
    v = torch.randn(1, h, t, d, generator=g, dtype=torch.float64)
    rotations = torch.randn(3, h, d, 4, generator=g)  # 8 buckets
    rotations[0] = 0.0
    rotations[0, :, 0, 0] = 1.0  # xR = (x_1, 0, 0, 0): argmax of [xR; −xR] is bucket 0 for every key
    buckets = hash_buckets(k, rotations)
    assert bool((buckets[0] == 0).all()) and buckets[1].unique().numel() > 2
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2) * 0.35).masked_fill(~causal, float("-inf"))
    full = torch.softmax(scores.masked_fill(torch.eye(t, dtype=torch.bool), SELF_SCORE), -1) @ v
    corrected = lsh_attention(q, k, v, rotations, t, 0.35)  # one chunk: no pair is cut off by chunking
    uncorrected = lsh_attention(q, k, v, rotations, t, 0.35, dedupe=False)
    assert (corrected - full).abs().max() < 1e-6
    assert (uncorrected - full).abs().max() > 1e-2
    # every round hashing everything into one bucket: both are full attention
    same = rotations[:1].expand(3, -1, -1, -1)
    assert (lsh_attention(q, k, v, same, t, 0.35) - full).abs().max() < 1e-6
    assert (lsh_attention(q, k, v, same, t, 0.35, dedupe=False) - full).abs().max() < 1e-6


def test_lsh_buckets_are_the_argmax_of_the_rotations_by_hand():
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]]])
    rotations = torch.eye(2).view(1, 1, 2, 2)  # xR = x: buckets by the largest of x1, x2, -x1, -x2
    assert hash_buckets(x, rotations)[0, 0, 0].tolist() == [0, 1, 2, 3]


def test_linformer_with_identity_projections_is_full_attention():
    q, k, v = _qkv(12)
    eye = torch.eye(12)
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.4)
    assert torch.allclose(linformer_attention(q, k, v, eye, eye, 0.4), expected, atol=1e-5)
    with pytest.raises(ModelError, match="at most 8 positions"):
        linformer_attention(q, k, v, eye[:, :8], eye[:, :8], 0.4)


def test_nystrom_pinv_and_exact_with_every_token_a_landmark():
    noise = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(3))
    a = torch.softmax(3 * torch.eye(6) + 0.5 * noise, -1)  # well conditioned (the iteration runs in float32)
    assert torch.allclose(iterative_pinv(a, 20), torch.linalg.pinv(a), atol=1e-4)
    assert not torch.allclose(iterative_pinv(a, 1), torch.linalg.pinv(a), atol=1e-2)  # it does iterate
    q, k, v = _qkv(8)
    q, k = 3 * torch.eye(8) + 0.3 * q, 3 * torch.eye(8) + 0.3 * k  # a well-conditioned softmax(QKᵀ)
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.5)
    assert torch.allclose(nystrom_attention(q, k, v, 8, 0.5, iterations=20), expected, atol=1e-4)
    assert not torch.allclose(nystrom_attention(q, k, v, 4, 0.5), expected, atol=1e-2)  # fewer landmarks approximate


def test_nystrom_matches_transformers_nystromformer():
    from transformers import NystromformerConfig
    from transformers.models.nystromformer.modeling_nystromformer import NystromformerSelfAttention

    torch.manual_seed(0)
    cfg = NystromformerConfig(hidden_size=16, num_attention_heads=1, num_landmarks=4, segment_means_seq_len=16,
                              conv_kernel_size=3)
    peer = NystromformerSelfAttention(cfg).eval()
    peer.conv_kernel_size = None  # no depthwise convolution skip (an addition of the peer's, not of the method)
    x = torch.randn(1, 16, 16)
    with torch.no_grad():
        expected = peer(x)[0]
        q, k, v = (lin(x).view(1, 16, 1, 16).transpose(1, 2) for lin in (peer.query, peer.key, peer.value))
        got = nystrom_attention(q, k, v, 4, 1 / math.sqrt(16)).transpose(1, 2).reshape(1, 16, 16)
    assert torch.allclose(got, expected, atol=1e-5)


def test_yarn_frequencies_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for factor, original in [(4.0, 256), (8.0, 2048), (2.0, 64)]:
        cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=int(original * factor),
                          rope_parameters={"rope_type": "yarn", "factor": factor, "rope_theta": 10000.0,
                                           "original_max_position_embeddings": original})
        inv_freq, attention = ROPE_INIT_FUNCTIONS["yarn"](cfg, "cpu")
        ours, magnitude = rope_frequencies(32, 10000.0, "yarn", factor, original)
        assert torch.allclose(ours, inv_freq.float(), rtol=1e-6)
        assert magnitude == pytest.approx(attention)


def test_ntk_scaling_matches_transformers_dynamic_ntk_where_they_coincide():
    """HF's dynamic NTK at length L raises θ by (f·L/n − (f−1))^(d/(d−2)); with f = 2 and
    L = n·(α+1)/2 that is α^(d/(d−2)): our fixed NTK-aware scaling with factor α."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=100,
                      rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    inv_freq, _ = ROPE_INIT_FUNCTIONS["dynamic"](cfg, "cpu", seq_len=250)  # α = 4
    ours, magnitude = rope_frequencies(32, 10000.0, "ntk", 4.0)
    assert torch.allclose(ours, inv_freq.float(), rtol=1e-5) and magnitude == 1.0
    # the fastest frequency is kept, the slowest interpolated by the factor (nearly)
    plain, _ = rope_frequencies(32, 10000.0)
    assert ours[0] == plain[0] and ours[-1] / plain[-1] == pytest.approx(1 / 4.0 ** (30 / 32 * 32 / 30), rel=0.1)


TINY = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, context_length=64)


def test_extend_context_in_place_equals_the_extended_config():
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **TINY)).eval()
    built = TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, "context_length": 256}, rope_scaling=4.0,
                                                        rope_scaling_type="yarn", rope_original_context=64)).eval()
    built.load_state_dict(model.state_dict())
    ids = torch.randint(0, 40, (1, 150))
    model.extend_context(4, "yarn")
    assert model.context_length == 256 and model.config.rope_original_context == 64
    with torch.no_grad():
        assert torch.equal(model(ids)[0], built(ids)[0])
    with pytest.raises(ModelError, match="already extended"):
        model.extend_context(2)
    with pytest.raises(ConfigError, match="factor"):
        TransformerLM(TransformerConfig.from_preset("llama", **TINY)).extend_context(1.0)
    with pytest.raises(ModelError, match="learned positions"):
        TransformerLM(TransformerConfig.from_preset("gpt2", **TINY)).extend_context(2)


@pytest.mark.parametrize("switches", [
    dict(attention="sliding_window", attention_window=6), dict(attention="strided", attention_window=4),
    dict(attention="adaptive_span", attention_window=6, adaptive_span_ramp=3),
    dict(attention="sliding_window", attention_window=5, positions="alibi", n_kv_heads=2),
    dict(rope_scaling=4.0, rope_scaling_type="yarn", rope_original_context=16),
    dict(rope_scaling=4.0, rope_scaling_type="ntk"),
])
def test_decoding_with_a_cache_equals_the_whole_sequence_pass(switches):
    """The whole-sequence path (blocked, no [T, T] scores) and the cached, masked path agree."""
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **TINY, **switches)).eval()
    assert sum(p.numel() for p in model.parameters()) == model.config.num_parameters()
    ids = torch.randint(0, 40, (2, 23))
    with torch.no_grad():
        whole, _ = model(ids)
        state = model.initial_state(2)
        parts = []
        for a, b in [(0, 9), (9, 10), (10, 11), (11, 23)]:
            logits, state = model(ids[:, a:b], state)
            parts.append(logits)
    assert torch.allclose(whole, torch.cat(parts, 1), atol=1e-5)


@pytest.mark.parametrize("switches", [dict(attention="strided", attention_window=4),
                                      dict(attention="sliding_window", attention_window=5),
                                      dict(attention="adaptive_span", attention_window=5, adaptive_span_ramp=2)])
def test_a_left_padded_row_computes_what_it_computes_alone(switches):
    """Patterns count in each row's positions, so batching with padding changes nothing."""
    from lmlab.generate.engine import Engine, Request

    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **TINY, **switches)).eval()
    prompts = [[3, 5, 7, 9, 11, 2, 4, 6, 8, 10, 12], [1, 2, 3, 4]]  # 7 pad slots: not a whole block
    engine = Engine(model, None, greedy=True)
    together = engine.generate([Request(p, max_new_tokens=9) for p in prompts])
    alone = [engine.generate([Request(p, max_new_tokens=9)])[0] for p in prompts]
    assert [c.ids for c in together] == [c.ids for c in alone]
    for c, a in zip(together, alone, strict=True):
        assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(a.logprobs), atol=1e-4)


@pytest.mark.parametrize("switches", [dict(attention="linformer", linformer_k=8), dict(attention="nystrom")])
def test_encoder_variants_run_and_count_their_parameters(switches):
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("bert", **TINY, **switches))
    assert sum(p.numel() for p in model.parameters()) == model.config.num_parameters()
    logits, _ = model(torch.randint(0, 40, (2, 20)))
    logits.float().pow(2).mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "segments" not in n)
    with pytest.raises(ModelError, match="unpadded rows"):
        model(torch.randint(0, 40, (2, 6)), attention_mask=torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]]))


def test_lsh_model_trains_and_decodes():
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **TINY, attention="lsh", attention_window=4,
                                                        lsh_rounds=2))
    ids = torch.randint(0, 40, (2, 17))
    logits, _ = model(ids)
    F.cross_entropy(logits[:, :-1].reshape(-1, 40), ids[:, 1:].reshape(-1)).backward()
    assert model.blocks[0].attn.q_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        state = model.initial_state(2)
        _, state = model(ids[:, :10], state)
        step, _ = model(ids[:, 10:11], state)
    assert torch.isfinite(step).all()


@pytest.mark.parametrize("switches", [dict(), dict(positions="alibi"), dict(compressed_memory=64, compression_rate=1)])
def test_segment_memory_covering_everything_equals_one_full_pass(switches):
    torch.manual_seed(0)
    memory = 8 if switches.get("compressed_memory") else 64
    model = TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, "context_length": 8},
                                                        memory_length=memory, **switches)).eval()
    ids = torch.randint(0, 40, (2, 24))
    with torch.no_grad():
        whole, _ = model(ids, model.initial_state(2))  # a cache: one full pass
        state, parts = None, []
        for start in range(0, 24, 8):
            logits, state = model(ids[:, start:start + 8], state)
            parts.append(logits)
    assert torch.allclose(whole, torch.cat(parts, 1), atol=1e-5)
    assert isinstance(state, tuple) and state[0].shape[2] + state[1].shape[2] == 24


def test_compressive_memory_holds_mean_pooled_evicted_inputs():
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, "context_length": 6}, memory_length=4,
                                                        compressed_memory=3, compression_rate=2)).eval()
    ids = torch.randint(0, 40, (1, 6))
    with torch.no_grad():
        _, memory = model(ids)  # 6 inputs: the last 4 stay, the first 2 are pooled into 1 slot
        first_inputs = model.embed(ids)  # layer 0's input
    inputs, compressed = memory
    assert inputs.shape == (2, 1, 4, 32) and compressed.shape == (2, 1, 1, 32)
    assert torch.allclose(inputs[0, 0], first_inputs[0, 2:])
    assert torch.allclose(compressed[0, 0, 0], first_inputs[0, :2].mean(0))
    with torch.no_grad():
        _, memory = model(ids, memory)  # 4 more evicted → 2 slots, 3 in all
    assert memory[1].shape[2] == 3


def test_segment_memory_trains_with_carried_state():
    from lmlab.train.objectives import CausalLM

    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, "context_length": 8}, memory_length=8))
    objective = CausalLM(carry_state=True)
    ids = torch.randint(0, 40, (2, 17))
    for start in (0, 8):
        loss, n = objective(model, {"input": ids[:, start:start + 8], "target": ids[:, start + 1:start + 9]})
        loss.backward()
    assert n == 16 and objective.state[0].shape == (2, 2, 8, 32) and not objective.state[0].requires_grad


@pytest.mark.parametrize("switches,message", [
    (dict(attention="linformer"), "cannot be causal"),
    (dict(attention="nystrom"), "cannot be causal"),
    (dict(attention="sliding_window", causal=False), "causal decoders"),
    (dict(attention="lsh", lsh_buckets=3), "odd"),
    (dict(attention="lsh", n_kv_heads=2), "shares queries and keys"),
    (dict(attention="strided", score="additive"), "dot-product scores"),
    (dict(attention="blocky"), "attention"),
    (dict(memory_length=8, positions="learned"), "relative positions"),
    (dict(compressed_memory=4), "needs memory_length"),
    (dict(rope_scaling=0.5), "does not extend"),
    (dict(rope_scaling=float("nan"), rope_scaling_type="yarn"), "finite"),
    (dict(rope_scaling=1.0, rope_scaling_type="yarn"), "above 1"),
    (dict(rope_scaling=2.0, rope_scaling_type="longrope"), "rope_scaling_type"),
    (dict(attention_window=0, attention="sliding_window"), "attention_window"),
])
def test_bad_long_attention_settings_are_refused(switches, message):
    with pytest.raises(ConfigError, match=message):
        TransformerConfig.from_preset("llama", **TINY, **switches)


def test_yarn_llama_matches_transformers_both_ways(tmp_path):
    """A YaRN-extended LLaMA saved by transformers loads with the same logits (past the original context)."""
    import transformers

    from lmlab.models import load_model

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                                    "original_max_position_embeddings": 16})
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    lm, _ = load_model(tmp_path)
    assert (lm.config.rope_scaling_type, lm.config.rope_scaling, lm.config.rope_original_context) == ("yarn", 4.0, 16)
    ids = torch.randint(0, 40, (2, 50))
    with torch.no_grad():
        assert (lm(ids)[0] - hf(ids).logits).abs().max() < 1e-4
    from lmlab.models.hf_import import export_hf_dir

    export_hf_dir(lm, tmp_path / "again")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert (again(ids).logits - hf(ids).logits).abs().max() < 1e-5
    with pytest.raises(ModelError, match="no transformers"):
        export_hf_dir(TransformerLM(TransformerConfig.from_preset("llama", **TINY, attention="strided")), tmp_path / "x")


def test_activation_checkpointing_with_segment_memory_is_refused():
    """The recomputed blocks would attend without the memory: refused, not silently memoryless."""
    model = TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, "context_length": 8}, memory_length=8))
    model.activation_checkpointing = True
    with pytest.raises(ConfigError, match="segment memory"):
        model(torch.randint(0, 40, (1, 8)))
