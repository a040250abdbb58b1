"""Transformer-XL's relative positional encoding (lmlab.models.xl_positions): the shifted computation
against the paper's four-term formula written out per pair, against transformers' XLNet (which keeps
Transformer-XL's relative attention core), and in the model with segment memory and a KV cache."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.core.errors import ConfigError, ModelError
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.models.xl_positions import XLRelativePositions, relative_shift


def test_relative_shift_by_hand():
    # 2 queries over 3 keys; column m holds distance 2 - m; query i sits at key slot 1 + i
    x = torch.tensor([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]])
    shifted = relative_shift(x)
    # query 0 (slot 1): key 0 is distance 1 → column 1 (11), key 1 distance 0 → column 2 (12)
    # query 1 (slot 2): keys 0, 1, 2 are distances 2, 1, 0 → columns 0, 1, 2
    assert shifted[0, :2].tolist() == [11.0, 12.0]
    assert shifted[1].tolist() == [20.0, 21.0, 22.0]


def _module(heads=2, d=4, d_model=6, seed=0):
    torch.manual_seed(seed)
    xl = XLRelativePositions(d_model, heads, d, scale=0.37).double()
    with torch.no_grad():
        for p in xl.parameters():
            p.normal_()
    return xl


def _naive_scores(xl, q, k, q_positions, k_positions):
    """A_ij = q·k + q·W_R R + u·k + v·W_R R (scaled), one pair at a time, with R written out."""
    b, h, t, d = q.shape
    s = k.shape[2]
    w = xl.r_proj.weight.detach().view(h, d, xl.d_model)
    u, v = xl.content_bias.detach(), xl.position_bias.detach()
    half = xl.d_model // 2
    out = torch.full((b, h, t, s), float("nan"), dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                for j in range(s):
                    delta = int(q_positions[bi, i] - k_positions[bi, j])
                    if delta < 0:
                        continue
                    r = torch.tensor([math.sin(delta / 10000 ** (2 * m / xl.d_model)) for m in range(half)]
                                     + [math.cos(delta / 10000 ** (2 * m / xl.d_model)) for m in range(half)],
                                     dtype=torch.float64)
                    wr = w[hi] @ r
                    qi, kj = q[bi, hi, i], k[bi, hi, j]
                    out[bi, hi, i, j] = (qi @ kj + qi @ wr + u[hi] @ kj + v[hi] @ wr) * xl.scale
    return out


@pytest.mark.parametrize("t,memory", [(5, 0), (4, 3), (1, 6)])
def test_shifted_scores_equal_the_per_pair_formula(t, memory):
    xl = _module()
    g = torch.Generator().manual_seed(1)
    s = memory + t
    q = torch.randn(2, 2, t, 4, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, s, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        qu, bias = xl(q, s)
    got = qu @ k.transpose(-1, -2) * xl.scale + bias
    q_pos = torch.arange(memory, s).expand(2, t)
    k_pos = torch.arange(s).expand(2, s)
    expected = _naive_scores(xl, q, k, q_pos, k_pos)
    seen = ~expected.isnan()
    assert seen.sum() == 2 * 2 * (t * memory + t * (t + 1) // 2)
    assert (got[seen] - expected[seen]).abs().max() < 1e-6
    # the same table indexed by each pair's distance (the path for padded rows) agrees
    with torch.no_grad():
        _, by_distance = xl(q, s, q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2))
    assert (by_distance[seen] - bias[seen]).abs().max() < 1e-12


def test_distance_indexing_with_rows_of_their_own_positions():
    xl = _module(seed=2)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, 5, 4, generator=g, dtype=torch.float64)
    k_pos = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])  # row 1 left-padded by 2
    q_pos = k_pos[:, 2:]
    with torch.no_grad():
        qu, bias = xl(q, 5, q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2))
    got = qu @ k.transpose(-1, -2) * xl.scale + bias
    expected = _naive_scores(xl, q, k, q_pos, k_pos)
    seen = ~expected.isnan()
    assert (got[seen] - expected[seen]).abs().max() < 1e-6


def test_attention_equals_xlnet_relative_attention_core():
    from transformers import XLNetConfig, XLNetModel
    from transformers.models.xlnet.modeling_xlnet import XLNetRelativeAttention

    torch.manual_seed(0)
    cfg = XLNetConfig(vocab_size=10, d_model=16, n_layer=1, n_head=2, d_head=8, d_inner=32, attn_type="uni")
    peer = XLNetRelativeAttention(cfg).eval()
    with torch.no_grad():
        for p in (peer.r, peer.r_w_bias, peer.r_r_bias):
            p.normal_()
    qlen, mlen, bsz = 5, 3, 2
    klen = qlen + mlen
    pos_emb = XLNetModel(cfg).relative_positional_encoding(qlen, klen, bsz=bsz)  # [klen + 1, B, d_model]
    q_head, k_head, v_head = (torch.randn(n, bsz, 2, 8) for n in (qlen, klen, klen))
    k_head_r = torch.einsum("ibh,hnd->ibnd", pos_emb, peer.r)
    ahead = (torch.arange(klen).view(1, -1) > mlen + torch.arange(qlen).view(-1, 1)).float()
    with torch.no_grad():
        expected = peer.rel_attn_core(q_head, k_head, v_head, k_head_r,
                                      attn_mask=ahead.view(qlen, klen, 1, 1).expand(-1, -1, bsz, 2))
        ours = XLRelativePositions(16, 2, 8, scale=peer.scale)
        ours.r_proj.weight.copy_(peer.r.reshape(16, 16).t())
        ours.content_bias.copy_(peer.r_w_bias)
        ours.position_bias.copy_(peer.r_r_bias)
        q, k, v = (x.permute(1, 2, 0, 3) for x in (q_head, k_head, v_head))
        qu, bias = ours(q, klen)
        out = F.scaled_dot_product_attention(qu, k, v, attn_mask=bias.masked_fill(ahead.bool(), float("-inf")),
                                             scale=peer.scale)
    assert (out.permute(2, 0, 1, 3) - expected).abs().max() < 1e-5


TINY = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, positions="transformer_xl")


def _model(**switches):
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, **switches})).eval()
    with torch.no_grad():  # u and v start at zero: give them values so the test sees them
        for block in model.blocks:
            block.xl.content_bias.normal_(std=0.5)
            block.xl.position_bias.normal_(std=0.5)
    return model


@pytest.mark.parametrize("switches", [dict(), dict(n_kv_heads=2, score="dot")])
def test_segment_memory_covering_everything_equals_one_full_pass(switches):
    model = _model(context_length=8, memory_length=64, **switches)
    assert sum(p.numel() for p in model.parameters()) == model.config.num_parameters()
    ids = torch.randint(0, 40, (2, 24))
    with torch.no_grad():
        whole, _ = model(ids, model.initial_state(2))  # a cache: one full pass
        state, parts = None, []
        for start in range(0, 24, 8):
            logits, state = model(ids[:, start:start + 8], state)
            parts.append(logits)
        # the memory is used: reading the last segment without it differs
        alone, _ = model(ids[:, 16:], None)
    assert torch.allclose(whole, torch.cat(parts, 1), atol=1e-5)
    assert not torch.allclose(alone, parts[-1], atol=1e-3)


def test_decoding_with_a_cache_and_padding_equal_the_whole_pass():
    from lmlab.generate.engine import Engine, Request

    model = _model(context_length=64)
    ids = torch.randint(0, 40, (2, 19))
    with torch.no_grad():
        whole, _ = model(ids)
        state, parts = model.initial_state(2), []
        for a, b in [(0, 7), (7, 8), (8, 19)]:
            logits, state = model(ids[:, a:b], state)
            parts.append(logits)
    assert torch.allclose(whole, torch.cat(parts, 1), atol=1e-5)
    prompts = [[3, 5, 7, 9, 11, 2, 4, 6, 8], [1, 2, 3]]
    engine = Engine(model, None, greedy=True)
    together = engine.generate([Request(p, max_new_tokens=6) for p in prompts])
    alone = [engine.generate([Request(p, max_new_tokens=6)])[0] for p in prompts]
    assert [c.ids for c in together] == [c.ids for c in alone]
    for c, a in zip(together, alone, strict=True):
        assert torch.allclose(torch.tensor(c.logprobs), torch.tensor(a.logprobs), atol=1e-4)


def test_xl_positions_train_and_generalise_past_the_segment():
    model = _model(context_length=8, memory_length=8)
    model.train()
    ids = torch.randint(0, 40, (2, 9))
    logits, memory = model(ids[:, :8])
    F.cross_entropy(logits.reshape(-1, 40), ids[:, 1:].reshape(-1)).backward()
    xl = model.blocks[1].xl
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in xl.parameters())
    with torch.no_grad():  # a second segment reads distances up to 15, beyond the 8 of one segment
        logits, _ = model(ids[:, :8], memory)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("switches,message", [
    (dict(causal=False), "causal full attention"),
    (dict(attention="sliding_window"), "causal full attention"),
    (dict(score="additive"), "dot-product"),
    (dict(d_model=27, n_heads=3), "even d_model"),
])
def test_bad_xl_settings_are_refused(switches, message):
    with pytest.raises(ConfigError, match=message):
        TransformerConfig.from_preset("llama", **{**TINY, **switches})


def test_a_prefix_lm_is_refused():
    model = _model()
    with pytest.raises(ModelError, match="causal"):
        model(torch.randint(0, 40, (1, 5)), prefix_length=2)
