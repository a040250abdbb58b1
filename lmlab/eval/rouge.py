"""ROUGE-N, ROUGE-L and ROUGE-Lsum as Google's ``rouge-score`` computes them.

Text is lowercased, cut at every non-alphanumeric character, and (optionally) words of
more than three letters are Porter-stemmed with lmlab's own stemmer. ROUGE-L is the longest
common subsequence of the two texts; ROUGE-Lsum treats each line as a sentence and counts
the union of the LCS hits of every reference sentence, without double counting.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..analysis.porter import stem as porter_stem
from ..core.errors import ConfigError
from .bleu import VERSION, nrefs_of, reference_sets

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_TOKEN = re.compile(r"^[a-z0-9]+$")


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 of one comparison."""

    precision: float
    recall: float
    fmeasure: float


def f1(precision: float, recall: float) -> float:
    """Harmonic mean, 0 when both are 0."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_tokenize(text: str, stem: bool = False) -> list[str]:
    """rouge-score's tokens: lowercase alphanumeric runs; words over 3 letters stemmed if asked."""
    tokens = re.split(r"\s+", _NON_ALNUM.sub(" ", text.lower()))
    if stem:
        tokens = [porter_stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if _TOKEN.match(t)]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(target: list[str], prediction: list[str], n: int) -> PRF:
    """Clipped n-gram overlap."""
    ref, hyp = _ngrams(target, n), _ngrams(prediction, n)
    overlap = sum(min(c, hyp[g]) for g, c in ref.items())
    precision = overlap / max(sum(hyp.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return PRF(precision, recall, f1(precision, recall))


def _lcs_table(a: list[str], b: list[str]) -> list[list[int]]:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        row, prev, ai = table[i], table[i - 1], a[i - 1]
        for j in range(1, len(b) + 1):
            row[j] = prev[j - 1] + 1 if ai == b[j - 1] else max(prev[j], row[j - 1])
    return table


def rouge_l(target: list[str], prediction: list[str]) -> PRF:
    """Longest common subsequence over the whole text."""
    if not target or not prediction:
        return PRF(0.0, 0.0, 0.0)
    lcs = _lcs_table(target, prediction)[-1][-1]
    precision, recall = lcs / len(prediction), lcs / len(target)
    return PRF(precision, recall, f1(precision, recall))


def _lcs_positions(ref: list[str], can: list[str]) -> list[int]:
    """Indices into ``ref`` of one longest common subsequence (rouge-score's backtrack)."""
    t = _lcs_table(ref, can)
    i, j, out = len(ref), len(can), []
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif t[i][j - 1] > t[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out[::-1]


def rouge_lsum(target: list[list[str]], prediction: list[list[str]]) -> PRF:
    """Summary-level LCS: per reference sentence, the union of its LCS with each predicted sentence."""
    m, n = sum(map(len, target)), sum(map(len, prediction))
    if not target or not prediction or not m or not n:
        return PRF(0.0, 0.0, 0.0)
    ref_left, hyp_left = Counter(), Counter()
    for s in target:
        ref_left.update(s)
    for s in prediction:
        hyp_left.update(s)
    hits = 0
    for ref in target:
        union = sorted(set().union(*(_lcs_positions(ref, can) for can in prediction)))
        for token in (ref[i] for i in union):
            if hyp_left[token] > 0 and ref_left[token] > 0:  # never count a token twice
                hits += 1
                hyp_left[token] -= 1
                ref_left[token] -= 1
    precision, recall = hits / n, hits / m
    return PRF(precision, recall, f1(precision, recall))


def rouge_scores(target: str, prediction: str, types: Sequence[str] = ROUGE_TYPES, *,
                 stem: bool = False) -> dict[str, PRF]:
    """ROUGE of ``prediction`` against ``target`` for each of ``types`` (rougeN, rougeL, rougeLsum)."""
    ref_tokens, hyp_tokens = rouge_tokenize(target, stem), rouge_tokenize(prediction, stem)
    out: dict[str, PRF] = {}
    for kind in types:
        if kind == "rougeL":
            out[kind] = rouge_l(ref_tokens, hyp_tokens)
        elif kind == "rougeLsum":  # one sentence per line
            out[kind] = rouge_lsum([rouge_tokenize(s, stem) for s in target.split("\n") if s],
                                   [rouge_tokenize(s, stem) for s in prediction.split("\n") if s])
        elif re.fullmatch(r"rouge[1-9]", kind):
            out[kind] = rouge_n(ref_tokens, hyp_tokens, int(kind[5:]))
        else:
            raise ConfigError(f"unknown ROUGE type {kind!r}", "use rouge1 … rouge9, rougeL or rougeLsum")
    return out


def rouge_multi(targets: Sequence[str], prediction: str, types: Sequence[str] = ROUGE_TYPES, *,
                stem: bool = False) -> dict[str, PRF]:
    """Per type, the scores against the reference with the best F-measure (the first on ties)."""
    per_ref = [rouge_scores(t, prediction, types, stem=stem) for t in targets]
    return {k: max(per_ref, key=lambda s: s[k].fmeasure)[k] for k in types}


def rouge_signature(stem: bool, nrefs: int | str) -> str:
    """What was computed, in sacrebleu's style."""
    return f"nrefs:{nrefs}|tok:rouge-score|stem:{'porter' if stem else 'no'}|version:{VERSION}"


def corpus_rouge(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                 types: Sequence[str] = ROUGE_TYPES, *, stem: bool = False) -> dict:
    """Mean precision, recall and F-measure per type over segments, with a signature."""
    sets = reference_sets(hypotheses, references)
    sums = {k: [0.0, 0.0, 0.0] for k in types}
    for hyp, refs in zip(hypotheses, sets, strict=True):
        for k, prf in rouge_multi(refs, hyp, types, stem=stem).items():
            for i, v in enumerate((prf.precision, prf.recall, prf.fmeasure)):
                sums[k][i] += v
    count = max(len(hypotheses), 1)
    result: dict = {k: sums[k][2] / count for k in types}
    result["detail"] = {k: {"precision": p / count, "recall": r / count, "fmeasure": f / count}
                        for k, (p, r, f) in sums.items()}
    result["signature"] = rouge_signature(stem, nrefs_of(sets))
    return result
