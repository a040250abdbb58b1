"""The sentence VAE and its objective: the KL term equals torch.distributions', the annealing schedules
and free bits give the values of their formulas, word dropout spares BOS; and on sentences of random
words — which no language model can predict — the VAE trained on the one trainer carries them
through its code (reconstruction well below the plain LSTM LM's NLL, active units, KL > 0)."""

from __future__ import annotations

import random

import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import ConfigError, DataError
from lmlab.models.sentence_vae import SentenceVAE
from lmlab.train.vae import (
    ELBO,
    SentencePairs,
    evaluate_vae,
    free_bits_kl,
    gaussian_kl,
    kl_weight,
    train_vae,
    word_dropout,
)


def test_gaussian_kl_equals_torch_distributions():
    torch.manual_seed(0)
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    peer = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                             torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(gaussian_kl(mean, logvar), peer)


def test_kl_schedules_and_free_bits_by_hand():
    assert [kl_weight(s, 100, "linear", anneal_steps=40) for s in (0, 10, 40, 90)] == [0.0, 0.25, 1.0, 1.0]
    assert kl_weight(30, 100, "linear") == 0.6  # default: half the run
    # Fu et al.: 4 cycles of 25 steps, rising over the first half of each
    assert [kl_weight(s, 100, "cyclical", cycles=4, ratio=0.5) for s in (0, 5, 12, 13, 24, 25, 30)] == \
        pytest.approx([0.0, 0.4, 0.96, 1.0, 1.0, 0.0, 0.4])
    assert kl_weight(7, 100, "none") == 1.0
    kl = torch.tensor([[0.1, 2.0], [0.3, 1.0]])  # batch means 0.2 and 1.5
    assert float(free_bits_kl(kl, 0.0)) == pytest.approx(1.7)
    assert float(free_bits_kl(kl, 0.5)) == pytest.approx(2.0)  # the first dimension counts as 0.5
    with pytest.raises(ConfigError, match="kl schedule"):
        kl_weight(0, 10, "sigmoid")


def test_word_dropout_spares_bos_and_drops_at_its_rate():
    ids = torch.full((200, 50), 7)
    out = word_dropout(ids, 0.3, unk_id=1, generator=torch.Generator().manual_seed(0))
    assert bool((out[:, 0] == 7).all())
    assert 0.27 < float((out[:, 1:] == 1).float().mean()) < 0.33
    assert torch.equal(word_dropout(ids, 0.0, 1), ids)
    with pytest.raises(ConfigError, match="has none"):
        ELBO(10, word_dropout=0.2, unk_id=None)


def random_sentences(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(4, 12) for _ in range(3)] for _ in range(n)]


def test_vae_carries_random_sentences_through_its_code_where_an_lm_cannot(tmp_path, no_progress):
    train = SentencePairs(random_sentences(800, 0), 64, bos_id=1, eos_id=2, pad_id=0)
    held = SentencePairs(random_sentences(200, 1), 64, bos_id=1, eos_id=2, pad_id=0)
    results = {}
    for name, latent in (("lm", False), ("vae", True)):
        torch.manual_seed(0)
        model = SentenceVAE(12, d_embed=16, d_hidden=32, d_latent=8)
        objective = ELBO(250, schedule="linear", anneal_steps=100, free_bits=0.25, latent=latent)
        train_vae(model, train, tmp_path / name, steps=250, lr=1e-2, objective=objective)
        results[name] = evaluate_vae(model, held, latent=latent)
    lm, vae = results["lm"], results["vae"]
    assert lm["reconstruction_per_sentence"] > 3 * 2.0  # ≈ 3 log 8 + EOS: the words are unpredictable
    assert vae["reconstruction_per_sentence"] < 0.8 * lm["reconstruction_per_sentence"], results  # 4.5 vs 6.3
    assert vae["kl_per_sentence"] > 1.0 and vae["active_units"] >= 2 and lm["active_units"] == 0
    with pytest.raises(DataError, match="fewer than one batch"):
        SentencePairs(random_sentences(3, 0), 8, bos_id=1, eos_id=2)
