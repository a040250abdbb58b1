"""BLEU as sacrebleu computes it: 13a / intl / no tokenisation, smoothing, multiple references.

``corpus_bleu(hypotheses, references)`` takes sacrebleu's arguments — ``references`` is a
list of reference *streams*, each parallel to the hypotheses — and returns the score (0–100)
with its n-gram statistics and a signature of every setting, so a reported number says
how it was computed (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:lmlab-…``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .. import __version__
from ..core.errors import ConfigError, InputError
from ..core.validate import check_choice, check_number

TOKENIZERS = ("13a", "intl", "none")
SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1.0, "exp": None}
VERSION = f"lmlab-{__version__}"


# --- tokenisation -----------------------------------------------------------------------------
_13A = [(re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols, as mteval-v13a.pl
        (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
        (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
        (re.compile(r"([0-9])(-)"), r"\1 \2 ")]  # dash after a digit


@lru_cache(maxsize=2 ** 16)
def tokenize_13a(line: str) -> str:
    """mteval-v13a.pl tokenisation (sacrebleu's default for BLEU)."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _13A:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def _char_class(code_points: list[int], negate: bool = False) -> str:
    """A regex character class of sorted ``code_points``, written as ranges."""
    ranges: list[list[int]] = []
    for cp in code_points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return f"[{'^' if negate else ''}{body}]"


@lru_cache(maxsize=2)
def _intl_patterns(ascii_only: bool = False) -> list[tuple[re.Pattern, str]]:
    # every punctuation mark, symbol and number lies below U+20000 (planes 2+ hold letters only);
    # ASCII text gets the same classes cut to ASCII, which match much faster
    by_kind: dict[str, list[int]] = {"P": [], "S": [], "N": []}
    for cp in range(0x80 if ascii_only else 0x20000):
        kind = by_kind.get(unicodedata.category(chr(cp))[0])
        if kind is not None:
            kind.append(cp)
    punct, not_number, symbol = _char_class(by_kind["P"]), _char_class(by_kind["N"], True), _char_class(by_kind["S"])
    return [(re.compile(f"({not_number})({punct})"), r"\1 \2 "),  # punctuation after a non-digit
            (re.compile(f"({punct})({not_number})"), r" \1 \2"),  # punctuation before a non-digit
            (re.compile(f"({symbol})"), r" \1 ")]  # every symbol


@lru_cache(maxsize=2 ** 16)
def tokenize_intl(line: str) -> str:
    """sacrebleu's international tokenisation (mteval-v14 --international-tokenization)."""
    for pattern, repl in _intl_patterns(line.isascii()):
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def bleu_tokenize(line: str, method: str = "13a") -> str:
    """Tokenise one segment for BLEU: ``13a``, ``intl`` or ``none`` (already tokenised)."""
    if method == "13a":
        return tokenize_13a(line)
    if method == "intl":
        return tokenize_intl(line)
    check_choice("tokenize", method, TOKENIZERS)
    return line


# --- statistics and score ---------------------------------------------------------------------
@dataclass
class BLEUScore:
    """A BLEU score with the statistics it came from and the settings that produced it."""

    score: float
    counts: list[float]
    totals: list[float]
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    signature: str

    def __str__(self) -> str:
        prec = "/".join(f"{p:.1f}" for p in self.precisions)
        ratio = self.sys_len / self.ref_len if self.ref_len else 0
        return (f"BLEU|{self.signature} = {self.score:.2f} {prec} (BP = {self.bp:.3f} ratio = {ratio:.3f} "
                f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})")

    def as_dict(self) -> dict:
        return {"name": "BLEU", "score": self.score, "signature": self.signature, "counts": self.counts,
                "totals": self.totals, "precisions": self.precisions, "bp": self.bp,
                "sys_len": self.sys_len, "ref_len": self.ref_len}


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to the hypothesis length; the shorter one on a tie."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def segment_stats(hypothesis: str, references: Sequence[str], max_order: int = 4) -> list[int]:
    """[hyp_len, ref_len, matches per order..., totals per order...] of pre-tokenised text."""
    hyp = hypothesis.split()
    ref_max: Counter = Counter()
    ref_lens = []
    for ref in references:
        tokens = ref.split()
        ref_lens.append(len(tokens))
        for gram, count in _ngrams(tokens, max_order).items():
            if count > ref_max[gram]:
                ref_max[gram] = count
    correct, total = [0] * max_order, [0] * max_order
    for gram, count in _ngrams(hyp, max_order).items():
        total[len(gram) - 1] += count
        correct[len(gram) - 1] += min(count, ref_max.get(gram, 0))
    return [len(hyp), _closest_ref_len(len(hyp), ref_lens), *correct, *total]


def _log(x: float) -> float:
    return -9999999999 if x == 0.0 else math.log(x)  # sacrebleu's stand-in for log 0


