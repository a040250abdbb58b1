"""T5's bucketed relative position bias: buckets equal ``transformers``' ``_relative_position_bucket``,
bias values equal a ``T5Model``'s with the table copied, a whole ``T5Model`` with copied weights
gives the same decoder states, and KV-cached decoding (padding included) equals the full forward."""

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.models.config import TransformerConfig
from lmlab.models.positions import RelativePositionBias, relative_position_bucket
from lmlab.models.seq2seq import EncoderDecoder, hf_t5_names
from lmlab.models.transformer import TransformerLM


def test_buckets_by_hand():
    rel = torch.tensor([-300, -20, -9, -8, -7, -1, 0, 1, 7, 8, 20, 300])
    # 16 buckets per direction: 0-7 exact, then log-spaced (8 + log(d/8)/log(128/8) * 8) up to bucket 15
    both = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    assert both.tolist() == [15, 10, 8, 8, 7, 1, 0, 17, 23, 24, 26, 31]
    causal = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    # one direction, 32 buckets: 0-15 exact, 20 → 16 + log(20/16)/log(128/16) * 16 = 17.7 → 17; ahead → 0
    assert causal.tolist() == [31, 17, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (10, 16)])
def test_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-400, 401).view(1, -1)
    theirs = t5.T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                                      max_distance=max_distance)
    ours = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=num_buckets,
                                    max_distance=max_distance)
    assert torch.equal(ours, theirs)


def tiny_t5(**kw):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.T5Config(vocab_size=37, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True, **kw)
    torch.manual_seed(0)
    return transformers.T5Model(cfg).eval()


def ours_like(hf) -> EncoderDecoder:
    c = hf.config
    model = EncoderDecoder(TransformerConfig.from_preset(
        "t5", vocab_size=c.vocab_size, d_model=c.d_model, n_layers=c.num_layers, n_heads=c.num_heads, d_ff=c.d_ff,
        relative_buckets=c.relative_attention_num_buckets, relative_max_distance=c.relative_attention_max_distance,
        score="dot", context_length=64)).eval()
    state = hf.state_dict()
    mine = model.state_dict()
    names = hf_t5_names(c.num_layers)
    assert set(names) | {"decoder.embed.weight", "decoder.head.weight"} == set(mine)
    model.load_state_dict({ours: state[theirs] for ours, theirs in names.items()}, strict=False)
    return model


def test_bias_values_equal_a_t5_model_with_the_table_copied():
    hf = tiny_t5()
    for stack, bidirectional in (("encoder", True), ("decoder", False)):
        attn = getattr(hf, stack).block[0].layer[0].SelfAttention
        ours = RelativePositionBias(4, bidirectional=bidirectional, num_buckets=8, max_distance=20)
        ours.weight.data.copy_(attn.relative_attention_bias.weight)
        theirs = attn.compute_bias(13, 13)
        got = ours(torch.arange(13).unsqueeze(0), torch.arange(13).unsqueeze(0))
        assert torch.allclose(got, theirs, atol=0)


def test_t5_model_with_copied_weights_gives_the_same_states():
    hf = tiny_t5()
    ours = ours_like(hf)
    source = torch.randint(0, 37, (2, 11))
    target = torch.randint(0, 37, (2, 6))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 8:] = 0
    out = hf(input_ids=source, attention_mask=mask, decoder_input_ids=target)
    memory = ours.encode(source, mask)
    assert torch.allclose(memory[mask.bool()], out.encoder_last_hidden_state[mask.bool()], atol=1e-5)
    state = ours.start(source, mask)
    hidden, _ = ours.decoder.hidden_states(target, state.cache, memory=(state.cross_keys, state.cross_values,
                                                                       state.source_mask))
    assert torch.allclose(hidden, out.last_hidden_state, atol=1e-5)


def test_t5_preset_uses_the_relative_bias_and_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("t5", vocab_size=29, d_model=32, n_layers=2, n_heads=4, context_length=16,
                                        relative_buckets=8, relative_max_distance=12)
    assert cfg.positions == "relative_bias"
    m = EncoderDecoder(cfg).eval()
    assert m.encoder.relative_bias.bidirectional and not m.decoder.relative_bias.bidirectional
    assert sum(p.numel() for p in m.encoder.parameters()) == cfg.num_parameters()
    source, target = torch.randint(0, 29, (2, 9)), torch.randint(0, 29, (2, 14))
    full, _ = m(target, source=source)
    state, steps = m.start(source), []
    for t in range(target.shape[1]):  # past the exact buckets into the log-spaced ones
        logits, state = m(target[:, t:t + 1], state)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_decoder_only_relative_bias_left_padding_and_cache():
    torch.manual_seed(1)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=31, d_model=32, n_layers=2, n_heads=4,
                                                     positions="relative_bias", relative_buckets=8,
                                                     relative_max_distance=10)).eval()
    ids = torch.randint(0, 31, (1, 12))
    full, _ = lm(ids)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 12)], 1).long()
    assert torch.allclose(lm(padded, attention_mask=mask)[0][:, 3:], full, atol=1e-5)
    first, state = lm(ids[:, :5])
    outs = []
    for t in range(5, 12):
        logits, state = lm(ids[:, t:t + 1], state)
        outs.append(logits)
    assert torch.allclose(torch.cat([first, *outs], 1), full, atol=1e-5)
