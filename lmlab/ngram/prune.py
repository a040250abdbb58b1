"""Pruning a backoff model: drop n-grams by count threshold or by Stolcke's relative entropy.

A dropped n-gram hw is afterwards scored by backing off, bow(h) · p(w|h'); the backoff
weight of every context that lost an extension is recomputed so each distribution still
sums to one (as SRILM does): bow(h) = (1 − Σ p(w|h)) / (1 − Σ p(w|h')) over the kept
extensions w. An n-gram is kept whenever it is the prefix or the suffix of a kept longer
one, so the tables stay complete (every listed n-gram's prefix and suffix are listed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_number
from .model import NgramLM


def _check_prunable(lm: NgramLM) -> None:
    if lm.flat and lm.order > 1:
        raise ModelError("an add-k model has no backoff form, so it cannot be pruned",
                         "prune a backoff or interpolated model (e.g. --smoothing kn or mkn)")


def prune_by_count(lm: NgramLM, thresholds: Sequence[int]) -> NgramLM:
    """Drop n-grams of order n whose training count is ≤ ``thresholds[n-1]`` (0 keeps all; unigrams are kept)."""
    _check_prunable(lm)
    if lm.counts is None:
        raise ModelError("this model carries no training counts (an ARPA file has none)",
                         "prune at training time with --prune, use --entropy, or train a model directory")
    thresholds = list(thresholds) + [thresholds[-1]] * (lm.order - len(thresholds)) if thresholds else []
    if len(thresholds) != lm.order:
        raise ConfigError(f"give one count threshold per order (the model has order {lm.order})")
    for t in thresholds:
        check_number("count threshold", t, low=0, integer=True)
    if thresholds[0] != 0:
        raise ConfigError("unigrams cannot be pruned by count", "use 0 as the first threshold, e.g. 0 0 1")
    drop = [np.zeros(len(lm.keys[0]), dtype=bool)]
    drop += [np.asarray(lm.counts[n - 1]) <= thresholds[n - 1] if thresholds[n - 1] > 0
             else np.zeros(len(lm.keys[n - 1]), dtype=bool) for n in range(2, lm.order + 1)]
    return remove_ngrams(lm, drop)


def _context_sums(lm: NgramLM, n: int, suffix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For order-n n-grams: prefix rows, Σ p(w|h) and Σ p(w|h') per order n-1 context."""
    prefix = lm.keys[n - 1] // lm.vocab_size
    size = len(lm.keys[n - 2])
    p_high = np.exp(lm.logprobs[n - 1])
    p_low = np.exp(lm.logprobs[n - 2][suffix])
    return (prefix, np.bincount(prefix, weights=p_high, minlength=size),
            np.bincount(prefix, weights=p_low, minlength=size))


def entropy_increase(lm: NgramLM) -> list[np.ndarray]:
    """Stolcke's Δ relative entropy (nats) of removing each n-gram alone (order 1: +inf, never pruned)."""
    _check_prunable(lm)
    if not lm.normalized:
        raise ModelError("entropy pruning needs a normalised model; stupid backoff is not one",
                         "prune it by count instead")
    suffixes = lm.suffix_rows()
    history = [np.where(np.arange(lm.vocab_size) == lm.bos_id, 0.0, lm.logprobs[0])]  # log P(h); P(<s>) = 1
    for n in range(2, lm.order + 1):
        history.append(history[n - 2][lm.keys[n - 1] // lm.vocab_size] + lm.logprobs[n - 1])
    out = [np.full(lm.vocab_size, np.inf)]
    for n in range(2, lm.order + 1):
        prefix, high, low = _context_sums(lm, n, suffixes[n - 1])
        num, den = 1.0 - high, 1.0 - low
        p = np.exp(lm.logprobs[n - 1])
        p_low = np.exp(lm.logprobs[n - 2][suffixes[n - 1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            log_bow = np.log(np.clip(num, 1e-300, None)) - np.log(np.clip(den, 1e-300, None))
            log_bow_new = np.log(num[prefix] + p) - np.log(den[prefix] + p_low)
            delta = -np.exp(history[n - 2][prefix]) * (
                p * (np.log(p_low) + log_bow_new - np.log(p))
                + np.clip(num[prefix], 0.0, None) * (log_bow_new - log_bow[prefix]))
        out.append(np.nan_to_num(delta, nan=np.inf))
    return out


def prune_by_entropy(lm: NgramLM, threshold: float) -> NgramLM:
    """Stolcke pruning: drop each n-gram whose removal raises perplexity by less than ``threshold``
    (relative, e.g. 1e-8; SRILM's ``-prune``), judged one n-gram at a time."""
    check_number("threshold", threshold, low=0.0)
    delta = entropy_increase(lm)
    return remove_ngrams(lm, [np.expm1(d) < threshold for d in delta])


def remove_ngrams(lm: NgramLM, drop: list[np.ndarray]) -> NgramLM:
    """A copy of ``lm`` without the n-grams marked in ``drop`` (per order), backoffs renormalised."""
    _check_prunable(lm)
    V, N = lm.vocab_size, lm.order
    suffixes = lm.suffix_rows()
    keep = [np.ones(V, dtype=bool)] + [~np.asarray(d, dtype=bool) for d in drop[1:]]
    for n in range(N, 2, -1):  # a kept n-gram keeps its prefix and its suffix
        kept = keep[n - 1]
        keep[n - 2][lm.keys[n - 1][kept] // V] = True
        keep[n - 2][suffixes[n - 1][kept]] = True
    keys, logprobs, logbows, counts = [lm.keys[0]], [lm.logprobs[0]], [lm.logbows[0].copy()], None
    new_row = np.arange(V)
    for n in range(2, N + 1):
        k = keep[n - 1]
        prefix, word = np.divmod(lm.keys[n - 1][k], V)
        keys.append(new_row[prefix] * V + word)
        logprobs.append(lm.logprobs[n - 1][k])
        logbows.append(lm.logbows[n - 1][k].copy())
        new_row = np.cumsum(k) - 1
    if lm.counts is not None:
        counts = [np.asarray(c)[keep[n]] for n, c in enumerate(lm.counts)]
    pruned = NgramLM(keys, logprobs, logbows, vocab_size=V, smoothing=lm.smoothing, flat=lm.flat,
                     normalized=lm.normalized, bos_id=lm.bos_id, eos_id=lm.eos_id, pad_id=lm.pad_id,
                     unk_id=lm.unk_id, params=lm.params, counts=counts)
    if lm.normalized:
        _renormalise(pruned, lm, keep)
    return pruned


def _renormalise(pruned: NgramLM, original: NgramLM, keep: list[np.ndarray]) -> None:
    """Recompute the backoff weight of each context that lost an extension."""
    V = pruned.vocab_size
    suffixes = pruned.suffix_rows()
    for n in range(2, pruned.order + 1):
        lost = np.bincount(original.keys[n - 1][~keep[n - 1]] // V, minlength=len(original.keys[n - 2])) > 0
        lost = lost[keep[n - 2]]
        _, high, low = _context_sums(pruned, n, suffixes[n - 1])
        with np.errstate(divide="ignore"):
            bow = np.log(np.clip(1.0 - high, 0.0, None)) - np.log(np.clip(1.0 - low, 1e-300, None))
        pruned.logbows[n - 2] = np.where(lost, bow, pruned.logbows[n - 2])
