"""The transformer family: KV cache == full forward, causality, padding, RoPE, parameter counts,
fused == explicit attention, saving, clear errors, and parity with ``transformers``."""

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, ModelError
from lmlab.models import load_model, save_model_dir
from lmlab.models.config import PRESETS, TransformerConfig
from lmlab.models.positions import alibi_slopes, apply_rope, rope_angles, sinusoidal
from lmlab.models.transformer import TransformerLM

V = 37


def make(preset="gpt2", seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, context_length=24)
    args.update(kw)
    return TransformerLM(TransformerConfig.from_preset(preset, **args)).eval()


VARIANTS = [dict(preset=p) for p in PRESETS] + [
    dict(preset="llama", n_kv_heads=2), dict(preset="llama", n_kv_heads=1),
    dict(preset="gpt2", positions="alibi"), dict(preset="vaswani", score="dot"),
    dict(preset="llama", score="bilinear"), dict(preset="gpt2", score="additive"),
    dict(preset="llama", rope_scaling=4.0), dict(preset="gpt2", positions="none", activation="silu"),
]


def ids_for(batch=3, length=16, seed=1):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{x}" for x in v.values()))
def test_kv_cache_incremental_equals_full_forward(variant):
    m = make(**variant)
    ids = ids_for()
    full = torch.log_softmax(m(ids)[0], -1)
    logprobs, state = m.next_logprobs(ids[:, :5], m.initial_state(3))
    steps = [logprobs]
    for t in range(5, ids.shape[1]):
        logprobs, state = m.next_logprobs(ids[:, t:t + 1], state)
        steps.append(logprobs)
    inc = torch.stack(steps, 1)
    assert (inc - full[:, 4:]).abs().max() < 1e-5
    # score() agrees with the full forward too
    assert (m.score(ids) - full[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{x}" for x in v.values()))
def test_causality_and_fused_equals_explicit(variant):
    m = make(**variant)
    ids = ids_for()
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 5) % V
    a, b = m(ids)[0], m(changed)[0]
    assert torch.equal(a[:, :9], b[:, :9]) or (a[:, :9] - b[:, :9]).abs().max() < 1e-6
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-3  # the future did change later outputs
    m.fused = False
    assert (m(ids)[0] - a).abs().max() < 1e-5


@pytest.mark.parametrize("preset", ["gpt2", "llama", "vaswani"])
def test_padding_never_changes_unpadded_outputs(preset):
    m = make(preset, positions="alibi") if preset == "vaswani" else make(preset)
    ids = ids_for()
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[2, 12:] = 0  # right padding
    padded = m(ids, attention_mask=mask)[0]
    alone0 = m(ids[:1, 4:])[0]
    alone2 = m(ids[2:, :12])[0]
    assert (padded[0, 4:] - alone0[0]).abs().max() < 1e-5
    assert (padded[2, :12] - alone2[0]).abs().max() < 1e-5
    assert (padded[1] - m(ids[1:2])[0][0]).abs().max() < 1e-5
    # continuing a padded batch from its cache matches the unpadded row's own continuation
    _, state = m(ids[:, :10], attention_mask=mask[:, :10])
    step, _ = m(ids[:, 10:11], state)
    assert (step[0, 0] - alone0[0, 6]).abs().max() < 1e-5


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j, scale=1.0):
        cq, sq = rope_angles(torch.tensor([[i]]), 16, scale=scale)
        ck, sk = rope_angles(torch.tensor([[j]]), 16, scale=scale)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(8, 3), abs=1e-3)
    assert score(8, 4, scale=2.0) == pytest.approx(score(4, 2), abs=1e-4)  # linear interpolation
    # rotation keeps norms
    c, s = rope_angles(torch.tensor([[5]]), 16)
    assert float(apply_rope(q, c, s).norm()) == pytest.approx(float(q.norm()), rel=1e-6)


