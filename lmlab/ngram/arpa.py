"""ARPA back-off files: write an ``NgramLM`` and read one back (KenLM's and SRILM's too).

An ARPA file lists, per order, ``log10 p  w1 … wn  [log10 backoff]``. Reading builds the
model's sorted key tables and a word tokenizer over the unigram list (``<unk>``, ``<s>``,
``</s>`` as its special tokens). ``-99`` (and below) is read as log 0, the ARPA convention;
``<s>`` is never predicted, whatever probability the file gives it. A malformed file stops
with an error naming the line.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from ..core.errors import DataError, InputError, ModelError
from ..core.io import atomic_write
from ..core.machine import parallel_workers, usable_cores
from ..core.progress import progress
from ..tokenizers import WordLevelTokenizer
from .model import NgramLM

LN10 = math.log(10.0)
LOG_ZERO = -99.0
SPECIALS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}
_HEADER = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)$")
_SPACE = re.compile(r"\s")
_SECTION = re.compile(r"^\\(\d+)-grams:[ \t\r]*$", re.M)
_SECTION_BYTES = re.compile(rb"^\\(\d+)-grams:[ \t\r]*$", re.M)


def _log10(values: np.ndarray) -> np.ndarray:
    return np.maximum(values / LN10, LOG_ZERO)  # log 0 is written as -99


def write_arpa(lm: NgramLM, tokenizer, path: str | os.PathLike) -> Path:
    """Write ``lm`` as an ARPA file (atomically); ids without a name in ``tokenizer`` are an error."""
    from . import _arpa_kernels

    if lm.flat and lm.order > 1:
        raise ModelError("an add-k model of order > 1 has no ARPA form (its unseen words do not back off "
                         "to the lower orders)", "save it as a model directory instead of .arpa")
    if tokenizer.vocab_size != lm.vocab_size:
        raise ModelError("the tokenizer does not belong to this model (vocabulary sizes differ)")
    vocab = [tokenizer.id_to_token(i) for i in range(lm.vocab_size)]
    if not all(vocab) or _SPACE.search("".join(vocab)):
        raise ModelError("an ARPA file cannot hold tokens that are empty or contain whitespace",
                         "use a word tokenizer, or save a model directory")
    encoded = [w.encode("utf-8") for w in vocab]
    vocab_offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    vocab_offsets[1:] = np.cumsum([len(w) for w in encoded])
    vocab_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    unigram_rows = np.array([i for i in range(lm.vocab_size) if i != lm.pad_id], dtype=np.int64)
    sizes = [len(unigram_rows)] + [len(k) for k in lm.keys[1:]]
    out = Path(path)
    # one thread writes a section while the next is formatted (the kernel runs without the GIL, its parts
    # side by side on every core); a single writer keeps the writes in order
    workers = parallel_workers(max(sizes))
    with (atomic_write(out, "wb") as fh, ThreadPoolExecutor(max_workers=1) as writer,
          ThreadPoolExecutor(max_workers=workers) as formatters):
        pending = []

        def write(data: bytes | np.ndarray) -> None:
            pending.append(writer.submit(fh.write, data))

        write(("\\data\\\n" + "".join(f"ngram {n}={size}\n" for n, size in enumerate(sizes, 1))).encode())
        text, spans = np.empty(0, dtype=np.uint8), np.zeros((lm.vocab_size, 2), dtype=np.int64)
        for n in progress(range(1, lm.order + 1), desc="writing ARPA", unit="order"):
            rows = unigram_rows if n == 1 else slice(None)
            if n == 1:
                prefix, word = np.full(len(unigram_rows), -1, dtype=np.int64), unigram_rows
            else:
                prefix, word = np.divmod(lm.keys[n - 1], lm.vocab_size)
            probs = _log10(lm.logprobs[n - 1][rows])
            if n == 1 and lm.bos_id is not None:
                probs[unigram_rows == lm.bos_id] = LOG_ZERO
            bows = _log10(lm.logbows[n - 1][rows])
            write(f"\n\\{n}-grams:\n".encode())
            cuts = np.linspace(0, len(word), parallel_workers(len(word)) + 1).astype(np.int64)
            section = partial(_arpa_kernels.format_section, probs, prefix, word, bows, n < lm.order, vocab_bytes,
                              vocab_offsets, text, spans)
            parts = list(formatters.map(section, cuts[:-1], cuts[1:]))
            text, written = parts[0]
            if len(parts) > 1:  # one buffer for the next section to read from, spans shifted into it
                starts = np.cumsum([0] + [len(part_text) for part_text, _ in parts[:-1]])
                written = np.concatenate([part_spans + start for (_, part_spans), start in zip(parts, starts, strict=True)])
                text = np.concatenate([part_text for part_text, _ in parts])
            write(text)  # the next section only reads it
            if n == 1:  # order 2 names its prefixes by id; the padding id has no line
                spans[unigram_rows] = written
            else:
                spans = written
        write(b"\n\\end\\\n")
        for done in pending:
            done.result()  # a failed write (a full disk) is raised here, before the file is put in place
    return out


def _float(text: str, path: Path, lineno: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {text!r} is not a number", "the ARPA file is malformed") from None
    if math.isnan(value):
        raise DataError(f"{path}:{lineno}: NaN is not a log-probability", "the ARPA file is malformed")
    return -math.inf if value <= LOG_ZERO else value * LN10


def read_arpa(path: str | os.PathLike, *, smoothing: str = "arpa") -> tuple[NgramLM, WordLevelTokenizer]:
    """Load an ARPA file as (model, word tokenizer)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ARPA file not found: {p}", "check the path")
    raw = p.read_bytes()
    parsed = _read_fast(raw)
    if parsed is None:  # something the byte parser does not take: the line-by-line reader names it
        parsed = _read_text(raw, p)
    words, sections = parsed
    return _build(words, sections, p, smoothing)


