"""Classifiers: exact naive Bayes and TF-IDF against scikit-learn, logistic regression parity,
CBOW masking and initialisation, the fastText-style hashing, metrics, persistence, bad input."""

import numpy as np
import pytest
import torch

from lmlab.classify import (
    CBOWClassifier,
    FastTextClassifier,
    LogisticRegression,
    NaiveBayes,
    accuracy,
    confusion_matrix,
    load_classifier,
    load_labeled,
    macro_f1,
    save_classifier,
)
from lmlab.classify.base import class_weights
from lmlab.classify.cbow import CBOWModule, pad_batch
from lmlab.classify.fasttext import fnv1a
from lmlab.classify.features import BagOfWords, to_scipy, tokenize, tokenize_all
from lmlab.classify.heads import ClassificationHead, pool
from lmlab.core.errors import ConfigError, DataError
from lmlab.embeddings import WordVectors
from tests.conftest import need_data

TEXTS = ["a great fun film", "great acting , great story", "fun and moving", "a dull boring mess",
         "boring , dull and slow", "a mess of a film", "moving and great", "slow and boring"]
LABELS = ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neg"]


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("It's GREAT, really!") == ["it's", "great", ",", "really", "!"]


def test_tfidf_matches_scikit_learn():
    text = pytest.importorskip("sklearn.feature_extraction.text")
    docs = tokenize_all(TEXTS)
    bow = BagOfWords("tfidf").fit(docs)
    ours = bow.transform(docs).to_dense().numpy()
    sk = text.TfidfVectorizer(analyzer=tokenize)
    theirs = sk.fit_transform(TEXTS).toarray()
    assert bow.vocab == list(sk.get_feature_names_out())
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to_scipy(bow.transform(docs)).toarray(), theirs, rtol=1e-12)


def test_naive_bayes_matches_scikit_learn_exactly():
    nb_mod = pytest.importorskip("sklearn.naive_bayes")
    ours = NaiveBayes(alpha=0.5).fit(TEXTS, LABELS)
    x = to_scipy(ours.features.transform(tokenize_all(TEXTS)))
    sk = nb_mod.MultinomialNB(alpha=0.5).fit(x, LABELS)
    tests = ["great fun", "boring mess", "a film"]
    xt = to_scipy(ours.features.transform(tokenize_all(tests)))
    np.testing.assert_allclose(ours.predict_proba(tests), sk.predict_proba(xt), rtol=1e-10)
    assert ours.predict(tests)[:2] == ["pos", "neg"]


def test_naive_bayes_hand_computed():
    nb = NaiveBayes(alpha=1.0).fit(["a a b", "b c"], ["x", "y"])
    # p(a|x) = 3/6, p(b|x) = 2/6; p(a|y) = 1/5, p(b|y) = 2/5; equal priors
    px, py = (3 / 6) * (2 / 6), (1 / 5) * (2 / 5)
    assert nb.predict_proba(["a b"])[0, 0] == pytest.approx(px / (px + py), rel=1e-12)


@pytest.mark.parametrize("weighting", ["tfidf", "count"])
def test_logistic_regression_matches_scikit_learn(weighting):
    lin = pytest.importorskip("sklearn.linear_model")
    ours = LogisticRegression(C=2.0, weighting=weighting).fit(TEXTS, LABELS)
    x = to_scipy(ours.features.transform(tokenize_all(TEXTS)))
    sk = lin.LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000).fit(x, LABELS)
    np.testing.assert_allclose(ours.coef, sk.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.intercept, sk.intercept_, atol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(TEXTS), sk.predict_proba(x), atol=1e-6)


def test_softmax_regression_matches_scikit_learn_with_balanced_weights():
    lin = pytest.importorskip("sklearn.linear_model")
    texts = TEXTS + ["the news today", "news of the day", "today in news"]
    labels = LABELS + ["news"] * 3
    ours = LogisticRegression(C=1.0, class_weight="balanced").fit(texts, labels)
    x = to_scipy(ours.features.transform(tokenize_all(texts)))
    sk = lin.LogisticRegression(C=1.0, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(x, labels)
    np.testing.assert_allclose(ours.predict_proba(texts), sk.predict_proba(x), atol=1e-5)
    assert ours.score(texts, labels) == 1.0


def test_class_weights_balanced():
    w = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    np.testing.assert_allclose(w, [4 / 6, 4 / 2])
    with pytest.raises(ConfigError, match="class_weight"):
        class_weights(np.array([0, 1]), 2, "inverse")


def test_cbow_padding_is_masked_out_of_the_mean():
    torch.manual_seed(0)
    module = CBOWModule(10, 4, 3)
    alone = module(pad_batch([[2, 3]]))
    padded = module(pad_batch([[2, 3], [4, 5, 6, 7, 8]]))[:1]
    torch.testing.assert_close(alone, padded)
    mean = module.embed.weight[[2, 3]].mean(0)
    torch.testing.assert_close(alone[0], module.out(mean))


def test_cbow_learns_and_starts_from_word_vectors():
    rng = np.random.default_rng(0)
    vectors = WordVectors(["great", "boring", "film"], rng.normal(size=(3, 8)).astype(np.float32))
    model = CBOWClassifier(dim=8, epochs=30, lr=0.05, batch_size=4, vectors=vectors).fit(TEXTS, LABELS)
    assert model.initialised_words == 3
    assert model.score(TEXTS, LABELS) == 1.0
    with pytest.raises(ConfigError, match="dimension 8 but the classifier has 16"):
        CBOWClassifier(dim=16, vectors=vectors)


def test_fnv1a_is_fasttexts_hash():
    assert fnv1a("") == 2166136261
    assert fnv1a("a") == 0xE40C292C  # FNV-1a 32-bit test vector
    assert fnv1a("é") != fnv1a("e")


def test_fasttext_style_learns(no_progress):
    model = FastTextClassifier(dim=8, epochs=50, lr=0.5, buckets=1000).fit(TEXTS, LABELS)
    assert model.score(TEXTS, LABELS) == 1.0
    proba = model.predict_proba(["great fun", "boring mess"])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)


