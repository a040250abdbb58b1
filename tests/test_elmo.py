"""ELMo (Peters et al., 2018): the biLM as a switch of the recurrent LM (``bidirectional``), its objective
(the two directions' losses summed) on the one trainer, ``ScalarMix`` over its layers, the ``elmo``
family through ``lmlab pretrain``, and a tagger on the frozen biLM's features."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, ModelError
from lmlab.models.recurrent import RecurrentLM
from lmlab.models.scalar_mix import ScalarMix
from lmlab.train.objectives import BidirectionalLM

V, D = 30, 8


def bilm(**kw):
    torch.manual_seed(0)
    return RecurrentLM(V, **{**dict(d_embed=D, d_hidden=D, n_layers=2, bidirectional=True, tie_embeddings=True), **kw})


def test_layers_are_the_token_layer_and_each_layers_forward_and_backward_states():
    model = bilm().eval()
    ids = torch.randint(0, V, (2, 7))
    layers = model.layer_states(ids)
    assert layers.shape == (3, 2, 7, 2 * D)
    x = model.embed(ids)
    assert torch.equal(layers[0], torch.cat([x, x], -1))
    forward = model.rnn[1](model.rnn[0](x)[0])[0]
    backward = model.backward_rnn[1](model.backward_rnn[0](x.flip(1))[0])[0].flip(1)  # reads right to left
    assert torch.allclose(layers[2], torch.cat([forward, backward], -1), atol=1e-6)
    logits, _ = model(ids)  # the protocol's LM is the forward direction, through the shared softmax
    assert torch.allclose(logits, model.head(forward), atol=1e-6)
    assert model.head.weight is model.embed.weight


def test_a_padded_row_computes_what_it_computes_alone():
    model = bilm().eval()
    ids = torch.randint(0, V, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    assert torch.allclose(model.layer_states(ids, mask)[:, 1, :5], model.layer_states(ids[1:, :5])[:, 0], atol=1e-6)


def test_objective_sums_both_directions_losses_and_each_direction_sees_one_side():
    model = bilm().eval()
    batch = {"input": torch.randint(0, V, (3, 6)), "target": torch.randint(0, V, (3, 6))}
    loss, n = BidirectionalLM()(model, batch)
    ids = torch.cat([batch["input"], batch["target"][:, -1:]], 1)
    forward, backward = model.bidirectional_logits(ids)
    expected = (F.cross_entropy(forward[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
                + F.cross_entropy(backward[:, 1:].reshape(-1, V), ids[:, :-1].reshape(-1)))
    assert n == 18 and torch.allclose(loss, expected, atol=1e-6)
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 1) % V
    forward2, backward2 = model.bidirectional_logits(changed)
    assert torch.equal(forward2[:, :3], forward[:, :3]) and not torch.allclose(forward2[:, 3:], forward[:, 3:])
    assert torch.equal(backward2[:, 4:], backward[:, 4:]) and not torch.allclose(backward2[:, :4], backward[:, :4])


def test_scalar_mix_is_gamma_times_the_softmax_weighted_sum():
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        mix.gamma.fill_(1.5)
    layers = torch.randn(3, 2, 4, 6)
    e = torch.exp(torch.tensor([0.5, -1.0, 2.0]))
    s = e / e.sum()
    expected = 1.5 * (s[0] * layers[0] + s[1] * layers[1] + s[2] * layers[2])
    out = mix(layers)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    assert mix.weights.grad.abs().sum() > 0 and mix.gamma.grad is not None
    with pytest.raises(ModelError, match="weighs 3 layers, got 2"):
        mix(layers[:2])
    normed = ScalarMix(3, layer_norm=True)
    centred = (layers - layers.mean(-1, keepdim=True)) / (layers.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(normed(layers), centred.mean(0), atol=1e-5)  # w = 0, γ = 1: the mean of the normed layers


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="d_embed .* must equal d_hidden"):
        bilm(d_embed=8, d_hidden=16, tie_embeddings=False)
    with pytest.raises(ModelError, match="one direction"):
        RecurrentLM(V, d_embed=D, d_hidden=D).layer_states(torch.zeros(1, 3, dtype=torch.long))


def test_elmo_pretrains_from_the_cli_and_its_features_train_a_tagger(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.models import load_model
    from lmlab.tagging.elmo import bilm_tagger_accuracy, fit_bilm_tagger

    out = tmp_path / "elmo"
    args = ["pretrain", "--family", "elmo", "--train", "embedded:test", "--valid", "embedded:test",
            "--tokenizer", "word", "--d-embed", "16", "--d-hidden", "16", "--n-layers", "2", "--steps", "3",
            "--context", "16", "--batch-size", "4", "--eval-batches", "1", "--json"]
    assert main([*args, "--objective", "bilm", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["valid_loss"] is not None
    model, tokenizer = load_model(out / "model")
    assert model.args["bidirectional"] and model.head.weight is model.embed.weight
    assert main([*args, "--out", str(tmp_path / "bad")]) == 1  # elmo without its objective
    assert "add --objective bilm" in capsys.readouterr().err
    assert main([*args[:2], "gpt2", *args[3:], "--objective", "bilm", "--out", str(tmp_path / "bad2")]) == 1
    assert "use --family elmo" in capsys.readouterr().err

    words = ["the", "of", "and", "to", "in", "is", "was", "for"]
    rng = torch.Generator().manual_seed(1)
    sentences = []
    for _ in range(64):  # the tag is the word's position in the list, even or odd
        picked = [words[int(i)] for i in torch.randint(0, len(words), (6,), generator=rng)]
        sentences.append((picked, ["A" if words.index(w) % 2 == 0 else "B" for w in picked]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net, tags, result = fit_bilm_tagger(model, tokenizer, sentences, "elmo", steps=80, batch_size=16, lr=1e-2)
    assert tags == ["A", "B"] and result.steps == 80
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the biLM stays frozen
    assert not torch.equal(net.encoder.mix.weights.detach(), torch.zeros(3))  # the task learned its layer weights
    assert bilm_tagger_accuracy(net, tags, tokenizer, sentences) > 0.9
