"""The numba kernels behind ARPA files, against Python's own formatting and parsing (``"%.7g"``,
``float``) and the line-by-line ARPA reader (counting is checked in ``test_ngram_counts``)."""

import math
import random

import numpy as np
import pytest

from lmlab.data import from_texts
from lmlab.ngram import NgramLM
from lmlab.ngram import _arpa_kernels as kernels
from lmlab.ngram.arpa import _read_fast, _read_text, read_arpa, write_arpa
from lmlab.tokenizers import WordLevelTokenizer


def _formatted(value: float) -> str:
    out = np.empty(32, dtype=np.uint8)
    return out[:kernels.format_g7(out, 0, value)].tobytes().decode()


def _values() -> list[float]:
    rng = random.Random(7)
    values = [0.0, -0.0, 1.0, -99.0, 1e-4, 9.9999995e-5, 1e-5, 9999999.0, 9999999.5, 0.5, 2.5e-7,
              9.9999995, 0.99999995, 0.12345675, 123456.75, 1234567.5, 1e-16, 3e-16, math.inf, -math.inf]
    values += [10.0 ** k for k in range(-16, 7)]
    values += [rng.uniform(-10, 0) for _ in range(20000)]  # log10 probabilities and backoffs
    values += [rng.choice((-1, 1)) * 10 ** rng.uniform(-16, 7) for _ in range(20000)]
    values += [round(rng.uniform(-5, 1), rng.randint(0, 9)) for _ in range(5000)]  # short decimals, ties
    values += [float(f"{rng.randint(1, 9999999)}e{rng.randint(-16, 0)}") for _ in range(5000)]
    return values


def test_format_g7_writes_what_printf_writes():
    bad = [(v, _formatted(v), f"{v:.7g}") for v in _values() if _formatted(v) != f"{v:.7g}"]
    assert not bad, bad[:5]


def test_parse_number_reads_what_float_reads():
    rng = random.Random(11)
    texts = [f"{v:.7g}" for v in _values() if math.isfinite(v)] + [repr(v) for v in _values() if math.isfinite(v)]
    texts += ["-0", "+1.5", "1.", ".5", "-.25e+3", "7E-2", "0.000", "123456789012345678", "1e22", "-1e-22"]
    texts += [f"{rng.randint(0, 10 ** 15)}.{rng.randint(0, 999)}e{rng.randint(-22, 5)}" for _ in range(5000)]
    for text in texts:
        buf = np.frombuffer(text.encode(), dtype=np.uint8)
        value, ok = kernels.parse_number(buf, 0, len(buf))
        if ok:  # the fast path may give up (the reader then falls back), never be wrong
            assert value == float(text) and math.copysign(1, value) == math.copysign(1, float(text)), text
    for given_up in ("1e23", "12345678901234567890", "nan", "inf", "1e", "-", ".", "1.2.3", "0x10", "1_0"):
        buf = np.frombuffer(given_up.encode(), dtype=np.uint8)
        assert not kernels.parse_number(buf, 0, len(buf))[1], given_up
    # every number lmplz and lmlab write takes the fast path
    for text in [f"{v:.7g}" for v in _values()[:30000] if math.isfinite(v)]:
        buf = np.frombuffer(text.encode(), dtype=np.uint8)
        assert kernels.parse_number(buf, 0, len(buf))[1], text


@pytest.fixture(scope="module")
def small_model():
    rng = random.Random(3)
    words = ["é", "日本", "UNKWORD"] + [f"w{i}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(len(words))]  # Zipf: every count of counts occurs
    texts = [" ".join(rng.choices(words, weights, k=rng.randint(1, 12))) for _ in range(600)]
    tok = WordLevelTokenizer("word").train(texts)
    return NgramLM.fit_corpus(from_texts(texts), tok, order=4, smoothing="kn"), tok


def _same_parse(a, b):
    assert a[0] == b[0]
    assert sorted(a[1]) == sorted(b[1])
    for n in a[1]:
        for x, y in zip(a[1][n], b[1][n], strict=True):
            assert (x is None and y is None) or np.array_equal(x, y), n


def test_fast_reader_equals_the_line_by_line_reader(tmp_path, small_model, no_progress):
    lm, tok = small_model
    raw = write_arpa(lm, tok, tmp_path / "m.arpa").read_bytes()
    fast = _read_fast(raw)
    assert fast is not None
    _same_parse(fast, _read_text(raw, tmp_path / "m.arpa"))
    # a file by another writer: its n-grams in another order, spaces instead of tabs, CRLF lines
    head, _, rest = raw.partition(b"\\2-grams:\n")
    body, _, tail = rest.partition(b"\n\n")
    shuffled = body.split(b"\n")
    random.Random(0).shuffle(shuffled)
    foreign = (head + b"\\2-grams:\n" + b"\n".join(shuffled) + b"\n\n" + tail).replace(b"\t", b" ")
    foreign = foreign.replace(b"\n", b"\r\n")
    (tmp_path / "f.arpa").write_bytes(foreign)
    assert _read_fast(foreign) is not None
    _same_parse(_read_fast(foreign), _read_text(foreign, tmp_path / "f.arpa"))
    back, back_tok = read_arpa(tmp_path / "f.arpa")
    assert back.sizes() == lm.sizes()
    ids = np.array([[tok.bos_id] + tok.encode("w1 w2 é 日本 w3 w4") + [tok.eos_id]])
    back_ids = np.array([[back_tok.token_to_id(tok.id_to_token(i)) for i in ids[0]]])
    assert np.allclose(lm.score_array(ids), back.score_array(back_ids), atol=1e-6)


def test_fast_reader_leaves_unusual_files_to_the_line_by_line_reader(tmp_path, small_model, no_progress):
    lm, tok = small_model
    raw = write_arpa(lm, tok, tmp_path / "m.arpa").read_bytes()
    nbsp = raw.replace(b"\tw1 ", "\tw1\u00a0".encode(), 1)  # Unicode white space between two words
    assert _read_fast(nbsp) is None
    long_number = raw.replace(b"\n-", b"\n-0.12345678901234567890123", 1)
    assert _read_fast(long_number) is None
    assert read_arpa(tmp_path / "m.arpa")[0].sizes() == lm.sizes()



@pytest.mark.parametrize("workers", [2, 5])
def test_sections_formatted_in_parts_on_threads_equal_one_pass(tmp_path, small_model, workers, monkeypatch,
                                                               no_progress):
    import lmlab.ngram.arpa as arpa_module

    lm, tok = small_model
    one = write_arpa(lm, tok, tmp_path / "one.arpa").read_bytes()
    monkeypatch.setattr(arpa_module, "parallel_workers", lambda size: workers)
    assert write_arpa(lm, tok, tmp_path / "split.arpa").read_bytes() == one
