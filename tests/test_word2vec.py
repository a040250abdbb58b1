"""word2vec: Huffman optimality, gradients against autograd, sampling tables, training behaviour."""

import itertools
import math

import numpy as np
import pytest
import torch

from lmlab.core.errors import ConfigError, DataError
from lmlab.data import from_texts
from lmlab.embeddings import Word2VecConfig, build_vocab, encode, huffman_codes, train_word2vec
from lmlab.embeddings import _kernels as kernels
from lmlab.embeddings.word2vec import _jobs, keep_probabilities, noise_table


# --- Huffman tree ---------------------------------------------------------------------------
def brute_force_optimal_cost(counts):
    """Min Σ count·length over all length vectors meeting Kraft's equality (prefix codes)."""
    n = len(counts)
    best = math.inf
    for lengths in itertools.product(range(1, n), repeat=n):
        if sum(2.0 ** -length for length in lengths) == 1.0:
            best = min(best, sum(c * length for c, length in zip(counts, lengths, strict=True)))
    return best


@pytest.mark.parametrize("counts", [[5, 4, 3, 2, 1], [1, 1, 1, 1], [10, 1, 1, 1, 1, 1], [7, 7, 2, 1, 1, 9]])
def test_huffman_tree_is_optimal_and_prefix_free(counts):
    codes, points = huffman_codes(np.array(counts))
    cost = sum(c * len(code) for c, code in zip(counts, codes, strict=True))
    assert cost == brute_force_optimal_cost(counts)
    words = ["".join(map(str, c)) for c in codes]
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    assert sum(2.0 ** -len(c) for c in codes) == 1.0
    n = len(counts)
    for code, path in zip(codes, points, strict=True):
        assert len(code) == len(path) and path[0] == n - 2  # every path starts at the root
        assert all(0 <= p < n - 1 for p in path)


def test_huffman_hand_computed():
    codes, _ = huffman_codes(np.array([8, 4, 2, 1, 1]))
    assert [len(c) for c in codes] == [1, 2, 3, 4, 4]


