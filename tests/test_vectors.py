"""Word vectors: neighbours, analogies, word2vec files (gensim reads ours, we read gensim's), evaluation."""

import numpy as np
import pytest

from lmlab.core.errors import ConfigError, DataError
from lmlab.embeddings import WordVectors, load_word2vec
from lmlab.embeddings.evaluate import evaluate_analogies, evaluate_similarity, spearman
from tests.conftest import need_data


def toy():
    words = ["king", "queen", "man", "woman", "apple", "héllo"]
    vecs = np.array([[1, 1, 0], [1, -1, 0], [0, 1, 0.1], [0, -1, 0.1], [0, 0, 1], [0.5, 0.2, -0.3]], dtype=np.float32)
    return WordVectors(words, vecs)


def test_similarity_and_neighbours_by_cosine():
    wv = toy()
    assert wv.similarity("king", "queen") == pytest.approx(0.0, abs=1e-7)
    assert wv.similarity("man", "king") == pytest.approx(1 / np.sqrt(2) / np.sqrt(1.01), rel=1e-6)
    best = wv.most_similar("man", topn=2)
    assert best[0][0] == "king" and "man" not in [w for w, _ in best]


def test_analogies_3cosadd_and_3cosmul():
    wv = toy()
    assert wv.analogy("man", "king", "woman")[0][0] == "queen"
    assert wv.analogy("man", "king", "woman", method="3cosmul")[0][0] == "queen"
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        wv.analogy("man", "king", "prince")
    with pytest.raises(ConfigError, match="3cosadd"):
        wv.analogy("man", "king", "woman", method="3cosdiv")


def test_neighbours_match_gensim():
    kv_mod = pytest.importorskip("gensim.models")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    ours = WordVectors(words, vecs)
    kv = kv_mod.KeyedVectors(8)
    kv.add_vectors(words, vecs)
    for pos, neg in [(["w1", "w2"], ["w3"]), (["w7"], [])]:
        theirs = kv.most_similar(positive=pos, negative=neg, topn=5)
        mine = ours.most_similar(positive=pos, negative=neg, topn=5)
        assert [w for w, _ in mine] == [w for w, _ in theirs]
        np.testing.assert_allclose([s for _, s in mine], [s for _, s in theirs], rtol=1e-5)
        theirs = kv.most_similar_cosmul(positive=pos, negative=neg, topn=5)
        mine = ours.most_similar_cosmul(positive=pos, negative=neg, topn=5)
        assert [w for w, _ in mine] == [w for w, _ in theirs]


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_files_round_trip_and_gensim_reads_them(tmp_path, binary):
    wv = toy()
    path = tmp_path / ("v.bin" if binary else "v.txt")
    wv.save_word2vec(path, binary=binary)
    back = load_word2vec(path)
    assert back.words == wv.words
    np.testing.assert_allclose(back.vectors, wv.vectors, rtol=1e-6 if not binary else 0)
    assert len(load_word2vec(path, limit=2)) == 2
    kv_mod = pytest.importorskip("gensim.models")
    kv = kv_mod.KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert list(kv.index_to_key) == wv.words
    np.testing.assert_allclose(kv.vectors, wv.vectors, rtol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_we_read_gensims_files(tmp_path, binary):
    kv_mod = pytest.importorskip("gensim.models")
    rng = np.random.default_rng(1)
    kv = kv_mod.KeyedVectors(5)
    words = ["alpha", "beta", "gamma", "δέλτα"]
    kv.add_vectors(words, rng.normal(size=(4, 5)).astype(np.float32))
    path = tmp_path / "g.w2v"
    kv.save_word2vec_format(str(path), binary=binary)
    wv = load_word2vec(path, binary=binary)
    assert wv.words == words
    np.testing.assert_allclose(wv.vectors, kv.vectors, rtol=1e-6)
    assert load_word2vec(path).words == words  # the format is guessed right too


def test_mismatched_dimension_and_truncation_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(DataError, match="word 2 .*'b'.* 2 values.*dimension 3"):
        load_word2vec(bad)
    short = tmp_path / "short.bin"
    toy().save_word2vec(short, binary=True)
    short.write_bytes(short.read_bytes()[:-20])
    with pytest.raises(DataError, match="truncated"):
        load_word2vec(short, binary=True)
    header = tmp_path / "h.txt"
    header.write_text("hello world\n")
    with pytest.raises(DataError, match="first line"):
        load_word2vec(header)


def test_spearman_matches_scipy():
    import scipy.stats as stats
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, size=40).astype(float)  # with ties
    y = x + rng.normal(size=40)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    assert spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)


def structured_vectors(path, noise, seed=0):
    """Vectors for the words of the analogy file where d ≈ b − a + c holds up to ``noise``."""
    rng = np.random.default_rng(seed)
    words, vecs = [], {}
    for line in path.read_text().splitlines():
        if line.startswith(":"):
            offset = rng.normal(size=30)
            continue
        a, b, c, d = line.split()
        for base, derived in ((a, b), (c, d)):
            if base not in vecs:
                vecs[base] = rng.normal(size=30)
                words.append(base)
            if derived not in vecs:
                vecs[derived] = vecs[base] + offset + noise * rng.normal(size=30)
                words.append(derived)
    return WordVectors(words, np.array([vecs[w] for w in words], dtype=np.float32))


def test_analogy_accuracy_matches_gensims_evaluator():
    path = need_data("wordsim", "questions-words.txt")
    kv_mod = pytest.importorskip("gensim.models")
    wv = structured_vectors(path, noise=1.2)
    kv = kv_mod.KeyedVectors(wv.dim)
    kv.add_vectors(wv.words, wv.vectors)
    for restrict in (300, 30_000):
        ours = evaluate_analogies(wv, path, restrict_vocab=restrict)
        theirs, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict)
        total = sections[-1]
        assert ours.correct == len(total["correct"])
        assert ours.questions == len(total["correct"]) + len(total["incorrect"])
        assert ours.accuracy == pytest.approx(theirs, abs=1e-12)
        assert 0.05 < ours.accuracy < 0.95  # neither trivial nor hopeless


def test_similarity_matches_gensims_evaluator():
    path = need_data("wordsim", "wordsim353.tsv")
    kv_mod = pytest.importorskip("gensim.models")
    words = sorted({w.lower() for line in path.read_text().splitlines() if not line.startswith("#")
                    for w in line.split("\t")[:2]})[:300]
    rng = np.random.default_rng(3)
    wv = WordVectors(words, rng.normal(size=(len(words), 10)).astype(np.float32))
    kv = kv_mod.KeyedVectors(10)
    kv.add_vectors(words, wv.vectors)
    ours = evaluate_similarity(wv, path)
    _, (rho, _), oov = kv.evaluate_word_pairs(str(path))
    assert ours.spearman == pytest.approx(rho, abs=1e-6)
    assert 100 * ours.oov_ratio == pytest.approx(oov, abs=1e-9)
