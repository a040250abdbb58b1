"""Token shards and the training loaders: exact contents, boundaries, determinism, padding."""

import json

import numpy as np
import pytest
import torch

from lmlab.core.errors import ConfigError, DataError, InputError
from lmlab.data import from_texts
from lmlab.data.loaders import ContiguousStream, RandomWindows, length_buckets, pad_batch
from lmlab.data.shards import TokenArray, TokenShards, write_shards
from lmlab.tokenizers import WordLevelTokenizer


@pytest.fixture
def docs():
    return from_texts(["a b c", "b c d e", "e a", "a a a b"])


def test_shards_hold_every_document_with_eos_across_shard_boundaries(tmp_path, docs, no_progress):
    tok = WordLevelTokenizer("word").train(docs)
    shards = write_shards(docs, tok, tmp_path / "s", shard_tokens=4)
    expected = [i for d in docs for i in tok.encode(d) + [tok.eos_id]]
    assert len(shards) == len(expected) == 17
    assert shards.read(0, 17).tolist() == expected
    assert shards.read(3, 6).tolist() == expected[3:9]  # crosses two shard files
    header = json.loads((tmp_path / "s" / "header.json").read_text())
    assert header["dtype"] == "uint16" and header["documents"] == 4
    assert [s["tokens"] for s in header["shards"]] == [4, 4, 4, 4, 1]
    assert shards.tokenizer().fingerprint() == tok.fingerprint()
    with pytest.raises(IndexError):
        shards.read(16, 2)


def test_large_vocabularies_use_uint32(tmp_path, no_progress):
    words = [f"w{i}" for i in range(70000)]
    corpus = from_texts([" ".join(words)])
    tok = WordLevelTokenizer("word").train(corpus)
    shards = write_shards(corpus, tok, tmp_path / "s")
    assert shards.header["dtype"] == "uint32"
    assert shards.read(len(shards) - 2, 2).tolist() == [tok.encode("w69999")[0], tok.eos_id]


def test_missing_or_damaged_shards_are_clear_errors(tmp_path, docs, no_progress):
    with pytest.raises(InputError, match="header.json"):
        TokenShards(tmp_path)
    tok = WordLevelTokenizer("word").train(docs)
    write_shards(docs, tok, tmp_path / "s", shard_tokens=4)
    (tmp_path / "s" / "shard_00001.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match="wrong size"):
        TokenShards(tmp_path / "s")


def test_random_windows_are_a_function_of_the_step_and_split_over_ranks():
    tokens = TokenArray(np.arange(1000) % 97, vocab_size=97)
    loader = RandomWindows(tokens, batch_size=4, context=8, seed=3)
    a, b = loader.batch(5), loader.batch(5)
    assert torch.equal(a["input"], b["input"]) and not torch.equal(a["input"], loader.batch(6)["input"])
    assert torch.equal(a["input"][:, 1:], a["target"][:, :-1])
    halves = [loader.batch(5, rank=r, world=2)["input"] for r in (0, 1)]
    assert torch.equal(torch.stack([halves[0][0], halves[1][0], halves[0][1], halves[1][1]]), a["input"])
    with pytest.raises(ConfigError, match="cannot be split"):
        loader.batch(0, rank=0, world=3)


def test_contiguous_streams_continue_where_the_last_window_ended():
    tokens = TokenArray(np.arange(41), vocab_size=41)
    loader = ContiguousStream(tokens, batch_size=2, bptt=7)  # streams of 20: windows 7, 7, 6
    assert loader.windows_per_pass == 3
    first, second, third = loader.batch(0), loader.batch(1), loader.batch(2)
    assert first["input"].tolist() == [list(range(0, 7)), list(range(20, 27))]
    assert second["input"][:, 0].tolist() == [7, 27] and first["target"][:, -1].tolist() == [7, 27]
    assert third["input"].shape == (2, 6) and third["target"][:, -1].tolist() == [20, 40]
    assert first["reset"] and not second["reset"] and loader.batch(3)["reset"]


def test_padded_length_buckets_cover_every_sentence_once():
    seqs = [list(range(n)) for n in [3, 9, 2, 5, 5, 7, 4, 8, 1, 6]]
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[True] * 3, [True, False, False]]
    batches = list(length_buckets(seqs, batch_size=3, pad_id=-1, seed=0, bucket_factor=10))
    seen = sorted(tuple(row[m].tolist()) for b in batches for row, m in
                  zip(torch.cat([b["input"][:, :1], b["target"]], 1), torch.cat([b["mask"][:, :1], b["mask"]], 1),
                      strict=True))
    assert seen == sorted(tuple(s) for s in seqs if len(s) >= 2)
    # sorted pools: each batch's lengths are consecutive in the sorted order, so spread is small
    assert all(int(b["mask"].sum(1).max() - b["mask"].sum(1).min()) <= 2 for b in batches)


def test_cli_tokenize(tmp_path, capsys):
    from lmlab.cli import main

    text = tmp_path / "t.txt"
    text.write_text("to be or not\nto be\n")
    assert main(["data", "tokenize", str(text), "--out", str(tmp_path / "s"), "--tokenizer", "char", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 12 + 5 + 2 and out["documents"] == 2
    shards = TokenShards(tmp_path / "s")
    tok = shards.tokenizer()
    assert tok.decode(shards.read(0, 12).tolist()) == "to be or not"
