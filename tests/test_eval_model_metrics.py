"""BERTScore and MAUVE written against encoder callables, checked with small deterministic encoders."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from lmlab.core.errors import InputError
from lmlab.eval.bertscore import bert_score, greedy_match, idf_weights
from lmlab.eval.mauve import divergence_curve, kl_divergence, mauve, mauve_from_histograms, quantize


def word_vector(word: str, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(word.encode())).normal(size=dim)


def token_encoder(texts):
    """Each whitespace token gets a fixed pseudo-random vector (a stand-in for MiniLM's)."""
    return [(t.split(), np.array([word_vector(w) for w in t.split()]).reshape(-1, 16)) for t in texts]


def sentence_encoder(texts):
    return np.array([np.mean([word_vector(w) for w in t.split()], axis=0) for t in texts])


E1, E2, E3 = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.6, 0.8])


def test_greedy_matching_by_hand():
    # candidate (e1, e2) vs reference (e1, e3): recall (1 + 0.8)/2, precision (1 + 0.8)/2
    s = greedy_match((["x", "y"], np.stack([E1, E2])), (["x", "z"], np.stack([E1, E3])))
    assert (s.precision, s.recall, s.fmeasure) == pytest.approx((0.9, 0.9, 0.9))
    # idf weights x: 0.5, y: 2, z: 1 → P = (0.5·1 + 2·0.8)/2.5, R = (0.5·1 + 1·0.8)/1.5
    s = greedy_match((["x", "y"], np.stack([E1, E2])), (["x", "z"], np.stack([E1, 3 * E3])),
                     {"x": 0.5, "y": 2.0, "z": 1.0})
    assert s.precision == pytest.approx(2.1 / 2.5) and s.recall == pytest.approx(1.3 / 1.5)
    assert greedy_match(([], np.zeros((0, 2))), (["x"], E1[None])).fmeasure == 0.0


def test_idf_formula():
    idf = idf_weights([["a", "b"], ["a"], ["a", "c", "c"]])
    assert idf == pytest.approx({"a": math.log(4 / 4), "b": math.log(4 / 2), "c": math.log(4 / 2)})


def test_bert_score_with_a_token_encoder():
    cands = ["the cat sat on the mat", "a dog ran", "completely unrelated words"]
    refs = ["the cat sat on the mat", "the dog ran fast", "nothing similar here"]
    out = bert_score(cands, refs, token_encoder)
    assert out["per_pair"][0] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0})
    assert out["per_pair"][1]["precision"] > out["per_pair"][2]["precision"]
    # 'a dog ran' vs 'the dog ran fast': 'dog' and 'ran' match exactly, recall counts 2 of 4 exact matches
    assert out["per_pair"][1]["recall"] < out["per_pair"][1]["precision"]
    weighted = bert_score(cands, refs, token_encoder, idf=True)
    assert weighted["idf"] and weighted["per_pair"][0]["f1"] == pytest.approx(1.0)
    with pytest.raises(InputError):
        bert_score(["a"], [], token_encoder)


def test_mauve_of_identical_histograms_is_one():
    assert mauve_from_histograms([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(1.0)


def test_mauve_of_disjoint_histograms_matches_closed_form():
    # disjoint supports: KL(Q‖R) = −log(1 − λ), KL(P‖R) = −log λ, so the frontier is
    # x^(1/c) + y^(1/c) = 1 and its area is c·B(c, c + 1); with c = 5 that is 5·4!·5!/10!
    p, q = [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.3, 0.7]
    exact = 5 * math.factorial(4) * math.factorial(5) / math.factorial(10)
    assert mauve_from_histograms(p, q, points=2000) == pytest.approx(exact, rel=1e-4)
    curve = divergence_curve(np.array(p), np.array(q), points=3)
    lam = np.linspace(1e-6, 1 - 1e-6, 3)
    assert curve[1:-1] == pytest.approx(np.stack([(1 - lam) ** 5, lam ** 5], axis=1))
    assert kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf


def test_mauve_separates_different_text_distributions():
    rng = np.random.default_rng(0)
    topic_a = "cat dog bird fish mouse horse".split()
    topic_b = "stock bond market price trade bank".split()

    def texts(words, n):
        return [" ".join(rng.choice(words, 5)) for _ in range(n)]

    human, same, other = texts(topic_a, 60), texts(topic_a, 60), texts(topic_b, 60)
    close = mauve(human, same, sentence_encoder, clusters=6)
    far = mauve(human, other, sentence_encoder, clusters=6)
    assert close["mauve"] > 0.8 and far["mauve"] < 0.05 and close["clusters"] == 6
    p, q = quantize(sentence_encoder(human), sentence_encoder(other), clusters=4)
    assert np.minimum(p, q).sum() < 0.1  # the topics fall (almost) in different clusters
