"""``WordLevelTokenizer.train_encode``'s one-pass byte reader gives the vocabulary and ids of the general
path (train, then encode each document) on every kind of file it accepts, and leaves the rest to it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lmlab.core.errors import DataError
from lmlab.data.corpus import text_file
from lmlab.tokenizers import _wordlevel_kernels as kernels
from lmlab.tokenizers.wordlevel import WordLevelTokenizer

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


class Documents:
    """The same documents as a corpus, without the file hint: the general path."""

    def __init__(self, corpus) -> None:
        self.corpus = corpus

    def __iter__(self):
        return iter(self.corpus)


def both(path: Path, **options) -> tuple[WordLevelTokenizer, np.ndarray, WordLevelTokenizer, np.ndarray]:
    corpus = text_file(path)
    fast, general = WordLevelTokenizer("word", **options), WordLevelTokenizer("word", **options)
    return fast, fast.train_encode(corpus), general, general.train_encode(Documents(corpus))


def status(path: Path) -> int:
    head = b"<unk><s></s><pad>"
    return kernels.check_bytes(np.frombuffer(head + path.read_bytes(), dtype=np.uint8), len(head))[0]


CASES = {
    "plain": "the cat sat\nthe dog\n",
    "no final newline": "a b c\nc b a",
    "crlf, tabs, vertical tab, form feed": "a\tb\r\n\x0bc\x0c d \r\n",
    "blank and white-space-only lines": "\n   \n a b \n\t\n\nb\n",
    "special tokens as whole words": "a <unk> b </s> c\n<s> d <pad>\n",
    "non-ASCII words": "naïve café 東京 😀\ncafé\n",
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_the_byte_reader_equals_training_then_encoding(tmp_path, text):
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    assert status(path) == kernels.OK
    fast, fast_ids, general, general_ids = both(path)
    assert fast.vocab == general.vocab
    assert fast_ids.tolist() == general_ids.tolist() and fast_ids.dtype == np.int64


def test_min_count_and_max_size_and_ties(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("b a c b a d e e e\nf g a\n", encoding="utf-8")
    for options in ({"min_count": 2}, {"max_size": 6}, {"min_count": 1, "max_size": 5}):
        fast, fast_ids, general, general_ids = both(path, **options)
        assert fast.vocab == general.vocab and fast_ids.tolist() == general_ids.tolist()
    fast, fast_ids, _, _ = both(path, max_size=6)
    assert fast.vocab[4:] == ["a", "e"]  # most frequent first, ties in code point order
    assert fast_ids.tolist()[:3] == [fast.unk_id, 4, fast.unk_id]


OTHERS = {
    "no-break space": ("a\u00a0b c\n", kernels.OTHER_WHITESPACE),
    "ideographic space": ("a\u3000b\n", kernels.OTHER_WHITESPACE),
    "en quad": ("a\u2000b\n", kernels.OTHER_WHITESPACE),
    "information separator": ("a\x1cb\n", kernels.OTHER_WHITESPACE),
    "special inside a word": ("a<s>b c\n", kernels.OK),
}


@pytest.mark.parametrize("text,expected", OTHERS.values(), ids=OTHERS.keys())
def test_files_the_byte_reader_leaves_to_the_general_path_still_agree(tmp_path, text, expected):
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    assert status(path) == expected
    fast, fast_ids, general, general_ids = both(path)
    assert fast.vocab == general.vocab and fast_ids.tolist() == general_ids.tolist()


@pytest.mark.parametrize("raw", [b"ab\xff\n", b"\xc0\xaf\n", b"\xed\xa0\x80\n", b"\xf4\x90\x80\x80\n", b"\xe2\x82\n"],
                         ids=["ff", "overlong", "surrogate", "past U+10FFFF", "truncated"])
def test_bytes_that_are_not_utf8_are_named_by_the_general_path(tmp_path, raw):
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine line\n" + raw)
    assert status(path) == kernels.NOT_UTF8
    with pytest.raises(DataError, match=r"c\.txt:2: byte .* not valid UTF-8"):
        WordLevelTokenizer("word").train_encode(text_file(path))


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no documents"):
        WordLevelTokenizer("word").train_encode(text_file(path))


def test_ptb_slice(tmp_path):
    src = DATA / "ptb" / "ptb.train.txt"
    if not src.exists():
        pytest.skip("the PTB data set is not present")
    path = tmp_path / "ptb.txt"
    path.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:3000]), encoding="utf-8")
    fast, fast_ids, general, general_ids = both(path, min_count=2)
    assert fast.vocab == general.vocab and np.array_equal(fast_ids, general_ids)
    assert fast_ids.tolist().count(fast.eos_id) == 3000
