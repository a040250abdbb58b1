"""Estimators: raw n-gram counts → a backoff table (probability and backoff weight per n-gram).

Every estimator ends in the same ARPA-shaped form: the listed n-gram hw carries the model's
full probability p(w|h); an unlisted one costs bow(h) · p(w|h') (bow = 1 for an unlisted
context). Interpolated estimators (Jelinek-Mercer, absolute discounting, Witten-Bell,
Kneser-Ney, modified Kneser-Ney) fit this exactly with bow(h) = γ(h); backoff estimators
(Katz, absolute-discount backoff) compute bow(h) so each distribution sums to one. Add-k is
``flat``: an unseen word gets k / (c(h) + k|V|) whatever its lower-order probability, so it
backs off straight to the uniform distribution. Stupid backoff is not normalised.

The bottom of every recursion is the uniform distribution over the predictable ids (all but
``<s>`` and padding), as in Chen & Goodman and KenLM's lmplz.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.validate import check_choice, check_number
from .counts import NgramCounts

SMOOTHINGS = ("mle", "add-k", "jm", "abs", "abs-backoff", "wb", "katz", "kn", "mkn", "stupid")
DESCRIPTIONS = {
    "mle": "maximum likelihood (no smoothing)",
    "add-k": "add-k (Laplace when k = 1)",
    "jm": "Jelinek-Mercer interpolation, weights fitted on held-out data",
    "abs": "interpolated absolute discounting",
    "abs-backoff": "absolute discounting with backoff",
    "wb": "Witten-Bell interpolation",
    "katz": "Katz backoff with Good-Turing discounts",
    "kn": "interpolated Kneser-Ney",
    "mkn": "interpolated modified Kneser-Ney (Chen & Goodman; KenLM's lmplz)",
    "stupid": "stupid backoff (scores, not probabilities)",
}
KATZ_MAX_COUNT = 5  # Good-Turing discounts apply to counts 1..5 (Katz 1987)


@dataclass
class Estimate:
    """Natural-log probabilities and backoff weights per order, plus how they were made."""

    logprobs: list[np.ndarray]
    logbows: list[np.ndarray]
    flat: bool = False
    normalized: bool = True
    params: dict = field(default_factory=dict)


def predictable_mask(counts: NgramCounts) -> np.ndarray:
    """Ids that can be a next token: all but ``<s>`` and padding."""
    mask = np.ones(counts.vocab_size, dtype=bool)
    for i in (counts.bos_id, counts.pad_id):
        if i is not None:
            mask[i] = False
    return mask


def _prefixes(counts: NgramCounts, n: int) -> tuple[np.ndarray, int]:
    """Prefix row of every order-n n-gram, and the number of order n-1 rows."""
    return counts.keys[n - 1] // counts.vocab_size, len(counts.keys[n - 2])


def _per_context(prefix: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(prefix, weights=np.asarray(values, dtype=np.float64), minlength=size)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _interpolated(counts: NgramCounts, alpha: list[np.ndarray], gamma: list) -> tuple[list, list]:
    """p_n = α_n + γ_n(h) · p_{n-1}(w|h'); ``gamma[0]`` is the weight of the uniform distribution."""
    mask = predictable_mask(counts)
    probs = [np.where(mask, alpha[0] + gamma[0] / mask.sum(), 0.0)]
    bows = []
    for n in range(2, counts.order + 1):
        prefix, _ = _prefixes(counts, n)
        probs.append(alpha[n - 1] + gamma[n - 1][prefix] * probs[n - 2][counts.suffix[n - 1]])
        bows.append(gamma[n - 1])
    bows.append(np.ones(len(counts.keys[-1])))
    return [_log(p) for p in probs], [_log(b) for b in bows]


def _backoff(counts: NgramCounts, unigram_star: np.ndarray, star: list[np.ndarray]) -> tuple[list, list]:
    """Katz-style backoff: discounted p*(hw) for seen n-grams, bow(h) renormalising the rest."""
    mask = predictable_mask(counts)
    unseen = mask & (counts.counts[0] == 0)
    left = max(0.0, 1.0 - float(unigram_star[mask].sum()))
    if unseen.any():
        p1 = np.where(unseen, left / unseen.sum(), unigram_star)
    else:  # every id was seen: nothing to give the left-over mass to, so renormalise
        p1 = unigram_star / unigram_star[mask].sum()
    probs, bows = [np.where(mask, p1, 0.0)], []
    for n in range(2, counts.order + 1):
        prefix, size = _prefixes(counts, n)
        lower = probs[n - 2][counts.suffix[n - 1]]
        num = 1.0 - _per_context(prefix, star[n - 1], size)
        den = 1.0 - _per_context(prefix, lower, size)
        seen = np.bincount(prefix, minlength=size) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            bow = np.where(seen, np.clip(num, 0.0, None) / np.clip(den, 1e-300, None), 1.0)
        probs.append(star[n - 1])
        bows.append(bow)
    bows.append(np.ones(len(counts.keys[-1])))
    return [_log(p) for p in probs], [_log(b) for b in bows]


def _context_stats(counts: NgramCounts, n: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefix of each order-n n-gram, total of ``values`` per context, distinct extensions per context)."""
    prefix, size = _prefixes(counts, n)
    return prefix, _per_context(prefix, values, size), np.bincount(prefix, minlength=size).astype(np.float64)


def _safe_div(num: np.ndarray, den: np.ndarray, default: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), default)


def count_of_counts(values: np.ndarray, upto: int) -> np.ndarray:
    """n_r = number of n-grams with count r, for r = 0..upto (index r)."""
    v = np.asarray(values, dtype=np.int64)
    return np.bincount(v[(v > 0) & (v <= upto)], minlength=upto + 1)[: upto + 1].astype(np.float64)


def adjusted_counts(counts: NgramCounts) -> list[np.ndarray]:
    """Kneser-Ney counts: the highest order keeps raw counts; a lower-order n-gram counts its
    distinct left extensions, except that n-grams starting with ``<s>`` keep raw counts."""
    out = []
    first = np.arange(counts.vocab_size)
    for n in range(1, counts.order + 1):
        if n > 1:
            first = first[counts.keys[n - 1] // counts.vocab_size]
        if n == counts.order:
            out.append(counts.counts[n - 1].astype(np.float64))
            continue
        left = np.bincount(counts.suffix[n], minlength=len(counts.keys[n - 1])).astype(np.float64)
        starts_bos = first == counts.bos_id if n > 1 else np.zeros(len(left), dtype=bool)
        out.append(np.where(starts_bos, counts.counts[n - 1], left))
    return out


def _lmplz_statistics(counts: NgramCounts, values: list[np.ndarray], n: int) -> np.ndarray:
    """The counts that lmplz's counts-of-counts see for order n: the adjusted counts, except
    that the last lower-order n-gram it flushes enters with its raw count (``kenlm_last_position``).
    This moves D3+ of order 1 in the fourth digit on PTB; matching it keeps every n-gram's
    probability equal to lmplz's."""
    rows = counts.kenlm_last
    if rows is None or n >= counts.order or rows[n - 1] < 0:
        return values[n - 1]
    out = values[n - 1].copy()
    out[rows[n - 1]] = counts.counts[n - 1][rows[n - 1]]
    return out


def modified_kn_discounts(values: np.ndarray, order: int) -> np.ndarray:
    """D1, D2, D3+ from counts of counts (Chen & Goodman eq. 26), as [0, D1, D2, D3]."""
    n = count_of_counts(values, 4)
    if (n[1:] == 0).any():
        raise DataError(f"cannot estimate modified Kneser-Ney discounts for order {order}: some of the "
                        "counts-of-counts n1..n4 are zero", "the corpus is too small or artificial; "
                        "use a lower --order or --smoothing kn/wb")
    y = n[1] / (n[1] + 2 * n[2])
    d = np.array([0.0, 1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3]])
    if (d[1:] < 0).any() or (d[1:] > np.arange(1, 4)).any():
        raise DataError(f"modified Kneser-Ney discounts for order {order} are out of range ({d[1:]})",
                        "the corpus is too small or artificial; use --smoothing kn or wb")
    return d


