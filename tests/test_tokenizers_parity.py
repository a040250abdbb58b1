"""Real tokenizers load exactly: SmolLM2 from GGUF vs transformers, MiniLM tokenizer.json vs HF tokenizers."""

import json
import os
import random

import pytest

from lmlab.tokenizers import load, minilm_tokenizer_json, smollm2_gguf
from tests.conftest import need_data


def _random_unicode(seed, n=30, length=80):
    rng = random.Random(seed)
    planes = [(0x20, 0x7E), (0xA0, 0x2FF), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF),
              (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F6FF), (0x1D400, 0x1D4FF), (0x0, 0x1F)]
    out = []
    for _ in range(n):
        chars = []
        while len(chars) < length:
            lo, hi = rng.choice(planes)
            c = rng.randint(lo, hi)
            # U+061D became punctuation in Unicode 14; HF tokenizers' tables predate it (Python's do not)
            if not 0xD800 <= c <= 0xDFFF and c != 0x61D:
                chars.append(chr(c))
        out.append("".join(chars))
    return out


HARD = [
    "emoji 👩‍👩‍👧‍👦 👍🏽 🇺🇸🇫🇷 ❤️‍🔥 and ZWJ\u200dstuff", "中文字符 日本語のテキスト 한국어 텍스트", "e\u0301 a\u0308\u0304 Z\u0335\u0321",
    "مرحبا بالعالم שָׁלוֹם עולם", "tabs\t\tand  runs   of\u3000spaces\n\n\r\n  x  ", "\u00a0\u2003\u2028\u2029\x0b\x0c\x85",
    "def f(x):\n    return {'a': x**2}  # ok\n\tpass", "x" * 10000, "ab" * 5000 + " end", "It's 1234567 don't WE'LL I'M",
    "İstanbul ǅ ß ﬁ Ⅻ ² ½ ①", "<|im_start|>user\nhi<|im_end|>\n", " <|im_start|> a <|im_end|>", "[CLS] x [SEP] [MASK]",
    "\x1c\x1d\x1e\x1f \x7f\x00 z", "", "   ", "\n", "a\u0000b", "‘quotes’ “double” — dash … ellipsis",
] + _random_unicode(0)


def _wikitext_lines():
    valid = need_data("wikitext-2", "valid.txt").read_text(encoding="utf-8").splitlines()
    test = need_data("wikitext-2", "test.txt").read_text(encoding="utf-8").splitlines()
    return valid + test


@pytest.fixture(scope="module")
def smollm2():
    return load("smollm2-135m-instruct")


def test_smollm2_chat_tokens_are_single_ids(smollm2):
    start, end = smollm2.token_to_id("<|im_start|>"), smollm2.token_to_id("<|im_end|>")
    assert (start, end) == (1, 2)
    ids = smollm2.encode("<|im_start|>user\nHello<|im_end|>")
    assert ids[0] == start and ids[-1] == end and ids.count(start) == 1
    assert smollm2.decode(ids) == "<|im_start|>user\nHello<|im_end|>"
    assert smollm2.decode(ids, skip_special_tokens=True) == "user\nHello"
    assert smollm2.encode("Hello") == smollm2.encode("Hello", add_special_tokens=False)
    assert load(smollm2_gguf()).encode("Hello world") == smollm2.encode("Hello world")
    assert load(smollm2_gguf().parent).encode("Hello world") == smollm2.encode("Hello world")  # a directory


@pytest.mark.slow
def test_smollm2_ids_identical_to_transformers_from_the_same_gguf(smollm2):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    path = smollm2_gguf()
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    lines = _wikitext_lines() + HARD
    theirs = ref(lines, add_special_tokens=False)["input_ids"]
    mismatches = [line for line, ids in zip(lines, theirs, strict=True) if smollm2.encode(line) != ids]
    assert not mismatches, f"{len(mismatches)} lines differ, first: {mismatches[0][:80]!r}"
    for line in HARD:
        ids = smollm2.encode(line)
        assert smollm2.decode(ids) == ref.decode(ids, skip_special_tokens=False)


def test_minilm_ids_identical_to_hf_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.Tokenizer.from_file(str(minilm_tokenizer_json()))
    ref.no_padding()
    ref.no_truncation()
    ours = load("all-minilm-l6-v2")
    lines = _wikitext_lines() + HARD
    theirs = ref.encode_batch(lines, add_special_tokens=False)
    mismatches = [line for line, enc in zip(lines, theirs, strict=True) if ours.encode(line) != enc.ids]
    assert not mismatches, f"{len(mismatches)} lines differ, first: {mismatches[0][:80]!r}"
    for line in HARD[:12]:
        assert ours.encode(line, add_special_tokens=True) == ref.encode(line).ids
        ids = ours.encode(line)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids)


def test_tokenizer_json_round_trip_keeps_ids(tmp_path, smollm2):
    smollm2.save(tmp_path)
    again = load(tmp_path)
    assert again.fingerprint() == smollm2.fingerprint()
    tokenizers = pytest.importorskip("tokenizers")
    ref = tokenizers.Tokenizer.from_str(json.dumps(smollm2.to_hf_json()))
    for line in HARD:
        assert ref.encode(line, add_special_tokens=False).ids == again.encode(line)


def test_llama3_pre_tokenizer_matches_hf_tokenizers():
    hf = pytest.importorskip("tokenizers")
    from lmlab.tokenizers import SubwordTokenizer
    from lmlab.tokenizers.pre_tokenizers import LLAMA3_PATTERN

    data = load("smollm2-135m-instruct").to_hf_json()
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    ours = SubwordTokenizer.from_hf_json(data)
    ref = hf.Tokenizer.from_str(json.dumps(data))
    lines = HARD + ["I'VE 12345 apples\r\n\r\n  and\tIt's   ok!!\n", "don'T ¿qué? 3.14159"]
    lines += need_data("wikitext-2", "valid.txt").read_text(encoding="utf-8").splitlines()[:400]
    for line in lines:
        assert ours.encode(line) == ref.encode(line, add_special_tokens=False).ids, line[:80]
