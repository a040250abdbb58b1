"""Interpretability (lmlab.interp) on tiny random models, checked against TransformerLens.

The peer is TransformerLens's ``HookedTransformer`` (3.x: the version sae-lens works with), built
GPT-2-shaped and LLaMA-shaped with a random lmlab model's weights copied in; the cached activations, logit lens, a
patching experiment and a head ablation must agree within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from lmlab.core.errors import ConfigError, ModelError
from lmlab.interp.cache import run_with_cache
from lmlab.interp.lens import logit_lens
from lmlab.interp.patching import (
    ablation_hooks,
    activation_patching,
    head_patching,
    logit_difference,
    path_patching,
    run_metric,
)
from lmlab.interp.probe import fit_probe
from lmlab.interp.sae import SAEConfig, collect_activations, top_examples, train_sae
from lmlab.interp.steering import steering_hooks, steering_vector
from lmlab.models.config import TransformerConfig
from lmlab.models.hooks import SITES, hook_names, hooked
from lmlab.models.transformer import TransformerLM

V, D, L, H, T = 97, 32, 3, 4, 7

def tiny(**kw) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=V, d_model=D, n_layers=L, n_heads=H,
                                                       context_length=32, **kw)).eval()


def hooked_transformer_with_weights_of(lm: TransformerLM):
    """TransformerLens's ``HookedTransformer`` of the same shape as ``lm`` (gpt2 or llama preset),
    holding ``lm``'s weights."""
    tl = pytest.importorskip("transformer_lens")
    c = lm.config
    gpt2 = c.norm == "layernorm"
    shape = dict(act_fn="gelu", normalization_type="LN") if gpt2 else dict(
        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=c.head_dim,
        rotary_base=int(c.rope_theta), rotary_adjacent_pairs=False, gated_mlp=True, final_rms=True,
        n_key_value_heads=c.n_kv_heads)
    peer = tl.HookedTransformer(tl.HookedTransformerConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_ctx=c.context_length, d_head=c.head_dim, n_heads=c.n_heads,
        d_mlp=c.d_ff, d_vocab=c.vocab_size, eps=c.norm_eps, **shape)).eval()
    ours = lm.state_dict()
    kv, dh, d = c.n_kv_heads, c.head_dim, c.d_model
    theirs = {"embed.W_E": ours["embed.weight"], "unembed.W_U": ours["head.weight"].t(), "ln_final.w": ours["final_norm.weight"]}
    if gpt2:
        theirs.update({"pos_embed.W_pos": ours["positions.weight"], "ln_final.b": ours["final_norm.bias"]})
    for i in range(c.n_layers):
        b = f"blocks.{i}."
        for norm, tl_norm in (("attn_norm", "ln1"), ("mlp_norm", "ln2")):
            theirs[b + tl_norm + ".w"] = ours[b + norm + ".weight"]
            if gpt2:
                theirs[b + tl_norm + ".b"] = ours[b + norm + ".bias"]
        for x, heads in (("q", c.n_heads), ("k", kv), ("v", kv)):
            name = f"attn.W_{x.upper()}" if heads == c.n_heads or gpt2 else f"attn._W_{x.upper()}"
            theirs[b + name] = ours[b + f"attn.{x}_proj.weight"].view(heads, dh, d).transpose(1, 2)
            if gpt2:
                theirs[b + f"attn.b_{x.upper()}"] = ours[b + f"attn.{x}_proj.bias"].view(heads, dh)
        theirs[b + "attn.W_O"] = ours[b + "attn.o_proj.weight"].t().reshape(c.n_heads, dh, d)
        theirs[b + "mlp.W_in"], theirs[b + "mlp.W_out"] = ours[b + "mlp.up.weight"].t(), ours[b + "mlp.down.weight"].t()
        if gpt2:
            theirs[b + "attn.b_O"], theirs[b + "mlp.b_in"] = ours[b + "attn.o_proj.bias"], ours[b + "mlp.up.bias"]
            theirs[b + "mlp.b_out"] = ours[b + "mlp.down.bias"]
        else:
            theirs[b + "mlp.W_gate"] = ours[b + "mlp.gate.weight"].t()
    state = peer.state_dict()
    for key, value in state.items():  # what lmlab has no counterpart of: biases the peer keeps at zero
        if key not in theirs and (".b_" in key or "._b_" in key or key == "unembed.b_U"):
            assert float(value.abs().max()) == 0.0, key
    missing = set(state) - set(theirs)
    assert all(k.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos")) or ".b_" in k or "._b_" in k
               or k == "unembed.b_U" for k in missing), missing
    peer.load_state_dict({k: v.contiguous() for k, v in theirs.items()}, strict=False)
    return peer


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request):
    """(TransformerLens HookedTransformer, lmlab model): a GPT-2-shaped or a LLaMA-shaped (RoPE,
    RMSNorm, SwiGLU, grouped-query attention) random lmlab model and the peer holding its weights."""
    lm = tiny(tie_embeddings=False) if request.param == "gpt2" else tiny_llama()
    return hooked_transformer_with_weights_of(lm), lm