def kn_discount(values: np.ndarray, order: int) -> float:
    """The single absolute discount D = n1 / (n1 + 2 n2) (Ney, Essen & Kneser)."""
    n = count_of_counts(values, 2)
    if n[1] == 0:
        raise DataError(f"cannot estimate a discount for order {order}: no n-gram occurs exactly once",
                        "pass an explicit --discount")
    return float(n[1] / (n[1] + 2 * n[2]))


def good_turing_discounts(values: np.ndarray, k: int = KATZ_MAX_COUNT) -> np.ndarray:
    """Katz's d_r for r = 0..k (d_r = 1 where the Good-Turing estimate is unusable)."""
    n = count_of_counts(values, k + 1)
    d = np.ones(k + 1)
    if n[1] == 0:
        return d
    common = (k + 1) * n[k + 1] / n[1]
    for r in range(1, k + 1):
        if n[r] == 0:
            continue
        r_star = (r + 1) * n[r + 1] / n[r]
        value = (r_star / r - common) / (1 - common) if common != 1 else 1.0
        if 0 < value <= 1:
            d[r] = value
    return d


def _fixed_discounts(smoothing: str, discount, order: int) -> list[np.ndarray] | None:
    """User-given discounts as [0, D1, D2, D3+] per order: one number (abs, kn), or for modified
    Kneser-Ney three numbers for every order or one triple per order."""
    if discount is None:
        return None
    values = [discount] if isinstance(discount, (int, float)) else list(discount)
    if smoothing == "mkn":
        triples = values if values and all(isinstance(v, (list, tuple)) for v in values) else [values] * order
        if len(triples) != order or any(len(t) != 3 for t in triples):
            raise ConfigError("modified Kneser-Ney takes three discounts D1 D2 D3+ (or one triple per order)",
                              "e.g. --discount 0.5 1 1.5")
    else:
        if len(values) != 1:
            raise ConfigError(f"{smoothing} takes one discount", "e.g. --discount 0.75")
        triples = [values * 3] * order
    for triple in triples:
        for i, d in enumerate(triple, 1):
            check_number("discount", d, low=0.0, high=float(i) if smoothing == "mkn" else 1.0)
    return [np.array([0.0, *t], dtype=np.float64) for t in triples]


