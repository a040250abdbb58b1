import json

import pytest

from lmlab.core import DataError, InputError
from lmlab.data import (
    data_root,
    directory,
    embedded_corpus,
    from_texts,
    jsonl_file,
    list_datasets,
    open_corpus,
    text_file,
)
from tests.conftest import need_data


def test_lines_blocks_and_file_units(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one two\r\n\nthree\nfour\n\n\nfive\n", encoding="utf-8")
    assert list(text_file(f)) == ["one two", "three", "four", "five"]
    assert list(text_file(f, keep_blank=True)) == ["one two", "", "three", "four", "", "", "five"]
    assert list(text_file(f, unit="blocks")) == ["one two", "three\nfour", "five"]
    assert list(text_file(f, unit="file")) == ["one two\n\nthree\nfour\n\n\nfive"]


def test_corpus_is_reiterable_and_streams(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x\ny\n")
    corpus = text_file(f)
    assert list(corpus) == list(corpus) == ["x", "y"]
    it = iter(corpus)
    assert next(it) == "x"  # lazily opened: nothing more read yet


def test_jsonl_and_directory(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text(json.dumps({"text": "héllo"}) + "\n\n" + json.dumps({"text": "world"}) + "\n")
    assert list(jsonl_file(j)) == ["héllo", "world"]
    with pytest.raises(DataError, match="no field 'body'"):
        list(jsonl_file(j, field="body"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("bee\n")
    (tmp_path / "a.txt").write_text("ay\n")
    assert list(directory(tmp_path)) == ["ay", "bee"]
    assert list(open_corpus(tmp_path)) == ["ay", "bee"]


def test_missing_empty_binary_and_undecodable_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        open_corpus(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="has no documents"):
        list(text_file(empty))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(DataError, match="binary"):
        text_file(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin.txt:2: byte 4 .* not valid UTF-8.*--errors replace"):
        list(text_file(latin))
    assert list(text_file(latin, errors="replace")) == ["ok", "caf\ufffd"]


def test_from_texts_rejects_non_strings():
    with pytest.raises(Exception, match="not a string"):
        from_texts(["a", 3])


def test_embedded_corpus_split():
    train, test, all_docs = (list(embedded_corpus(s)) for s in ("train", "test", "all"))
    assert len(all_docs) > 1000
    assert train + test == all_docs
    assert abs(len(test) / len(all_docs) - 0.1) < 0.01
    assert list(open_corpus("embedded:test")) == test


def test_dataset_registry_lists_every_set():
    names = {row["name"] for row in list_datasets()}
    assert {"ptb", "wikitext-2", "tinyshakespeare", "sst2", "scifact", "gsm8k", "arc"} <= names
    assert all(row["path"].startswith(str(data_root())) for row in list_datasets())


def test_named_split():
    need_data("ptb", "ptb.valid.txt")
    first = next(iter(open_corpus("ptb:valid")))
    assert first.split()[:3] == ["consumers", "may", "want"]
    with pytest.raises(Exception, match="no split 'dev'"):
        open_corpus("ptb:dev")