def tiny_llama() -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.from_preset("llama", vocab_size=V, d_model=D, n_layers=L, n_heads=H,
                                                       n_kv_heads=2, d_ff=64, context_length=32)).eval()


def prompts(seed: int = 1, rows: int = 2) -> torch.Tensor:
    return torch.randint(0, V, (rows, T), generator=torch.Generator().manual_seed(seed))


def test_cached_activations_match_transformer_lens(pair):
    bridge, lm = pair
    ids = prompts()
    tl_logits, tl_cache = bridge.run_with_cache(ids)
    logits, cache = run_with_cache(lm, ids)
    assert (logits - tl_logits).abs().max() < 1e-4
    theirs = {"resid_pre": "hook_resid_pre", "attn_pattern": "attn.hook_pattern", "attn_z": "attn.hook_z",
              "attn_out": "hook_attn_out", "resid_mid": "hook_resid_mid", "mlp_out": "hook_mlp_out",
              "resid_post": "hook_resid_post"}
    assert set(theirs) == set(SITES) and set(cache) == set(hook_names(lm))
    for layer in range(L):
        for site, tl_site in theirs.items():
            ours, peer = cache[f"blocks.{layer}.{site}"], tl_cache[f"blocks.{layer}.{tl_site}"]
            assert ours.shape == peer.shape, site
            assert (ours - peer).abs().max() < 1e-4, (layer, site)


def test_logit_lens_matches_transformer_lens(pair):
    bridge, lm = pair
    ids = prompts(2)
    _, tl_cache = bridge.run_with_cache(ids)
    streams = [tl_cache["blocks.0.hook_resid_pre"]] + [tl_cache[f"blocks.{i}.hook_resid_post"] for i in range(L)]
    peer = torch.stack([bridge.unembed(bridge.ln_final(s)) for s in streams]).detach()  # TL's own final norm and head
    ours = logit_lens(lm, ids)
    assert ours.shape == (L + 1, 2, T, V)
    assert (ours - peer).abs().max() < 1e-4
    assert (ours[-1] - lm(ids)[0]).abs().max() < 1e-5  # the last layer's lens is the model's output


