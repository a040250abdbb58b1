"""The Porter stemmer: the paper's examples, NLTK's modes, and parity with NLTK on WikiText-2."""

from __future__ import annotations

import pytest

from lmlab.analysis.porter import stem
from lmlab.core.errors import ConfigError
from tests.conftest import need_data

# examples from Porter (1980), carried through every step
PAPER = {"caresses": "caress", "ponies": "poni", "caress": "caress", "cats": "cat", "feed": "feed",
         "agreed": "agre", "plastered": "plaster", "bled": "bled", "motoring": "motor", "sing": "sing",
         "hopping": "hop", "tanned": "tan", "falling": "fall", "hissing": "hiss", "fizzed": "fizz",
         "failing": "fail", "filing": "file", "relational": "relat", "conditional": "condit",
         "generalizations": "gener", "oscillators": "oscil", "hopeful": "hope", "goodness": "good"}


@pytest.mark.parametrize("word", sorted(PAPER))
def test_paper_examples(word):
    assert stem(word) == PAPER[word]
    assert stem(word, "original") == PAPER[word]


def test_modes_differ_where_nltk_extends_the_algorithm():
    assert (stem("dies"), stem("dies", "original")) == ("die", "di")
    assert (stem("skies"), stem("skies", "martin")) == ("sky", "ski")
    assert stem("as") == "as" and stem("as", "original") == "a"  # short words are left alone
    assert stem("Running") == "run"  # lowercased first
    assert stem("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy" * 100).startswith("yyy")  # no recursion limit


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError):
        stem("word", "snowball")


@pytest.mark.parametrize("mode", ["NLTK_EXTENSIONS", "MARTIN_EXTENSIONS", "ORIGINAL_ALGORITHM"])
def test_equals_nltk_on_wikitext2_vocabulary(mode):
    porter = pytest.importorskip("nltk.stem.porter")
    words: set[str] = set()
    for split in ("train", "valid", "test"):
        with open(need_data("wikitext-2", f"{split}.txt"), encoding="utf-8") as f:
            for line in f:
                words.update(line.split())
    words.update(["yyyy", "İstanbul", "a*ding", "Dying", "SKIES", "geology", "archaeology", "fully"])
    ours = {"NLTK_EXTENSIONS": "nltk", "MARTIN_EXTENSIONS": "martin", "ORIGINAL_ALGORITHM": "original"}[mode]
    reference = porter.PorterStemmer(mode)
    vocabulary = sorted(words)
    assert len(vocabulary) > 33000
    if ours != "nltk":  # the other modes share most code: every 4th word is enough for them
        vocabulary = vocabulary[::4]
    mismatches = [(w, stem(w, ours), reference.stem(w)) for w in vocabulary if stem(w, ours) != reference.stem(w)]
    assert mismatches == []