def _natural(values: np.ndarray) -> np.ndarray:
    """log10 values as natural logs, -99 and below as log 0."""
    return np.where(values <= LOG_ZERO, -np.inf, values * LN10)


def _read_fast(raw: bytes) -> tuple[list[str], dict] | None:
    """(unigram words, {n: (log-probabilities, [count, n] word ids or None for n = 1, log-backoffs)})
    parsed from the file's bytes by the numba kernels, or None when anything is unusual."""
    from . import _arpa_kernels

    data_at = raw.find(b"\\data\\")
    end_at = raw.find(b"\\end\\", data_at) if data_at >= 0 else -1
    if end_at < 0:
        return None
    marks = _section_marks(raw, data_at, end_at)
    try:
        header = raw[data_at:marks[0][0] if marks else end_at].decode("ascii").split("\n")[1:]
    except UnicodeDecodeError:
        return None
    declared: dict[int, int] = {}
    for line in header:
        m = _HEADER.match(line.strip())
        if line.strip() and not m:
            return None
        if m:
            declared[int(m.group(1))] = int(m.group(2))
    if not declared or sorted(n for _, _, n in marks) != list(range(1, max(declared) + 1)) or \
            sorted(declared) != list(range(1, max(declared) + 1)):
        return None
    buf = np.frombuffer(raw, dtype=np.uint8)
    bodies = {n: (body, marks[j + 1][0] if j + 1 < len(marks) else end_at) for j, (_, body, n) in enumerate(marks)}
    no_slots, no_rows = np.full((16, 2), -1, dtype=np.int64), np.zeros((1, 3), dtype=np.int64)
    status, probs, bows, spans = _arpa_kernels.parse_section(buf, *bodies[1], 1, declared[1], no_slots, no_rows)
    if status:
        return None
    try:
        words = [raw[a:b].decode("utf-8") for a, b in spans.tolist()]
    except UnicodeDecodeError:
        return None
    slots, rows, duplicate = _arpa_kernels.word_table(buf, spans)
    if duplicate >= 0 or not set(SPECIALS.values()) <= set(words):
        return None
    sections = {1: (_natural(probs), None, _natural(bows))}
    higher = sorted(range(2, max(declared) + 1), key=lambda n: -declared[n] * n)  # the longest first
    with ThreadPoolExecutor(max_workers=max(1, min(len(higher), usable_cores()))) as pool:  # nogil kernel
        parsed = dict(zip(higher, pool.map(lambda n: _arpa_kernels.parse_section(
            buf, *bodies[n], n, declared[n], slots, rows), higher), strict=True))
    for n in range(2, max(declared) + 1):
        status, probs, bows, grams = parsed[n]
        if status:
            return None
        sections[n] = (_natural(probs), grams, _natural(bows))
    return words, sections