def test_activation_patching_matches_transformer_lens(pair):
    bridge, lm = pair
    clean, corrupted = prompts(3, 1), prompts(3, 1).clone()
    corrupted[0, 2] = (corrupted[0, 2] + 1) % V  # one token differs
    metric = logit_difference(5, 7)
    ours = activation_patching(lm, clean, corrupted, metric, site="resid_pre")
    _, tl_clean = bridge.run_with_cache(clean)
    peer = torch.empty(L, T)
    for layer in range(L):
        name = f"blocks.{layer}.hook_resid_pre"
        for pos in range(T):
            def patch(x, hook, pos=pos, name=name):
                x = x.clone()
                x[:, pos] = tl_clean[name][:, pos]
                return x
            logits = bridge.run_with_hooks(corrupted, fwd_hooks=[(name, patch)])
            peer[layer, pos] = logits[0, -1, 5] - logits[0, -1, 7]
    assert (ours - peer).abs().max() < 1e-4
    # the patch at the differing position of layer 0 restores the clean run; untouched positions do nothing
    assert abs(float(ours[0, 2]) - run_metric(lm, clean, metric)) < 1e-4
    assert abs(float(ours[0, 0]) - run_metric(lm, corrupted, metric)) < 1e-4


def test_head_ablation_matches_transformer_lens(pair):
    bridge, lm = pair
    ids = prompts(4, 1)
    ours = run_metric(lm, ids, logit_difference(1, 2), ablation_hooks(lm, [(1, 2), (2, 0)]))

    def zero(head):
        def hook(z, hook):
            z = z.clone()
            z[:, :, head] = 0
            return z
        return hook
    logits = bridge.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", zero(2)), ("blocks.2.attn.hook_z", zero(0))])
    assert abs(ours - float((logits[0, -1, 1] - logits[0, -1, 2]).detach())) < 1e-4


def test_path_patching_properties():
    lm = tiny()
    clean, corrupted = prompts(5, 1), prompts(6, 1)
    metric = logit_difference(3, 4)
    base = run_metric(lm, clean, metric)
    # the direct path of a last-layer head is the whole effect of patching that head
    direct = path_patching(lm, clean, corrupted, metric, sender=(L - 1, 1))
    whole = head_patching(lm, corrupted, clean, metric)[L - 1, 1]  # corrupted head into the clean run
    assert abs(direct - float(whole)) < 1e-5 and abs(direct - base) > 1e-6
    # a path to a receiver layer carries only what reaches that layer's input
    via = path_patching(lm, clean, corrupted, metric, sender=(0, 1), receiver=1)
    assert abs(via - base) > 1e-6
    with pytest.raises(ConfigError, match="receiver layer"):
        path_patching(lm, clean, corrupted, metric, sender=(1, 0), receiver=1)


def test_hooks_cost_nothing_when_off_and_leave_no_trace():
    lm = tiny()
    ids = prompts()
    before = lm(ids)[0]
    with hooked(lm, {"blocks.1.attn_pattern": lambda p: None, "blocks.0.resid_post": lambda x: x * 0}):
        changed = lm(ids)[0]
    assert not torch.allclose(before, changed)
    assert torch.equal(lm(ids)[0], before)
    assert all(not b.pattern_hooks and not b._forward_hooks and not b._forward_pre_hooks for b in lm.blocks)


def test_unknown_hook_name_lists_the_names():
    lm = tiny()
    with pytest.raises(ModelError) as err:
        with hooked(lm, {"blocks.9.resid_pre": lambda x: None}):
            pass
    assert "layer 0..2" in str(err.value) and "resid_pre, attn_pattern, attn_z" in str(err.value)
    with pytest.raises(ModelError, match="read-only"):
        run_with_cache(lm, prompts(), ["blocks.0.resid_mid"])  # reading is fine
        with hooked(lm, {"blocks.0.resid_mid": lambda x: x}):
            lm(prompts())


def test_pattern_with_gqa_is_causal_and_normalised():
    lm = tiny_llama()
    _, cache = run_with_cache(lm, prompts(), ["blocks.1.attn_pattern"])
    pattern = cache["blocks.1.attn_pattern"]
    assert pattern.shape == (2, 4, T, T)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, T))
    assert float(pattern.triu(1).abs().max()) == 0.0