def test_sinusoidal_and_alibi_tables_by_hand():
    table = sinusoidal(torch.tensor([0, 1]), 4)
    assert table[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert table[1].tolist() == pytest.approx([0.841471, 0.540302, 0.0099998, 0.99995], abs=1e-5)
    assert alibi_slopes(8).tolist() == pytest.approx([2 ** -(i + 1) for i in range(8)])
    assert alibi_slopes(4).tolist() == pytest.approx([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8])


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{x}" for x in v.values()))
def test_parameter_count_matches_formula(variant):
    m = make(**variant)
    assert sum(p.numel() for p in m.parameters()) == m.config.num_parameters()


def test_gpt2_small_formula_gives_the_published_size():
    cfg = TransformerConfig.from_preset("gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12,
                                        context_length=1024)
    assert cfg.num_parameters() == 124_439_808  # GPT-2 small, tied head
    llama = TransformerConfig.from_preset("llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                                          n_kv_heads=3, d_ff=1536, context_length=8192, tie_embeddings=True)
    assert llama.num_parameters() == 134_515_008  # SmolLM2-135M


def test_save_and_load_round_trip(tmp_path):
    m = make("llama", n_kv_heads=2)
    m.set_special_ids({"bos_id": 1, "eos_id": 2, "pad_id": 3, "unk_id": 0})
    save_model_dir(tmp_path / "m", *m.to_state())
    loaded, tok = load_model(tmp_path / "m")
    ids = ids_for()
    assert torch.equal(loaded.score(ids), m.score(ids))
    assert (loaded.bos_id, loaded.eos_id, loaded.context_length) == (1, 2, 24)
    tied = make("gpt2")
    save_model_dir(tmp_path / "t", *tied.to_state())
    again, _ = load_model(tmp_path / "t")
    assert again.head.weight is again.embed.weight
    assert torch.equal(again.score(ids), tied.score(ids))


def test_bad_input_gets_one_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="does not divide d_model"):
        TransformerConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="n_kv_heads"):
        TransformerConfig(d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="unknown transformer setting"):
        TransformerConfig.from_dict({"d_modle": 3})
    m = make("gpt2", context_length=8)
    with pytest.raises(ModelError, match="longer than the 8 positions"):
        m(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ModelError, match="outside the model's vocabulary"):
        m.score(torch.tensor([[1, V]]))
    other = make("llama", d_model=16)
    config, tensors = m.to_state()
    _, other_tensors = other.to_state()
    save_model_dir(tmp_path / "bad", config, other_tensors)
    with pytest.raises(ModelError, match="do not match config.json|has shape"):
        load_model(tmp_path / "bad")


def _copy_gpt2(ours, hf):
    sd = {"transformer.wte.weight": ours.embed.weight, "transformer.wpe.weight": ours.positions.weight,
          "transformer.ln_f.weight": ours.final_norm.weight, "transformer.ln_f.bias": ours.final_norm.bias}
    for i, b in enumerate(ours.blocks):
        p = f"transformer.h.{i}."
        a = b.attn
        sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = b.attn_norm.weight, b.attn_norm.bias
        sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = b.mlp_norm.weight, b.mlp_norm.bias
        sd[p + "attn.c_attn.weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).T
        sd[p + "attn.c_attn.bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"] = a.o_proj.weight.T, a.o_proj.bias
        sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = b.mlp.up.weight.T, b.mlp.up.bias
        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = b.mlp.down.weight.T, b.mlp.down.bias
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)


def test_gpt2_preset_matches_transformers_gpt2():
    transformers = pytest.importorskip("transformers")
    ours = make("gpt2")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=V, n_positions=24, n_embd=32, n_layer=2, n_head=4, activation_function="gelu",
        resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    _copy_gpt2(ours, hf)
    ids = ids_for()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max() < 1e-5


def test_llama_preset_matches_transformers_llama():
    transformers = pytest.importorskip("transformers")
    ours = make("llama", n_kv_heads=2, d_ff=48)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=24, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False)).eval()
    sd = {"model.embed_tokens.weight": ours.embed.weight, "model.norm.weight": ours.final_norm.weight,
          "lm_head.weight": ours.head.weight}
    for i, b in enumerate(ours.blocks):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = b.attn_norm.weight
        sd[p + "post_attention_layernorm.weight"] = b.mlp_norm.weight
        for name in ("q", "k", "v", "o"):
            sd[p + f"self_attn.{name}_proj.weight"] = getattr(b.attn, f"{name}_proj").weight
        for ours_name, hf_name in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            sd[p + f"mlp.{hf_name}.weight"] = getattr(b.mlp, ours_name).weight
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    ids = ids_for()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)[0]).abs().max() < 1e-5
