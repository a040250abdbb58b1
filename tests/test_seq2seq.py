"""The encoder–decoder: incremental decoding with both caches equals the full forward pass,
source padding changes nothing, cross-attention is used, decoding strategies work unchanged,
saving round-trips, and seq2seq training learns to copy."""

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ModelError
from lmlab.models import load_model, save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.seq2seq import EncoderDecoder

V = 23


def make(preset="t5", seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, context_length=24)
    args.update(kw)
    return EncoderDecoder(TransformerConfig.from_preset(preset, **args)).eval()


@pytest.mark.parametrize("preset", ["t5", "bart"])
def test_incremental_decoding_with_both_caches_equals_full_forward(preset):
    m = make(preset)
    source, target = torch.randint(0, V, (2, 9)), torch.randint(0, V, (2, 7))
    full, _ = m(target, source=source)
    state = m.start(source)
    cross = [k.data_ptr() for k in state.cross_keys]
    steps = []
    for t in range(target.shape[1]):
        logits, state = m(target[:, t:t + 1], state)
        steps.append(logits)
    assert [k.data_ptr() for k in state.cross_keys] == cross  # computed once, reused
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    chunked, state = m(target[:, :3], m.start(source))
    rest, _ = m(target[:, 3:], state)
    assert torch.allclose(torch.cat([chunked, rest], 1), full, atol=1e-5)


def test_source_padding_and_cross_attention():
    m = make("bart")
    source, target = torch.randint(1, V, (1, 6)), torch.randint(0, V, (1, 5))
    padded = torch.cat([source, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    alone, _ = m(target, source=source)
    assert torch.allclose(m(target, source=padded, source_mask=mask)[0], alone, atol=1e-5)
    other = source.clone()
    other[0, 2] = (other[0, 2] + 1) % V
    assert not torch.allclose(m(target, source=other)[0], alone)  # the decoder reads the source
    changed = target.clone()
    changed[0, 4] = (changed[0, 4] + 1) % V
    assert torch.allclose(m(changed, source=source)[0][:, :4], alone[:, :4], atol=1e-6)  # and is causal


def test_lm_protocol_and_decoding_strategies_with_a_bound_source(tmp_path):
    from lmlab.generate.beam import beam_search
    from lmlab.generate.sampling import ancestral_sample

    m = make("t5")
    with pytest.raises(ModelError):
        m.initial_state(1)
    source = torch.randint(0, V, (7,))
    m.bind(source)
    scores = m.score(torch.tensor([[1, 5, 6, 7]]))
    full, _ = m(torch.tensor([[1, 5, 6]]), source=source.unsqueeze(0))
    expected = torch.log_softmax(full, -1)[0, torch.arange(3), torch.tensor([5, 6, 7])]
    assert torch.allclose(scores[0], expected, atol=1e-5)
    greedy, ids = [], torch.tensor([[1]])
    for _ in range(5):  # greedy decoding by hand with full forwards
        nxt = int(m(ids, source=source.unsqueeze(0))[0][0, -1].argmax())
        greedy.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    assert beam_search(m, [1], beam_size=1, max_new_tokens=5)[0].ids == greedy
    best = beam_search(m, [1], beam_size=3, max_new_tokens=5)[0]
    assert len(best.ids) == 5
    assert torch.allclose(torch.tensor(best.logprobs), m.score(torch.tensor([[1, *best.ids]]))[0], atol=1e-4)
    assert len(ancestral_sample(m, [1], max_new_tokens=4)[0].ids) == 4
    save_model_dir(tmp_path / "m", *m.to_state())
    loaded, _ = load_model(tmp_path / "m")
    assert isinstance(loaded, EncoderDecoder)
    assert loaded.decoder.embed is loaded.encoder.embed
    assert torch.allclose(loaded(torch.tensor([[1, 5, 6]]), source=source.unsqueeze(0))[0], full, atol=1e-6)