def test_steering_vector_moves_the_stream_by_its_scale():
    lm = tiny()
    pos, neg = [[1, 2, 3], [4, 5]], [[6, 7, 8, 9]]
    vector = steering_vector(lm, pos, neg, layer=1)
    _, base = run_with_cache(lm, prompts(), ["blocks.1.resid_pre", "blocks.2.resid_pre"])
    with hooked(lm, steering_hooks(vector, 1, scale=2.0)):
        _, steered = run_with_cache(lm, prompts(), ["blocks.1.resid_pre", "blocks.2.resid_pre"])
    # hooks run in the order they went on: the cache sees the stream after the addition
    assert torch.allclose(steered["blocks.1.resid_pre"], base["blocks.1.resid_pre"] + 2 * vector, atol=1e-6)
    assert not torch.allclose(steered["blocks.2.resid_pre"], base["blocks.2.resid_pre"])
    _, c = run_with_cache(lm, torch.tensor([[1, 2, 3]]), ["blocks.1.resid_pre"])
    _, d = run_with_cache(lm, torch.tensor([[4, 5]]), ["blocks.1.resid_pre"])
    _, e = run_with_cache(lm, torch.tensor([[6, 7, 8, 9]]), ["blocks.1.resid_pre"])
    expected = (c["blocks.1.resid_pre"][0].mean(0) + d["blocks.1.resid_pre"][0].mean(0)) / 2 \
        - e["blocks.1.resid_pre"][0].mean(0)
    assert torch.allclose(vector, expected, atol=1e-6)


def test_probe_reads_a_planted_direction():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=gen)
    labels = ["yes" if v > 0 else "no" for v in x[:, 3].tolist()]
    result = fit_probe(x, labels, test_fraction=0.25, C=10.0)
    assert result.n_test == 50 and result.test_accuracy > 0.9
    noise = fit_probe(x, ["a" if i % 2 else "b" for i in range(200)])
    assert noise.test_accuracy < 0.75


@pytest.mark.parametrize("sparsity", ["topk", "l1"])
def test_sae_recovers_a_sparse_dictionary(tmp_path, sparsity):
    gen = torch.Generator().manual_seed(0)
    truth = torch.nn.functional.normalize(torch.randn(32, 16, generator=gen), dim=1)
    codes = torch.rand(2000, 32, generator=gen) * (torch.rand(2000, 32, generator=gen) < 0.08)
    acts = codes @ truth
    config = SAEConfig(16, 64, sparsity=sparsity, k=4, l1=1.0, resample_every=100)
    sae, metrics = train_sae(acts, config, tmp_path, steps=400, batch_size=128, lr=3e-3)
    assert metrics["fve"] > 0.8, metrics  # measured: 0.91 (top-k), 0.88 (L1)
    assert metrics["l0"] <= (4 if sparsity == "topk" else 12), metrics  # measured: 3.9, 9.7 of 64
    assert (tmp_path / "metrics.jsonl").exists()
    where = torch.stack([torch.arange(2000), torch.zeros(2000, dtype=torch.long)], 1)
    top = top_examples(sae, acts, where, [[i] for i in range(2000)], feature=0, k=3)
    assert [t["activation"] for t in top] == sorted((t["activation"] for t in top), reverse=True)


def test_sae_refuses_an_undercomplete_dictionary():
    with pytest.raises(ConfigError, match="allow-undercomplete"):
        SAEConfig(32, 16)
    assert SAEConfig(32, 16, k=8, allow_undercomplete=True).n_features == 16


def test_sae_resamples_dead_features(tmp_path):
    lm = tiny()
    acts, where = collect_activations(lm, prompts(7, 8).tolist(), "blocks.1.resid_post")
    assert acts.shape == (8 * (T - 1), D) and where[0].tolist() == [0, 1]
    config = SAEConfig(D, 256, sparsity="topk", k=2, resample_every=20)
    sae, metrics = train_sae(acts, config, tmp_path, steps=40, batch_size=16)
    assert sae.resampled > 0
    assert set(metrics) == {"fve", "l0", "dead_fraction", "mse"} and metrics["l0"] <= 2
