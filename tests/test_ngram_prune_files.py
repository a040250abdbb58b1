"""Pruning keeps distributions normalised; model directories and ARPA files load back; bad files fail clearly."""

import math

import numpy as np
import pytest
import torch

from lmlab.core import ConfigError, DataError, ModelError
from lmlab.data import from_texts
from lmlab.models import load_model
from lmlab.ngram import NgramLM
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.files import load_ngram, save_ngram
from lmlab.ngram.prune import entropy_increase, prune_by_count, prune_by_entropy, remove_ngrams
from lmlab.tokenizers import WordLevelTokenizer

TRAIN = ["the cat sat on the mat", "the dog sat on the log", "a cat ran to the dog", "the cat", "a dog sat",
         "the mat was on the log", "a log and a mat", "the dog ran", "on the mat sat a cat", "a cat sat on a dog",
         "the cat sat on the log", "a dog ran to the mat"]


@pytest.fixture(scope="module")
def model():
    tok = WordLevelTokenizer("word").train(TRAIN)
    return NgramLM.fit_corpus(from_texts(TRAIN), tok, order=3, smoothing="kn"), tok


def _sums(lm, tok):
    out = []
    for h in ([1], [1, 5], [1, 5, 6], [4, 7], [7, 7, 7], [1, tok.token_to_id("the"), tok.token_to_id("cat")]):
        lp, _ = lm.next_logprobs(torch.tensor([h]), lm.initial_state(1))
        out.append(lp.exp().sum().item())
    return out


def test_count_pruning_drops_singletons_and_stays_normalised(model):
    lm, tok = model
    pruned = prune_by_count(lm, [0, 1, 1])
    assert pruned.sizes()[0] == lm.sizes()[0]
    assert pruned.sizes()[2] == int((lm.counts[2] > 1).sum())
    assert pruned.sizes()[1] < lm.sizes()[1]
    assert _sums(pruned, tok) == pytest.approx([1.0] * 6, abs=1e-9)
    # a kept n-gram keeps its probability; a dropped one is now scored by backing off
    ids = torch.tensor([[1] + tok.encode("a log and a mat") + [2]])  # its trigrams occur once
    assert not torch.allclose(pruned.score(ids), lm.score(ids))


def test_entropy_pruning_grows_with_the_threshold(model):
    lm, tok = model
    delta = entropy_increase(lm)
    assert all((d[np.isfinite(d)] >= -1e-12).all() for d in delta[1:])  # removing an n-gram never helps
    small, big = prune_by_entropy(lm, 1e-6), prune_by_entropy(lm, 1e-2)
    assert sum(big.sizes()) < sum(small.sizes()) <= sum(lm.sizes())
    assert _sums(big, tok) == pytest.approx([1.0] * 6, abs=1e-9)
    assert prune_by_entropy(lm, 0.0).sizes() == lm.sizes()


def test_removing_nothing_changes_nothing(model):
    lm, tok = model
    same = remove_ngrams(lm, [np.zeros(len(k), dtype=bool) for k in lm.keys])
    ids = torch.tensor([[1] + tok.encode("a dog sat on the cat") + [2]])
    assert torch.allclose(same.score(ids), lm.score(ids), rtol=0, atol=1e-12)


def test_pruning_bad_requests(model):
    lm, tok = model
    with pytest.raises(ConfigError, match="unigrams"):
        prune_by_count(lm, [1, 1, 1])
    flat = NgramLM.fit_corpus(from_texts(TRAIN), tok, order=2, smoothing="add-k")
    with pytest.raises(ModelError, match="add-k"):
        prune_by_entropy(flat, 1e-6)


def test_model_directory_round_trip_and_load_model(model, tmp_path):
    lm, tok = model
    assert save_ngram(lm, tok, tmp_path / "m") == "directory"
    back, tok2 = load_model(tmp_path / "m")
    assert isinstance(back, NgramLM) and back.counts is not None
    ids = torch.tensor([[1] + tok.encode("the cat ran on the log") + [2]])
    assert torch.equal(back.score(ids), lm.score(ids))
    assert tok2.vocab == tok.vocab
    again, _ = load_ngram(tmp_path / "m")
    assert again.sizes() == lm.sizes()


def test_add_k_has_no_arpa_form(model, tmp_path):
    _, tok = model
    flat = NgramLM.fit_corpus(from_texts(TRAIN), tok, order=2, smoothing="add-k")
    with pytest.raises(ModelError, match="no ARPA form"):
        write_arpa(flat, tok, tmp_path / "x.arpa")


GOOD = """\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.5\t</s>\t0
-0.4\tcat\t-0.2

\\2-grams:
-0.2\t<s> cat
-0.1\tcat </s>

\\end\\
"""


def test_reads_a_hand_written_arpa(tmp_path):
    (tmp_path / "m.arpa").write_text(GOOD, encoding="utf-8")
    lm, tok = read_arpa(tmp_path / "m.arpa")
    ids = np.array([[tok.bos_id, tok.token_to_id("cat"), tok.eos_id, tok.unk_id]])
    got = lm.score_array(ids)[0] / math.log(10)
    # p(cat|<s>) listed; p(</s>|cat) listed; p(<unk>|</s>) = bow(</s>) + p(<unk>) = 0 + -1.0
    assert got.tolist() == pytest.approx([-0.2, -0.1, -1.0])
    assert lm.score_array(np.array([[tok.bos_id, tok.eos_id]]))[0, 0] / math.log(10) == pytest.approx(-0.3 - 0.5)


@pytest.mark.parametrize("broken,message", [
    (GOOD.replace("-0.4\tcat\t-0.2", "-0.4\tcat\t-0.2\textra"), r"m.arpa:9: a 1-gram line needs"),
    (GOOD.replace("-0.1\tcat </s>", "oops\tcat </s>"), r"m.arpa:13: 'oops' is not a number"),
    (GOOD.replace("ngram 2=2", "ngram 2=3"), "declares 3 2-grams but the file lists 2"),
    (GOOD.replace("\\end\\\n", ""), r"without \\end\\"),
    (GOOD.replace("ngram 1=4", "ngrams are fun"), r"m.arpa:2: expected 'ngram N=COUNT'"),
    ("hello\n", r"no \\data\\"),
    (GOOD.replace("cat </s>", "dog </s>"), "'dog', which has no unigram"),
])
def test_malformed_arpa_names_the_problem(tmp_path, broken, message):
    (tmp_path / "m.arpa").write_text(broken, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_arpa(tmp_path / "m.arpa")