# --- gradients of both objectives against autograd ------------------------------------------
def test_negative_sampling_step_is_a_gradient_step():
    rng = np.random.default_rng(0)
    v, d, alpha = 7, 5, 0.1
    syn0 = rng.normal(size=(v, d)).astype(np.float32)
    syn1 = rng.normal(size=(v, d)).astype(np.float32)
    target, negs = 2, np.array([4, 0, 6], dtype=np.int64)
    x = torch.tensor(syn0[3], dtype=torch.float64, requires_grad=True)
    u = torch.tensor(syn1, dtype=torch.float64, requires_grad=True)
    loss = -torch.nn.functional.logsigmoid(x @ u[target]) - torch.nn.functional.logsigmoid(-(u[negs] @ x)).sum()
    loss.backward()
    neu1e = np.zeros(d, dtype=np.float32)
    out = syn1.copy()
    kernels.ns_update(syn0[3].copy(), out, target, negs, alpha, neu1e)
    np.testing.assert_allclose(neu1e, -alpha * x.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out - syn1, -alpha * u.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_negative_draw_equal_to_target_is_skipped():
    syn1 = np.ones((3, 2), dtype=np.float32)
    neu1e = np.zeros(2, dtype=np.float32)
    out = syn1.copy()
    kernels.ns_update(np.zeros(2, dtype=np.float32), out, 1, np.array([-1, -1]), 1.0, neu1e)
    np.testing.assert_allclose(neu1e, [0.5, 0.5])  # only the true target: g = 1 - σ(0) = 0.5
    np.testing.assert_array_equal(out, syn1)  # l1 = 0, so no output row moves


def test_hierarchical_softmax_step_is_a_gradient_step():
    rng = np.random.default_rng(1)
    counts = np.array([9, 6, 4, 3, 2, 1])
    codes, points = huffman_codes(counts)
    d, alpha, word = 4, 0.05, 5
    syn1 = rng.normal(size=(len(counts) - 1, d)).astype(np.float32)
    l1 = rng.normal(size=d).astype(np.float32)
    x = torch.tensor(l1, dtype=torch.float64, requires_grad=True)
    u = torch.tensor(syn1, dtype=torch.float64, requires_grad=True)
    sign = 1 - 2 * torch.tensor(codes[word], dtype=torch.float64)
    loss = -torch.nn.functional.logsigmoid(sign * (u[points[word]] @ x)).sum()
    loss.backward()
    # the path's probabilities over all words sum to one: a proper softmax
    with torch.no_grad():
        total = sum(torch.exp(torch.nn.functional.logsigmoid(
            (1 - 2 * torch.tensor(codes[w], dtype=torch.float64)) * (u[points[w]] @ x)).sum()) for w in range(6))
    assert float(total) == pytest.approx(1.0, rel=1e-12)
    neu1e = np.zeros(d, dtype=np.float32)
    out = syn1.copy()
    kernels.hs_update(l1.copy(), out, np.array(points[word]), np.array(codes[word], dtype=np.float32), alpha, neu1e)
    np.testing.assert_allclose(neu1e, -alpha * x.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out - syn1, -alpha * u.grad.numpy(), rtol=1e-4, atol=1e-6)


# --- tables ---------------------------------------------------------------------------------
def test_noise_table_follows_unigram_to_the_three_quarters():
    cum = noise_table(np.array([16, 1]), 0.75)
    assert cum[-1] == 2**31 - 1
    assert cum[0] / cum[-1] == pytest.approx(8 / 9, abs=1e-9)


def test_keep_probability_is_the_c_tools_formula():
    counts = np.array([100_000, 10])
    keep = keep_probabilities(counts, 1e-3)
    t = 1e-3 * 100_010
    assert keep[0] == pytest.approx((math.sqrt(100_000 / t) + 1) * t / 100_000)
    assert keep[0] == pytest.approx(0.03263, abs=1e-5)
    assert keep[1] == 1.0  # rare words are always kept
    assert (keep_probabilities(counts, 0) == 1).all()


def test_vocab_min_count_cap_and_order():
    corpus = from_texts(["b a a c", "c a d b", "e"])
    vocab = build_vocab(corpus, min_count=2)
    assert vocab.words == ["a", "b", "c"]  # a:3, then b and c tie at 2 in first-seen order
    assert build_vocab(corpus, min_count=1, max_vocab=2).words == ["a", "b"]
    ids, starts = encode(corpus, vocab)
    assert ids.tolist() == [1, 0, 0, 2, 2, 0, 1] and starts.tolist() == [0, 4, 7]
    with pytest.raises(DataError, match="min_count"):
        build_vocab(corpus, min_count=5)


def test_jobs_cover_every_sentence_once():
    starts = np.array([0, 3, 10, 11, 30, 31])
    jobs = _jobs(starts, 5)
    assert jobs[0][0] == 0 and jobs[-1][1] == 5
    assert all(a[1] == b[0] for a, b in zip(jobs, jobs[1:], strict=False))


def test_bad_config_is_one_clear_error():
    with pytest.raises(ConfigError, match="architecture"):
        Word2VecConfig(architecture="glove")
    with pytest.raises(ConfigError, match="window"):
        Word2VecConfig(window=0)


# --- training -------------------------------------------------------------------------------
def topic_corpus(n=400, seed=0):
    """Two topics whose words only co-occur within their topic."""
    rng = np.random.default_rng(seed)
    topics = [["cat", "dog", "pet", "fur", "paw"], ["car", "road", "wheel", "fuel", "drive"]]
    docs = []
    for i in range(n):
        words = topics[i % 2]
        docs.append(" ".join(rng.choice(words, size=12)))
    return from_texts(docs)


@pytest.mark.parametrize("architecture,loss", [("skipgram", "ns"), ("cbow", "ns"), ("skipgram", "hs"), ("cbow", "hs")])
def test_training_separates_topics(architecture, loss, no_progress):
    model = train_word2vec(topic_corpus(), dim=16, architecture=architecture, loss=loss, min_count=1,
                           sample=0, epochs=3, threads=1, seed=3, window=3)
    wv = model.wv
    within = np.mean([wv.similarity("cat", w) for w in ("dog", "pet", "fur", "paw")])
    across = np.mean([wv.similarity("cat", w) for w in ("car", "road", "wheel", "fuel")])
    assert within > across + 0.3
    assert model.stats.words == 400 * 12 * 3


def test_one_thread_is_deterministic(no_progress):
    a = train_word2vec(topic_corpus(), dim=8, min_count=1, epochs=1, threads=1, seed=5).syn0
    b = train_word2vec(topic_corpus(), dim=8, min_count=1, epochs=1, threads=1, seed=5).syn0
    c = train_word2vec(topic_corpus(), dim=8, min_count=1, epochs=1, threads=1, seed=6).syn0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_two_threads_train_every_word(no_progress):
    model = train_word2vec(topic_corpus(), dim=8, min_count=1, epochs=2, threads=2, sample=0, job_words=500)
    assert model.stats.kept_words == model.stats.words


def test_subsampling_drops_frequent_words(no_progress):
    docs = from_texts(["the " * 50 + "cat dog"] * 20)
    model = train_word2vec(docs, dim=4, min_count=1, epochs=1, threads=1, sample=1e-3)
    assert model.stats.kept_words < model.stats.words / 2