def test_metrics_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 50).astype(str).tolist()
    p = rng.integers(0, 3, 50).astype(str).tolist()
    assert accuracy(y, p) == pytest.approx(metrics.accuracy_score(y, p))
    assert macro_f1(y, p) == pytest.approx(metrics.f1_score(y, p, average="macro"))
    labels, counts = confusion_matrix(y, p)
    np.testing.assert_array_equal(counts, metrics.confusion_matrix(y, p, labels=labels))


def test_hand_computed_metrics():
    labels, counts = confusion_matrix(["a", "a", "b"], ["a", "b", "b"])
    assert labels == ["a", "b"] and counts.tolist() == [[1, 1], [0, 1]]
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)


@pytest.mark.parametrize("make", [lambda: NaiveBayes(), lambda: LogisticRegression(weighting="count"),
                                  lambda: CBOWClassifier(dim=4, epochs=2),
                                  lambda: FastTextClassifier(dim=4, buckets=100)])
def test_save_and_load_give_the_same_predictions(tmp_path, make, no_progress):
    model = make().fit(TEXTS, LABELS)
    save_classifier(tmp_path / "m", model)
    back = load_classifier(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(TEXTS), model.predict_proba(TEXTS), rtol=1e-6)


def test_bad_input_is_one_clear_error():
    with pytest.raises(DataError, match="only one class"):
        LogisticRegression().fit(["a b", "c d"], ["x", "x"])
    with pytest.raises(DataError, match="empty after tokenisation.*item 1"):
        NaiveBayes().fit(["a b", "   ", "c"], ["x", "y", "x"])
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        NaiveBayes().fit(["a", "b", "c"], ["x", "y"])
    with pytest.raises(Exception, match="not trained yet"):
        NaiveBayes().predict(["a"])


def test_classification_head_pools_mean_and_last():
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.tensor([[1.0, 2.0], [8.0, 9.0]]))
    torch.testing.assert_close(pool(hidden, mask, "last"), torch.tensor([[2.0, 3.0], [10.0, 11.0]]))
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    torch.testing.assert_close(pool(hidden, left, "last"), torch.tensor([[4.0, 5.0], [10.0, 11.0]]))
    assert ClassificationHead(2, 3, "last")(hidden, mask).shape == (2, 3)


def test_labelled_data_sets_read():
    need_data("sst2", "dev.tsv")
    texts, labels = load_labeled("sst2:dev")
    assert len(texts) == 872 and set(labels) == {"0", "1"}
    need_data("agnews", "test.csv")
    texts, labels = load_labeled("agnews:test")
    assert len(texts) == 7600 and labels.count("Sports") == 1900
    with pytest.raises(ConfigError, match="no split"):
        load_labeled("sst2:validation")


@pytest.mark.slow
def test_agnews_logistic_regression_is_close_to_scikit_learn():
    need_data("agnews", "train_subset_10k.tsv")
    need_data("agnews", "test.csv")
    lin = pytest.importorskip("sklearn.linear_model")
    xt, yt = load_labeled("agnews:train")
    xt, yt = xt[:1500], yt[:1500]
    xe, ye = load_labeled("agnews:test")
    xe, ye = xe[:1000], ye[:1000]
    ours = LogisticRegression().fit(xt, yt)
    x = to_scipy(ours.features.transform(tokenize_all(xt)))
    sk = lin.LogisticRegression(max_iter=2000).fit(x, yt)
    theirs = sk.score(to_scipy(ours.features.transform(tokenize_all(xe))), ye)
    assert abs(ours.score(xe, ye) - theirs) <= 0.005
    assert ours.score(xe, ye) > 0.7