def estimate(counts: NgramCounts, smoothing: str, *, k: float = 1.0, discount: float | list[float] | None = None,
             lambdas: list[float] | None = None, alpha: float = 0.4) -> Estimate:
    """Turn raw counts into an ``Estimate`` with one of ``SMOOTHINGS``.

    ``k``: add-k constant; ``discount``: fixed D for abs/abs-backoff/kn (default n1/(n1+2n2)), or
    D1, D2, D3+ for mkn (default: Chen & Goodman's estimates per order);
    ``lambdas``: Jelinek-Mercer weights of orders 1..N (fit them with ``fit_jm_lambdas``);
    ``alpha``: stupid-backoff factor.
    """
    check_choice("smoothing", smoothing, SMOOTHINGS)
    N, c = counts.order, counts.counts
    mask = predictable_mask(counts)
    total = float(c[0][mask].sum())
    if total == 0:
        raise DataError("the model saw no tokens", "train it on a non-empty corpus")
    if smoothing == "add-k":
        check_number("k", k, low=0.0, low_inclusive=False)
        v = float(mask.sum())
        probs = [np.where(mask, (c[0] + k) / (total + k * v), 0.0)]
        bows = []
        for n in range(2, N + 1):
            prefix, ctx, _ = _context_stats(counts, n, c[n - 1])
            probs.append((c[n - 1] + k) / (ctx[prefix] + k * v))
            bows.append(k * v / (ctx + k * v))
        bows.append(np.ones(len(counts.keys[-1])))
        return Estimate([_log(p) for p in probs], [_log(b) for b in bows], flat=True, params={"k": k})
    if smoothing == "stupid":
        check_number("alpha", alpha, low=0.0, high=1.0, low_inclusive=False)
    if smoothing in ("mle", "stupid"):
        probs = [np.where(mask, c[0] / total, 0.0)]
        bows = []
        for n in range(2, N + 1):
            prefix, ctx, types = _context_stats(counts, n, c[n - 1])
            probs.append(c[n - 1] / ctx[prefix])
            if smoothing == "mle":
                bows.append(np.where(types > 0, 0.0, 1.0))
            else:
                bows.append(np.full(len(ctx), alpha))
        bows.append(np.ones(len(counts.keys[-1])))
        params = {"alpha": alpha} if smoothing == "stupid" else {}
        return Estimate([_log(p) for p in probs], [_log(b) for b in bows],
                        normalized=smoothing == "mle", params=params)
    if smoothing == "jm":
        if lambdas is None or len(lambdas) != N:
            raise ConfigError(f"Jelinek-Mercer needs {N} interpolation weights (one per order)",
                              "fit them on held-out data with fit_jm_lambdas, or pass --heldout")
        for lam in lambdas:
            check_number("lambda", lam, low=0.0, high=1.0)
        alphas, gammas = [lambdas[0] * c[0] / total], [1.0 - lambdas[0]]
        for n in range(2, N + 1):
            prefix, ctx, _ = _context_stats(counts, n, c[n - 1])
            alphas.append(lambdas[n - 1] * c[n - 1] / ctx[prefix])
            gammas.append(np.where(ctx > 0, 1.0 - lambdas[n - 1], 1.0))
        logprobs, logbows = _interpolated(counts, alphas, gammas)
        return Estimate(logprobs, logbows, params={"lambdas": [float(x) for x in lambdas]})
    if smoothing == "wb":
        types1 = float((c[0][mask] > 0).sum())
        alphas, gammas = [c[0] / (total + types1)], [types1 / (total + types1)]
        for n in range(2, N + 1):
            prefix, ctx, types = _context_stats(counts, n, c[n - 1])
            alphas.append(c[n - 1] / (ctx[prefix] + types[prefix]))
            gammas.append(_safe_div(types, ctx + types, 1.0))
        logprobs, logbows = _interpolated(counts, alphas, gammas)
        return Estimate(logprobs, logbows)
    if smoothing in ("abs", "abs-backoff", "kn", "mkn"):
        values = adjusted_counts(counts) if smoothing in ("kn", "mkn") else [x.astype(np.float64) for x in c]
        fixed = _fixed_discounts(smoothing, discount, N)
        discounts: list = []
        for n in range(1, N + 1):
            if fixed is not None:
                discounts.append(fixed[n - 1])
            elif smoothing == "mkn":
                discounts.append(modified_kn_discounts(_lmplz_statistics(counts, values, n), n))
            else:
                d = kn_discount(values[n - 1], n)
                discounts.append(np.array([0.0, d, d, d]))
        d_of = [discounts[n - 1][np.minimum(values[n - 1], 3).astype(np.int64)] for n in range(1, N + 1)]
        v1 = np.where(mask, values[0], 0.0)
        sum1 = v1.sum()
        if smoothing == "abs-backoff":
            star = [np.where(v1 > 0, (v1 - d_of[0]) / sum1, 0.0)]
            for n in range(2, N + 1):
                prefix, ctx, _ = _context_stats(counts, n, values[n - 1])
                star.append((values[n - 1] - d_of[n - 1]) / ctx[prefix])
            logprobs, logbows = _backoff(counts, star[0], star)
        else:
            alphas = [np.where(v1 > 0, (v1 - d_of[0]) / sum1, 0.0)]
            gammas = [float(np.where(v1 > 0, d_of[0], 0.0).sum() / sum1)]
            for n in range(2, N + 1):
                prefix, size = _prefixes(counts, n)
                ctx = _per_context(prefix, values[n - 1], size)
                alphas.append((values[n - 1] - d_of[n - 1]) / ctx[prefix])
                gammas.append(_safe_div(_per_context(prefix, d_of[n - 1], size), ctx, 1.0))
            logprobs, logbows = _interpolated(counts, alphas, gammas)
        key = "discounts" if smoothing == "mkn" else "discount"
        shown = [x[1:].tolist() for x in discounts] if smoothing == "mkn" else [float(x[1]) for x in discounts]
        return Estimate(logprobs, logbows, params={key: shown})
    # katz
    star, gt = [], []
    for n in range(1, N + 1):
        d = good_turing_discounts(c[n - 1])
        gt.append(d[1:].tolist())
        disc = np.where(c[n - 1] <= KATZ_MAX_COUNT, d[np.minimum(c[n - 1], KATZ_MAX_COUNT)], 1.0)
        if n == 1:
            p = np.where(mask, disc * c[0] / total, 0.0)
            if p.sum() >= 1.0 - 1e-12 and (mask & (c[0] == 0)).any():  # same rule for the unigrams
                p = np.where(mask, c[0] / (total + 1.0), 0.0)
            star.append(p)
        else:
            prefix, ctx, _ = _context_stats(counts, n, c[n - 1])
            p = disc * c[n - 1] / ctx[prefix]
            # a context whose continuations are all more frequent than k (or whose Good-Turing estimates
            # are unusable) keeps no mass for unseen words; it reserves one count instead: p* = c / (c(h) + 1)
            full = _per_context(prefix, p, len(ctx)) >= 1.0 - 1e-12
            star.append(np.where(full[prefix], c[n - 1] / (ctx[prefix] + 1.0), p))
    logprobs, logbows = _backoff(counts, star[0], star)
    return Estimate(logprobs, logbows, params={"good_turing": gt})