def _section_marks(raw: bytes, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(start, end, N) of every ``\\N-grams:`` line in ``raw[lo:hi]``: what ``_SECTION_BYTES.finditer``
    finds, looking only where a line starts with a backslash (a regular expression over the whole
    file takes longer than parsing it)."""
    marks = []
    at = raw.find(b"\n\\", lo, hi)
    while at >= 0:
        m = _SECTION_BYTES.match(raw, at + 1, hi)
        if m:
            marks.append((m.start(), m.end(), int(m.group(1))))
        at = raw.find(b"\n\\", at + 1, hi)
    return marks


def _read_text(raw: bytes, p: Path) -> tuple[list[str], dict]:
    """What ``_read_fast`` returns, line by line from the decoded text, naming any problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not valid UTF-8 ({exc.reason})", "convert the file to UTF-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as reading in text mode did
    data_at = text.find("\\data\\")
    if data_at < 0:
        raise DataError(f"{p}: no \\data\\ header", "this is not an ARPA file")
    end_at = text.find("\\end\\", data_at)
    if end_at < 0:
        raise DataError(f"{p}: the file ends without \\end\\", "the ARPA file is truncated")
    marks = [(m.start(), m.end(), int(m.group(1))) for m in _SECTION.finditer(text, data_at, end_at)]
    header_end = marks[0][0] if marks else end_at
    line0 = text.count("\n", 0, data_at) + 1
    declared: dict[int, int] = {}
    for i, line in enumerate(text[data_at:header_end].split("\n")[1:], line0 + 1):
        if line.strip():
            m = _HEADER.match(line.strip())
            if not m:
                raise DataError(f"{p}:{i}: expected 'ngram N=COUNT' in the \\data\\ header, got {line[:60]!r}",
                                "the ARPA file is malformed")
            declared[int(m.group(1))] = int(m.group(2))
    if not declared:
        raise DataError(f"{p}: the \\data\\ header declares no n-grams", "this is not an ARPA file")
    sections = {}
    for j, (start, body_start, n) in enumerate(marks):
        body_end = marks[j + 1][0] if j + 1 < len(marks) else end_at
        if n not in declared or n in sections:
            raise DataError(f"{p}:{text.count(chr(10), 0, start) + 1}: unexpected section \\{n}-grams:",
                            "the ARPA file is malformed")
        first_line = text.count("\n", 0, body_start) + 1
        sections[n] = _parse_section(text[body_start:body_end], first_line, n, p)
    order = max(declared)
    for n in range(1, order + 1):
        got = len(sections[n][0]) if n in sections else 0
        if got != declared.get(n):
            raise DataError(f"{p}: the header declares {declared.get(n, 0)} {n}-grams but the file lists {got}",
                            "the ARPA file is malformed or truncated")
    words = list(sections[1][1][:, 0])
    ids = {w: i for i, w in enumerate(words)}
    if len(ids) != len(words):
        raise DataError(f"{p}: a unigram is listed twice", "the ARPA file is malformed")
    for special in SPECIALS.values():
        if special not in ids:
            ids[special] = len(words)
            words.append(special)
    out = {1: (sections[1][0], None, sections[1][2])}
    for n in range(2, order + 1):
        probs, names, bows = sections[n]
        try:
            grams = np.fromiter(map(ids.__getitem__, names.ravel().tolist()), dtype=np.int64,
                                count=names.size).reshape(-1, n)
        except KeyError as exc:
            raise DataError(f"{p}: the {n}-gram section uses the word {exc.args[0]!r}, which has no unigram",
                            "the ARPA file is malformed") from None
        out[n] = (probs, grams, bows)
    return words, out


def _parse_section(body: str, first_line: int, n: int, path: Path) -> tuple:
    """(log-probabilities, [count, n] words, log-backoffs) of one section; fast when its lines are uniform."""
    flat = body.split()
    rows = body.strip().count("\n") + 1 if body.strip() else 0
    for width in (n + 2, n + 1):
        if rows and len(flat) == rows * width:
            try:
                probs = _floats(flat[0::width])
                bows = _floats(flat[width - 1::width]) if width == n + 2 else np.zeros(rows)
            except ValueError:
                break  # a bad number somewhere: find its line below
            names = np.empty((rows, n), dtype=object)
            for j in range(n):
                names[:, j] = flat[1 + j::width]
            return probs, names, bows
    probs, words, bows = [], [], []
    for lineno, line in enumerate(body.split("\n"), first_line):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (n + 1, n + 2):
            raise DataError(f"{path}:{lineno}: a {n}-gram line needs a probability, {n} words and an optional "
                            f"backoff, got {len(fields)} fields", "the ARPA file is malformed")
        probs.append(_float(fields[0], path, lineno))
        words.append(fields[1:n + 1])
        bows.append(_float(fields[-1], path, lineno) if len(fields) == n + 2 else 0.0)
    return np.array(probs), np.array(words, dtype=object).reshape(-1, n), np.array(bows)


def _floats(texts: list[str]) -> np.ndarray:
    values = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
    if np.isnan(values).any():
        raise ValueError("NaN")
    return _natural(values)


def _build(words: list[str], sections: dict, path: Path, smoothing: str) -> tuple[NgramLM, WordLevelTokenizer]:
    """The model from its unigram words and its sections (word ids per n-gram, natural logs)."""
    from . import _kernels

    order = max(sections)
    ids = {w: i for i, w in enumerate(words)}
    V = len(words)
    tokenizer = WordLevelTokenizer("word", special_tokens=dict(SPECIALS), vocab=words)
    logp1 = np.full(V, -math.inf)
    bow1 = np.zeros(V)
    logp1[:len(sections[1][0])], bow1[:len(sections[1][0])] = sections[1][0], sections[1][2]
    logp1[ids["<s>"]] = -math.inf
    keys, logprobs, logbows = [np.arange(V, dtype=np.int64)], [logp1], [bow1]
    # in word order (how lmlab writes them; lmplz lists them by their last words) the prefix lookups
    # below ascend, and the keys come out sorted; the orders sort at once (the kernel runs without the GIL)
    higher = range(2, order + 1)
    with ThreadPoolExecutor(max_workers=max(1, min(len(higher), usable_cores()))) as pool:
        word_orders = dict(zip(higher, pool.map(lambda n: _kernels.lexicographic_order(sections[n][1], V), higher),
                               strict=True))
    for n in higher:
        probs, grams, bows = sections[n]
        by_words = word_orders[n]
        row = grams[by_words, 0]
        for j in range(1, n - 1):
            row = _kernels.extend_rows(keys[j], row, grams, by_words, j, V)
        missing = np.flatnonzero(row < 0)
        if len(missing):
            bad = " ".join(words[i] for i in grams[by_words[missing[0]]])
            raise DataError(f"{path}: the {n}-gram '{bad}' has no entry for its first {n - 1} words",
                            "every n-gram's prefix must be listed (ARPA files from KenLM/SRILM are)")
        packed = row * V + grams[by_words, -1]
        probs, bows = probs[by_words], bows[by_words]
        if len(packed) > 1 and (np.diff(packed) == 0).any():
            raise DataError(f"{path}: an {n}-gram is listed twice", "the ARPA file is malformed")
        keys.append(packed)
        logprobs.append(probs)
        logbows.append(bows)
    lm = NgramLM(keys, logprobs, logbows, vocab_size=V, smoothing=smoothing, bos_id=ids["<s>"],
                 eos_id=ids["</s>"], unk_id=ids["<unk>"])
    return lm, tokenizer
