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
from lmlab.models.gumbel import categorical_kl_uniform, gumbel_softmax
from lmlab.models.sentence_vae import SentenceVAE, gaussian_kl
from lmlab.train.vae import (
    ELBO,
    SentencePairs,
    evaluate_vae,
    free_bits_kl,
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


def test_gumbel_softmax_equals_torch_on_the_same_noise():
    import torch.nn.functional as F

    logits = torch.randn(5, 7)
    for hard in (False, True):
        torch.manual_seed(3)
        ours = gumbel_softmax(logits, 0.5, hard=hard)
        torch.manual_seed(3)
        torch.testing.assert_close(ours, F.gumbel_softmax(logits, 0.5, hard=hard), rtol=0, atol=0)


def test_straight_through_is_one_hot_forward_and_the_relaxed_gradient_backward():
    logits = torch.randn(3, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    g = torch.Generator().manual_seed(0)
    hard = gumbel_softmax(logits, 0.7, hard=True, generator=g)
    assert torch.equal(hard.sum(-1), torch.ones(3)) and set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    (hard * weights).sum().backward()
    straight = logits.grad.clone()
    logits.grad = None
    soft = gumbel_softmax(logits, 0.7, generator=torch.Generator().manual_seed(0))
    (soft * weights).sum().backward()
    torch.testing.assert_close(straight, logits.grad)


def test_gumbel_max_samples_the_categorical():
    """The argmax of logits + Gumbel noise is a draw from softmax(logits): frequencies within 3 standard errors."""
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    draws = gumbel_softmax(logits.expand(20000, 4), 0.1, generator=torch.Generator().manual_seed(1)).argmax(-1)
    p = logits.softmax(-1)
    freq = torch.bincount(draws, minlength=4).float() / 20000
    assert ((freq - p).abs() <= 3 * (p * (1 - p) / 20000).sqrt()).all()


def test_categorical_kl_against_torch_distributions():
    logits = torch.randn(6, 3, 5)
    q = torch.distributions.Categorical(logits=logits)
    uniform = torch.distributions.Categorical(logits=torch.zeros(6, 3, 5))
    torch.testing.assert_close(categorical_kl_uniform(logits), torch.distributions.kl_divergence(q, uniform))


def test_a_discrete_latent_vae_trains_and_its_code_is_used(tmp_path):
    torch.manual_seed(0)
    sentences = [[4 + (i % 6), 10 + (i % 6), 16 + (i % 6)] for i in range(60)]  # six sentence kinds
    data = SentencePairs(sentences, 12, bos_id=1, eos_id=2, pad_id=0)
    model = SentenceVAE(24, d_embed=16, d_hidden=32, d_latent=2, latent_type="categorical", n_categories=6, tau=0.5)
    before = evaluate_vae(model, data)
    # word dropout hides the first word from the decoder, so the code is worth its KL (else it collapses)
    train_vae(model, data, tmp_path, steps=150, lr=1e-2, objective=ELBO(150, schedule="linear", word_dropout=0.8,
                                                                         unk_id=3))
    after = evaluate_vae(model, data)
    assert after["nll_bound_per_token"] < before["nll_bound_per_token"] - 0.5
    assert after["active_units"] >= 1 and 0.01 < after["kl_per_sentence"] <= 2 * torch.log(torch.tensor(6.0)).item()
    batch = data.rows_batch(range(6))
    code = model.eval().sample(*model.encode(batch["source"], batch["source_mask"]))
    assert code.shape == (6, 12) and torch.equal(code.sum(-1), torch.full((6,), 2.0))  # one value per variable
    config, tensors = model.to_state()
    again = SentenceVAE.from_state(config, tensors)
    assert again.latent_type == "categorical" and again.n_categories == 6


def test_the_bound_decoder_equals_the_vae_decoder_and_decodes_through_the_loop():
    from lmlab.generate.latent import decode_codes, interpolate, sentence_codes
    from lmlab.models.sentence_vae import CodeDecoder
    from lmlab.tokenizers import WordLevelTokenizer

    texts = ["the cat sat", "a dog ran far", "the dog sat", "a cat ran"] * 5
    tok = WordLevelTokenizer("word").train(texts)
    torch.manual_seed(0)
    vae = SentenceVAE(tok.vocab_size, d_embed=8, d_hidden=16, d_latent=3).eval()
    z = torch.randn(3, 3)
    inputs = torch.tensor([[tok.bos_id, 5, 6, 7]] * 3)
    with torch.no_grad():
        full = vae.decode(inputs, z)
        lm = CodeDecoder(vae, z, bos_id=tok.bos_id, eos_id=tok.eos_id)
        state = lm.initial_state(3)
        for t in range(4):  # step by step, with a row reorder half way
            scores, state = lm.next_scores(inputs[:, t:t + 1], state)
            torch.testing.assert_close(scores, full[:, t])
        picked = lm.select_state(state, torch.tensor([2, 0]))
        torch.testing.assert_close(picked[2], z[[2, 0]])

    def greedy(code: torch.Tensor) -> str:  # the decoder's own argmax loop, no Engine
        ids = [tok.bos_id]
        with torch.no_grad():
            for _ in range(10):
                nxt = int(vae.decode(torch.tensor([ids]), code[None])[0, -1].argmax())
                if nxt == tok.eos_id:
                    break
                ids.append(nxt)
        return tok.decode(ids[1:], skip_special_tokens=True)  # as the loop writes its text

    assert decode_codes(vae, tok, z, max_new_tokens=10) == [greedy(row) for row in z]
    path = interpolate(vae, tok, "the cat sat", "a dog ran far", steps=4, max_new_tokens=10)
    codes = sentence_codes(vae, tok, ["the cat sat", "a dog ran far"])
    assert len(path) == 4 and path[0] == greedy(codes[0]) and path[-1] == greedy(codes[1])
