import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.core import ModelError
from lmlab.tokenizers import WordLevelTokenizer, load, split_words
from tests.conftest import need_data

TEXTS = ["the cat sat", "the dog sat", "a cat ran", "the cat", "a dog"]


def test_vocabulary_order_and_min_count():
    tok = WordLevelTokenizer("word", min_count=2).train(TEXTS)
    assert tok.vocab[:4] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert tok.vocab[4:] == ["cat", "the", "a", "dog", "sat"]  # count desc, then code point order
    assert tok.encode("the bird sat") == [5, 0, 8]
    assert tok.encode("the cat", add_special_tokens=True) == [1, 5, 4, 2]
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 3)


def test_special_token_strings_in_text_are_single_ids():
    tok = WordLevelTokenizer("char").train(["abc"])
    assert tok.encode("a</s>b") == [tok.token_to_id("a"), tok.eos_id, tok.token_to_id("b")]
    assert tok.decode(tok.encode("ab</s>"), skip_special_tokens=True) == "ab"


def test_decode_rejects_foreign_ids():
    tok = WordLevelTokenizer().train(TEXTS)
    with pytest.raises(ModelError, match="outside the vocabulary"):
        tok.decode([999])


def test_unicode_whitespace_split_matches_hf_definition():
    assert split_words("a\u3000b\xa0c\x1cd\u200be") == ["a", "b", "c\x1cd\u200be"]


def test_save_load_round_trip(tmp_path):
    tok = WordLevelTokenizer("word", min_count=1, max_size=7).train(TEXTS)
    path = tok.save(tmp_path)
    assert path.name == "tokenizer.json"
    again = load(tmp_path)
    assert again.vocab == tok.vocab and again.level == "word" and again.special_tokens == tok.special_tokens
    assert again.fingerprint() == tok.fingerprint()
    char = WordLevelTokenizer("char").train(TEXTS)
    assert load(char.save(tmp_path / "c.json")).encode("tac\n") == char.encode("tac\n")


def test_load_rejects_unknown_model_type(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"model": {"type": "Mystery"}}))
    with pytest.raises(ModelError, match="'Mystery' is not supported"):
        load(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_char_round_trip_when_all_chars_known(text):
    tok = WordLevelTokenizer("char").train([text + "x"])
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abc \t\n\u3000\xa0", max_size=40))
def test_word_round_trip_modulo_whitespace(text):
    tok = WordLevelTokenizer("word").train([text, "z"])
    assert tok.decode(tok.encode(text)) == " ".join(split_words(text))


HARD = ["tabs\tand  runs   of\u3000spaces", "emoji 👩‍👩‍👧 and 中文字符", "e\u0301 combining", "مرحبا بالعالم",
        "a<unk>b <s> </s><pad>", "x\x1cy", "", "   ", "\u2028line sep"]


def _hf_parity(tok, lines):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_str(json.dumps(tok.to_hf_json()))
    for line in lines:
        assert hf.encode(line, add_special_tokens=False).ids == tok.encode(line), line
        assert hf.encode(line).ids == tok.encode(line, add_special_tokens=True), line


@pytest.mark.parametrize("level", ["word", "char"])
def test_hf_tokenizers_reads_our_json_with_identical_ids_hard_set(level):
    tok = WordLevelTokenizer(level).train(HARD[:3])
    _hf_parity(tok, HARD)


@pytest.mark.parametrize("level", ["word", "char"])
def test_hf_tokenizers_parity_on_wikitext2_valid(level):
    train = need_data("wikitext-2", "train.txt").read_text(encoding="utf-8").splitlines()[:5000]
    valid = need_data("wikitext-2", "valid.txt").read_text(encoding="utf-8").splitlines()
    tok = WordLevelTokenizer(level, min_count=2).train(train)
    _hf_parity(tok, valid)
