"""Text analysis for retrieval: tokenisation, stop-word lists, the analyzer's settings round trip."""

import pytest

from lmlab.analysis.analyzer import Analyzer, stemmer_function
from lmlab.analysis.stopwords import LUCENE_ENGLISH, NLTK_ENGLISH, stopword_list
from lmlab.analysis.tokenize import word_tokens
from lmlab.core.errors import ConfigError


def test_word_tokens_lowercase_and_split_on_non_word_characters():
    assert word_tokens("The T-cell's IL-2, 3.5 mg!") == ["the", "t", "cell", "s", "il", "2", "3", "5", "mg"]
    assert word_tokens("Ab C", lowercase=False) == ["Ab", "C"]
    assert word_tokens("a bc def", pattern="sklearn") == ["bc", "def"]


def test_stop_word_lists_have_their_published_sizes():
    assert len(LUCENE_ENGLISH) == 33 and len(NLTK_ENGLISH) == 179
    assert LUCENE_ENGLISH <= NLTK_ENGLISH | {"such", "then", "there", "these", "they", "this", "will", "with"}
    assert stopword_list("none") == frozenset()
    with pytest.raises(ConfigError, match="stopwords"):
        stopword_list("klingon")


def test_stop_word_lists_match_bm25s():
    stopwords = pytest.importorskip("bm25s.stopwords")
    assert LUCENE_ENGLISH == set(stopwords.STOPWORDS_EN)
    assert NLTK_ENGLISH == set(stopwords.STOPWORDS_EN_PLUS)


def test_analyzer_drops_stop_words_and_round_trips_its_settings():
    a = Analyzer()
    assert a("The cat is on THE mat") == ["cat", "mat"]
    assert Analyzer(stopwords="none")("The cat") == ["the", "cat"]
    assert Analyzer(stopwords="nltk")("They were very happy") == ["happy"]
    b = Analyzer.from_dict(a.to_dict())
    assert b == a and b("The cat") == ["cat"]


def test_analyzer_rejects_bad_settings_and_input():
    with pytest.raises(ConfigError, match="stemmer"):
        Analyzer(stemmer="snowball")
    with pytest.raises(ConfigError, match="regular expression"):
        Analyzer(pattern="([a-z")
    with pytest.raises(ConfigError, match="string"):
        Analyzer()(b"bytes")
    assert stemmer_function("none") is None


def test_porter_stemming_plugs_into_the_analyzer():
    a = Analyzer(stemmer="porter")
    assert a("The cats were running connections") == ["cat", "were", "run", "connect"]
    assert Analyzer.from_dict(a.to_dict())("ponies") == ["poni"]
