"""Chunking keeps each chunk's source and exact character span."""

import pytest

from lmlab.core.errors import ConfigError
from lmlab.retrieval.chunking import chunk_by_sentences, chunk_by_tokens, sentence_spans

TEXT = "Dr. Smith went home.  He slept! Then \"why?\" he asked. Short.\n\nNew para here. See Fig. 3 now"


def test_token_windows_overlap_and_cover_the_text():
    chunks = chunk_by_tokens("a b c d e f g", "x", size=3, overlap=1)
    assert [c.text for c in chunks] == ["a b c", "c d e", "e f g"]
    assert [(c.start, c.end) for c in chunks] == [(0, 5), (4, 9), (8, 13)]
    assert chunks[1].id == "x#4-9" and chunk_by_tokens("one", "y", size=5, overlap=1)[0].text == "one"
    with pytest.raises(ConfigError, match="overlap"):
        chunk_by_tokens("a b", "x", size=2, overlap=2)


def test_sentences_skip_abbreviations_and_lowercase_continuations():
    assert [TEXT[s:e] for s, e in sentence_spans(TEXT)] == [
        "Dr. Smith went home.", "He slept!", 'Then "why?" he asked.', "Short.", "New para here.", "See Fig. 3 now"]


def test_sentence_chunks_respect_the_budget_overlap_and_spans():
    chunks = chunk_by_sentences(TEXT, "doc", max_chars=40, overlap=1)
    assert all(TEXT[c.start:c.end] == c.text and c.source == "doc" for c in chunks)
    assert all(len(c.text) <= 40 for c in chunks)
    assert chunks[0].text == "Dr. Smith went home.  He slept!"
    assert chunks[1].text.startswith("He slept!")  # one sentence of overlap
    assert chunks[-1].text.endswith("See Fig. 3 now")
    assert [c.text for c in chunk_by_sentences("One. Two.", "d", max_chars=3, overlap=0)] == ["One.", "Two."]