def bleu_from_stats(stats: Sequence[float], *, smooth_method: str = "exp", smooth_value: float | None = None,
                    effective_order: bool = False, max_order: int = 4, signature: str = "") -> BLEUScore:
    """BLEU from summed segment statistics (brevity penalty times the geometric mean of precisions)."""
    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct = list(stats[2:2 + max_order])
    total = list(stats[2 + max_order:2 + 2 * max_order])
    if smooth_value is None:
        smooth_value = SMOOTH_DEFAULTS[smooth_method]
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * max_order

    def result(score: float) -> BLEUScore:
        return BLEUScore(score, correct, total, precisions, bp, sys_len, ref_len, signature)

    if not any(correct):
        return result(0.0)
    divisor = 1.0  # the 'exp' smoothing of mteval: 1/2, 1/4, ... for each order with no match
    order = max_order
    for n in range(1, max_order + 1):
        if smooth_method == "add-k" and n > 1:
            correct[n - 1] += smooth_value
            total[n - 1] += smooth_value
        if total[n - 1] == 0:
            break
        if effective_order:
            order = n
        if correct[n - 1] == 0:
            if smooth_method == "exp":
                divisor *= 2
                precisions[n - 1] = 100.0 / (divisor * total[n - 1])
            elif smooth_method == "floor":
                precisions[n - 1] = 100.0 * smooth_value / total[n - 1]
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    return result(bp * math.exp(sum(_log(p) for p in precisions[:order]) / order))


def bleu_signature(nrefs: int | str, *, lowercase: bool, tokenize: str, smooth_method: str,
                   smooth_value: float | None, effective_order: bool) -> str:
    """sacrebleu's signature string for these settings (with lmlab's version)."""
    smooth = smooth_method
    if SMOOTH_DEFAULTS[smooth_method] is not None:
        smooth += f"[{(smooth_value if smooth_value is not None else SMOOTH_DEFAULTS[smooth_method]):.2f}]"
    return (f"nrefs:{nrefs}|case:{'lc' if lowercase else 'mixed'}|eff:{'yes' if effective_order else 'no'}"
            f"|tok:{tokenize}|smooth:{smooth}|version:{VERSION}")


def reference_sets(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]]) -> list[list[str]]:
    """Transpose reference streams into one list of references per hypothesis (None = missing)."""
    if isinstance(references, str) or not references or isinstance(references[0], str):
        raise ConfigError("references must be a list of reference streams (lists of strings)",
                          "pass [refs] for a single reference per segment")
    for stream in references:
        if len(stream) != len(hypotheses):
            raise InputError(f"a reference stream has {len(stream)} segments but there are "
                             f"{len(hypotheses)} hypotheses", "give one line per segment in every file")
    sets = [[r for r in refs if r is not None] for refs in zip(*references, strict=True)]
    if any(not refs for refs in sets):
        raise InputError("a segment has no reference", "give at least one reference per segment")
    return sets


def nrefs_of(sets: list[list[str]]) -> int | str:
    """The number of references per segment, or "var" when it varies (as sacrebleu)."""
    counts = {len(refs) for refs in sets}
    return counts.pop() if len(counts) == 1 else "var"


def _check(smooth_method: str, tokenizer: str, smooth_value: float | None = None) -> None:
    check_choice("smooth_method", smooth_method, tuple(SMOOTH_DEFAULTS))
    check_choice("tokenize", tokenizer, TOKENIZERS)
    if smooth_value is not None:
        if smooth_method not in ("floor", "add-k"):
            raise ConfigError(f"smooth_value applies to the floor and add-k smoothings, not {smooth_method}",
                              "leave it out, or choose smooth_method floor / add-k")
        check_number("smooth_value", smooth_value, low=0.0, low_inclusive=smooth_method == "add-k")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, smooth_method: str = "exp",
                smooth_value: float | None = None, lowercase: bool = False, tokenize: str = "13a",
                use_effective_order: bool = False, max_ngram_order: int = 4) -> BLEUScore:
    """Corpus BLEU: n-gram statistics summed over segments, then one score (as sacrebleu)."""
    _check(smooth_method, tokenize, smooth_value)
    sets = reference_sets(hypotheses, references)
    totals = [0] * (2 + 2 * max_ngram_order)

    def prep(s: str) -> str:
        return bleu_tokenize(s.lower() if lowercase else s, tokenize)

    for hyp, refs in zip(hypotheses, sets, strict=True):
        stats = segment_stats(prep(hyp.rstrip()), [prep(r.rstrip()) for r in refs], max_ngram_order)
        totals = [a + b for a, b in zip(totals, stats, strict=True)]
    sig = bleu_signature(nrefs_of(sets), lowercase=lowercase, tokenize=tokenize, smooth_method=smooth_method,
                         smooth_value=smooth_value, effective_order=use_effective_order)
    return bleu_from_stats(totals, smooth_method=smooth_method, smooth_value=smooth_value,
                           effective_order=use_effective_order, max_order=max_ngram_order, signature=sig)


def sentence_bleu(hypothesis: str, references: Sequence[str], *, smooth_method: str = "exp",
                  smooth_value: float | None = None, lowercase: bool = False, tokenize: str = "13a",
                  use_effective_order: bool = True, max_ngram_order: int = 4) -> BLEUScore:
    """BLEU of one segment against its references (effective order on by default, as sacrebleu)."""
    return corpus_bleu([hypothesis], [[r] for r in references], smooth_method=smooth_method,
                       smooth_value=smooth_value, lowercase=lowercase, tokenize=tokenize,
                       use_effective_order=use_effective_order, max_ngram_order=max_ngram_order)

