"""Training a Unigram LM tokenizer (Kudo 2018), as SentencePiece does.

Seed: the most frequent substrings of the words (score = frequency × length). Then rounds
of EM — expected piece counts by forward–backward over each word's lattice, M-step with the
Bayesian (digamma) update — followed by pruning: each piece's loss is how much the corpus
likelihood drops when its occurrences are re-segmented without it; the pieces with the
smallest loss go, ``shrinking_factor`` at a time, until the target size. Single characters
are always kept, so every seen character stays encodable.
"""

from __future__ import annotations

import math
from collections import Counter

from ..core.errors import DataError
from ..core.progress import progress
from .models import Unigram

EXPECTED_FREQUENCY_THRESHOLD = 0.5


def digamma(x: float) -> float:
    """ψ(x) by the recurrence ψ(x) = ψ(x+1) − 1/x and the asymptotic series (x > 0)."""
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return result + math.log(x) - 0.5 / x - f * (1 / 12 - f * (1 / 120 - f * (1 / 252 - f * (1 / 240 - f / 132))))


def seed_pieces(word_counts: dict[str, int], seed_size: int, max_piece_length: int,
                boundary: str) -> tuple[list[tuple[str, float]], set[str]]:
    """The seed vocabulary (piece, log-probability) and the set of single characters."""
    chars: Counter[str] = Counter()
    subs: Counter[str] = Counter()
    for word, n in progress(word_counts.items(), desc="seeding substrings", unit="word"):
        L = len(word)
        for i in range(L):
            chars[word[i]] += n
            for j in range(i + 2, min(L, i + max_piece_length) + 1):
                sub = word[i:j]
                if boundary and boundary in sub[1:]:
                    break  # the word boundary marker only begins a piece
                subs[sub] += n
    best = sorted(subs.items(), key=lambda kv: (-kv[1] * len(kv[0]), kv[0]))[:max(0, seed_size - len(chars))]
    pieces = list(chars.items()) + [(p, c * len(p)) for p, c in best]
    total = sum(c for _, c in pieces)
    return [(p, math.log(c) - math.log(total)) for p, c in pieces], set(chars)


def _e_step(model: Unigram, words: list[tuple[str, int]]) -> tuple[list[float], float]:
    """Expected counts of every piece under the current model, and the corpus log-likelihood."""
    expected = [0.0] * len(model.vocab)
    loglik = 0.0
    for word, n in words:
        ends = model._lattice(word)
        L = len(word)
        alpha = [-math.inf] * (L + 1)
        alpha[0] = 0.0
        for e in range(1, L + 1):
            alpha[e] = _lse([alpha[b] + s for b, _, s in ends[e]])
        beta = [-math.inf] * (L + 1)
        beta[L] = 0.0
        for e in range(L, 0, -1):
            be = beta[e]
            for b, _, s in ends[e]:
                beta[b] = _lse2(beta[b], be + s)
        z = alpha[L]
        loglik += n * z
        for e in range(1, L + 1):
            be = beta[e]
            for b, tid, s in ends[e]:
                if tid >= 0:
                    expected[tid] += n * math.exp(alpha[b] + s + be - z)
    return expected, loglik


def _m_step(pieces: list[tuple[str, float]], expected: list[float], required: set[str]) -> list[tuple[str, float]]:
    kept = [(p, f) for (p, _), f in zip(pieces, expected, strict=True)
            if f >= EXPECTED_FREQUENCY_THRESHOLD or p in required]
    logsum = digamma(sum(f for _, f in kept) + 1e-12)
    return [(p, digamma(max(f, 1e-12)) - logsum) for p, f in kept]


def _prune(pieces: list[tuple[str, float]], words: list[tuple[str, int]], required: set[str],
           target: int) -> list[tuple[str, float]]:
    """Drop the pieces whose removal costs the corpus least likelihood, down to ``target``."""
    model = Unigram(pieces, unk_id=None)
    freq = [0.0] * len(pieces)
    inverted: list[list[int]] = [[] for _ in pieces]
    for w, (word, n) in enumerate(words):
        for tid, _, _ in model.tokenize(word):
            freq[tid] += n
            inverted[tid].append(w)
    total = sum(freq) or 1.0
    loss: list[tuple[float, int]] = []
    for i, (piece, _score) in enumerate(pieces):
        if piece in required:
            continue
        if freq[i] == 0:
            loss.append((-math.inf, i))  # never used by the best segmentations: free to drop
            continue
        alt = _alternative(model, piece, i)
        logsum_alt = math.log(total + freq[i] * (len(alt) - 1))
        logprob_alt = sum(math.log(freq[a] + freq[i]) - logsum_alt if freq[a] + freq[i] > 0 else -1e9
                          for a in alt)
        f = sum(words[w][1] for w in set(inverted[i])) / total
        loss.append((f * (math.log(freq[i]) - math.log(total) - logprob_alt), i))
    n_remove = max(0, len(pieces) - target)
    drop = {i for _, i in sorted(loss)[:n_remove]}
    return [p for i, p in enumerate(pieces) if i not in drop]


def _alternative(model: Unigram, piece: str, own_id: int) -> list[int]:
    """The best segmentation of ``piece`` that does not use the piece itself."""
    ends = model._lattice(piece)
    L = len(piece)
    best = [-math.inf] * (L + 1)
    back = [(0, -1)] * (L + 1)
    best[0] = 0.0
    for e in range(1, L + 1):
        for b, tid, s in ends[e]:
            if tid == own_id:
                continue
            if best[b] + s > best[e]:
                best[e], back[e] = best[b] + s, (b, tid)
    out, e = [], L
    while e > 0:
        b, tid = back[e]
        out.append(tid)
        e = b
    return out


def _lse(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _lse2(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def learn_unigram(word_counts: dict[str, int], vocab_size: int, *, seed_size: int | None = None,
                  max_piece_length: int = 16, shrinking_factor: float = 0.75, em_iterations: int = 2,
                  boundary: str = "\u2581") -> list[tuple[str, float]]:
    """Unigram pieces with their log-probabilities (highest first), ``vocab_size`` of them at most."""
    if not word_counts:
        raise DataError("no words to train a Unigram model on", "train on a non-empty corpus")
    words = sorted(word_counts.items())
    pieces, required = seed_pieces(word_counts, seed_size or max(10 * vocab_size, 20_000), max_piece_length, boundary)
    bar = progress(desc="Unigram EM + pruning", unit="round")
    while True:
        for _ in range(em_iterations):
            expected, _ = _e_step(Unigram(pieces, unk_id=None), words)
            pieces = _m_step(pieces, expected, required)
        bar.update(1)
        if len(pieces) <= vocab_size:
            break
        target = max(vocab_size, int(len(pieces) * shrinking_factor))
        pieces = _prune(pieces, words, required, target)
    bar.close()
    return sorted(pieces, key=lambda ps: (-ps[1], ps[0]))
