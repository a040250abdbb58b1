"""A tiny LLaMA-shaped model for the PEFT tests, with an attention that honours ``past_prefix``.

It is also the reference for the prefix interface documented in ``lmlab/peft/prefix.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class TinyAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, dim, bias=True)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.past_prefix = None

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = h.shape
        q = self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        allowed = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
        if mask is not None:
            allowed = allowed & mask.bool()[:, None, None, :]
        if self.past_prefix is not None:  # the prefix interface: (B, H_kv, P, D) keys, values
            pk, pv = self.past_prefix(b)
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            seen = torch.ones(*allowed.shape[:-1], pk.shape[2], dtype=torch.bool)
            allowed = torch.cat([seen, allowed], dim=-1)
        groups = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyMLP(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, inner, bias=False)
        self.up_proj = nn.Linear(dim, inner, bias=False)
        self.down_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class TinyBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, inner: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.self_attn = TinyAttention(dim, n_heads, n_kv_heads)
        self.post_norm = nn.LayerNorm(dim)
        self.mlp = TinyMLP(dim, inner)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = h + self.self_attn(self.input_norm(h), mask)
        return h + self.mlp(self.post_norm(h))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 32, n_layers: int = 2, n_heads: int = 4,
                 n_kv_heads: int = 2, inner: int = 48) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(TinyBlock(dim, n_heads, n_kv_heads, inner)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed_tokens(ids)
        for layer in self.layers:
            h = layer(h, mask)
        return self.lm_head(self.norm(h))


def tiny_lm(seed: int = 0, **kw) -> TinyLM:
    """A TinyLM with random weights (LayerNorm affine randomised too, so nothing is trivial)."""
    torch.manual_seed(seed)
    model = TinyLM(**kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def batch(seed: int = 1, b: int = 3, n: int = 9, vocab: int = 50) -> torch.Tensor:
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def tiny_llama():
    """A tiny random `transformers` LlamaForCausalLM (2 layers; no download) for parity tests."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def forward_backward_both(ours: nn.Module, theirs: nn.Module) -> None:
    """Same trainable-parameter count and identical logits on one batch, then backward both."""
    from lmlab.peft import parameter_report

    assert parameter_report(ours)["trainable_params"] == theirs.get_nb_trainable_parameters()[0]
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(5))
    out_ours, out_theirs = ours(input_ids=ids, labels=ids), theirs(input_ids=ids, labels=ids)
    torch.testing.assert_close(out_ours.logits, out_theirs.logits, rtol=0, atol=1e-6)
    out_ours.loss.backward()
    out_theirs.loss.backward()


def test_tiny_lm_is_causal():
    model = tiny_lm()
    ids = batch()
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50
    with torch.no_grad():
        assert torch.equal(model(ids)[:, :-1], model(changed)[:, :-1])
