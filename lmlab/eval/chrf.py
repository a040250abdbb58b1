"""chrF and chrF++ as sacrebleu computes them: character (and word) n-gram F-beta.

chrF averages precision and recall over character n-gram orders 1–6 (whitespace removed)
and combines them with beta = 2; chrF++ adds word unigrams and bigrams (``word_order=2``).
Each segment is scored against the reference that gives it the best F; corpus chrF sums
the statistics of those best matches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .bleu import VERSION, nrefs_of, reference_sets

PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


@dataclass
class CHRFScore:
    """A chrF score with the settings that produced it."""

    score: float
    name: str
    signature: str

    def __str__(self) -> str:
        return f"{self.name}|{self.signature} = {self.score:.2f}"

    def as_dict(self) -> dict:
        return {"name": self.name, "score": self.score, "signature": self.signature}


def _split_punctuation(sentence: str) -> list[str]:
    """Words, with one leading or trailing punctuation mark split off (sacrebleu's chrF++ rule)."""
    words: list[str] = []
    for w in sentence.split():
        if len(w) > 1 and w[-1] in PUNCTUATION:
            words += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in PUNCTUATION:
            words += [w[0], w[1:]]
        else:
            words.append(w)
    return words


def _all_ngrams(text: str, char_order: int, word_order: int, whitespace: bool) -> list[Counter]:
    chars = text if whitespace else "".join(text.split())
    grams = [Counter(chars[i:i + n] for i in range(len(chars) - n + 1)) for n in range(1, char_order + 1)]
    if word_order:
        words = _split_punctuation(text)
        grams += [Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
                  for n in range(1, word_order + 1)]
    return grams


def _match_stats(hyp: Counter, ref: Counter) -> list[int]:
    matches = sum(min(c, ref[g]) for g, c in hyp.items() if g in ref)
    return [sum(hyp.values()) if ref else 0, sum(ref.values()), matches]


def chrf_from_stats(stats: Sequence[int], beta: float = 2, eps_smoothing: bool = False) -> float:
    """chrF (0–100) from [hyp, ref, match] counts per order, all orders concatenated."""
    factor = beta ** 2
    eps = 1e-16
    orders = len(stats) // 3
    score = avg_prec = avg_rec = 0.0
    effective = 0
    for i in range(orders):
        n_hyp, n_ref, n_match = stats[3 * i:3 * i + 3]
        prec = n_match / n_hyp if n_hyp > 0 else eps
        rec = n_match / n_ref if n_ref > 0 else eps
        denom = factor * prec + rec
        score += (1 + factor) * prec * rec / denom if denom > 0 else eps
        if n_hyp > 0 and n_ref > 0:  # sacrebleu's effective-order averaging
            avg_prec += prec
            avg_rec += rec
            effective += 1
    if eps_smoothing:
        return 100 * score / orders
    if effective == 0:
        return 0.0
    avg_prec /= effective
    avg_rec /= effective
    if avg_prec + avg_rec == 0:
        return 0.0
    return 100 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)


def segment_stats(hypothesis: str, references: Sequence[str], *, char_order: int = 6, word_order: int = 0,
                  beta: float = 2, whitespace: bool = False, eps_smoothing: bool = False) -> list[int]:
    """The statistics of ``hypothesis`` against whichever reference gives the best chrF."""
    hyp = _all_ngrams(hypothesis, char_order, word_order, whitespace)
    best: list[int] = []
    best_f = -1.0
    for ref in references:
        stats = [x for h, r in zip(hyp, _all_ngrams(ref, char_order, word_order, whitespace), strict=True)
                 for x in _match_stats(h, r)]
        f = chrf_from_stats(stats, beta, eps_smoothing)
        if f > best_f:
            best, best_f = stats, f
    return best


def chrf_signature(nrefs: int | str, *, lowercase: bool, char_order: int, word_order: int, whitespace: bool,
                   eps_smoothing: bool) -> str:
    """sacrebleu's chrF signature for these settings (with lmlab's version)."""
    return (f"nrefs:{nrefs}|case:{'lc' if lowercase else 'mixed'}|eff:{'no' if eps_smoothing else 'yes'}"
            f"|nc:{char_order}|nw:{word_order}|space:{'yes' if whitespace else 'no'}|version:{VERSION}")


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, char_order: int = 6,
                word_order: int = 0, beta: float = 2, lowercase: bool = False, whitespace: bool = False,
                eps_smoothing: bool = False) -> CHRFScore:
    """Corpus chrF (``word_order=2`` for chrF++), references as streams like sacrebleu."""
    sets = reference_sets(hypotheses, references)
    orders = char_order + word_order
    totals = [0] * (3 * orders)
    for hyp, refs in zip(hypotheses, sets, strict=True):
        if lowercase:
            hyp, refs = hyp.lower(), [r.lower() for r in refs]
        stats = segment_stats(hyp, refs, char_order=char_order, word_order=word_order, beta=beta,
                              whitespace=whitespace, eps_smoothing=eps_smoothing)
        totals = [a + b for a, b in zip(totals, stats, strict=True)]
    sig = chrf_signature(nrefs_of(sets), lowercase=lowercase, char_order=char_order, word_order=word_order,
                         whitespace=whitespace, eps_smoothing=eps_smoothing)
    return CHRFScore(chrf_from_stats(totals, beta, eps_smoothing), f"chrF{beta:g}" + "+" * word_order, sig)


def sentence_chrf(hypothesis: str, references: Sequence[str], **settings) -> CHRFScore:
    """chrF of one segment against its references (same settings as ``corpus_chrf``)."""
    return corpus_chrf([hypothesis], [[r] for r in references], **settings)
