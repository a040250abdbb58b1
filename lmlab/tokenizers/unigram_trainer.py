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

import numpy as np

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


class Lattices:
    """Every word's lattice at once, as flat numpy edge arrays, for vectorized EM and Viterbi.

    Built once per pruning round (the set of pieces is fixed within it); EM only changes
    the scores. Edges are sorted by (end, word, start) so each (word, end) group is
    contiguous and ties in Viterbi go to the earliest start, as in ``Unigram.tokenize``.
    """

    def __init__(self, words: list[tuple[str, int]], pieces: list[tuple[str, float]], max_len: int) -> None:
        index = {p: i for i, (p, _) in enumerate(pieces)}
        prefixes = {p[:k] for p, _ in pieces for k in range(1, len(p) + 1)}
        W, B, E, P = [], [], [], []
        for w, (word, _) in enumerate(words):
            L = len(word)
            for b in range(L):
                for e in range(b + 1, min(L, b + max_len) + 1):
                    sub = word[b:e]
                    if sub not in prefixes:
                        break
                    i = index.get(sub)
                    if i is not None:
                        W.append(w)
                        B.append(b)
                        E.append(e)
                        P.append(i)
        order = np.lexsort((np.array(B), np.array(W), np.array(E)))
        self.W, self.B, self.E, self.P = (np.asarray(a, dtype=np.int64)[order] for a in (W, B, E, P))
        self.n_words, self.n_pieces = len(words), len(pieces)
        self.lengths = np.array([len(w) for w, _ in words], dtype=np.int64)
        self.counts = np.array([n for _, n in words], dtype=np.float64)
        self.max_len = int(self.lengths.max(initial=0))
        self._group()

    def _group(self) -> None:
        # contiguous (end, word) groups for the forward pass
        key = self.E * (self.n_words + 1) + self.W
        self.fwd_starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
        # the backward pass groups by (start, word)
        self.bwd_order = np.lexsort((self.W, self.B))
        bkey = (self.B * (self.n_words + 1) + self.W)[self.bwd_order]
        self.bwd_starts = np.flatnonzero(np.r_[True, bkey[1:] != bkey[:-1]]) if len(bkey) else np.zeros(0, np.int64)

    def subset(self, old: list[tuple[str, float]], new: list[tuple[str, float]]) -> Lattices:
        """The same lattices over a smaller vocabulary (edges of dropped pieces removed)."""
        index = {p: i for i, (p, _) in enumerate(new)}
        remap = np.array([index.get(p, -1) for p, _ in old], dtype=np.int64)
        mapped = remap[self.P]
        keep = mapped >= 0
        out = object.__new__(Lattices)
        out.__dict__.update(self.__dict__)
        out.W, out.B, out.E, out.P = self.W[keep], self.B[keep], self.E[keep], mapped[keep]
        out.n_pieces = len(new)
        out._group()
        return out

    def _grouped(self, values: np.ndarray, starts: np.ndarray, reduce: str) -> np.ndarray:
        top = np.maximum.reduceat(values, starts)
        if reduce == "max":
            return top
        spread = np.repeat(top, np.diff(np.r_[starts, len(values)]))
        return top + np.log(np.add.reduceat(np.exp(values - spread), starts))

    def _sweep(self, scores: np.ndarray, reduce: str) -> np.ndarray:
        """Forward scores (log-sum or max) at every (word, position)."""
        alpha = np.full((self.n_words, self.max_len + 1), -np.inf)
        alpha[:, 0] = 0.0
        bounds = np.searchsorted(self.E[self.fwd_starts], np.arange(self.max_len + 2))
        for e in range(1, self.max_len + 1):
            g0, g1 = bounds[e], bounds[e + 1]
            if g0 == g1:
                continue
            lo = self.fwd_starts[g0]
            hi = self.fwd_starts[g1] if g1 < len(self.fwd_starts) else len(self.E)
            v = alpha[self.W[lo:hi], self.B[lo:hi]] + scores[self.P[lo:hi]]
            alpha[self.W[self.fwd_starts[g0:g1]], e] = self._grouped(v, self.fwd_starts[g0:g1] - lo, reduce)
        return alpha

    def expected_counts(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        """Expected piece counts (forward–backward) and the corpus log-likelihood."""
        alpha = self._sweep(scores, "sum")
        rows = np.arange(self.n_words)
        z = alpha[rows, self.lengths]
        beta = np.full((self.n_words, self.max_len + 1), -np.inf)
        beta[rows, self.lengths] = 0.0
        W, B, E, P = (a[self.bwd_order] for a in (self.W, self.B, self.E, self.P))
        bounds = np.searchsorted(B[self.bwd_starts], np.arange(self.max_len + 1))
        for b in range(self.max_len - 1, -1, -1):
            g0, g1 = bounds[b], bounds[b + 1]
            if g0 == g1:
                continue
            lo = self.bwd_starts[g0]
            hi = self.bwd_starts[g1] if g1 < len(self.bwd_starts) else len(B)
            v = beta[W[lo:hi], E[lo:hi]] + scores[P[lo:hi]]
            beta[W[self.bwd_starts[g0:g1]], b] = self._grouped(v, self.bwd_starts[g0:g1] - lo, "sum")
        post = alpha[self.W, self.B] + scores[self.P] + beta[self.W, self.E] - z[self.W]
        weights = self.counts[self.W] * np.exp(post)
        return np.bincount(self.P, weights=weights, minlength=self.n_pieces), float(self.counts @ z)

    def viterbi_counts(self, scores: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        """How often each piece occurs in the best segmentations, and which words use it."""
        best = self._sweep(scores, "max")
        v = best[self.W, self.B] + scores[self.P]
        hits = np.flatnonzero(v == best[self.W, self.E])
        # edges are sorted by start within each (end, word) group: the first hit wins ties
        _, first = np.unique(self.E[hits] * (self.n_words + 1) + self.W[hits], return_index=True)
        hits = hits[first]
        choice = np.zeros((self.n_words, self.max_len + 1), dtype=np.int64)
        choice[self.W[hits], self.E[hits]] = hits
        choice, starts, piece_of = choice.tolist(), self.B.tolist(), self.P.tolist()
        counts = self.counts.tolist()
        freq = np.zeros(self.n_pieces)
        users: list[list[int]] = [[] for _ in range(self.n_pieces)]
        for w, e in enumerate(self.lengths.tolist()):
            row = choice[w]
            while e > 0:
                k = row[e]
                p = piece_of[k]
                freq[p] += counts[w]
                users[p].append(w)
                e = starts[k]
        return freq, users


def _m_step(pieces: list[tuple[str, float]], expected: np.ndarray, required: set[str]) -> list[tuple[str, float]]:
    """Bayesian M-step: score = ψ(count) − ψ(total). Pieces expected under 0.5 times go, except the
    single characters, which keep that floor count so that they stay usable (not −∞)."""
    kept = [(p, max(float(f), EXPECTED_FREQUENCY_THRESHOLD) if p in required else float(f))
            for (p, _), f in zip(pieces, expected, strict=True)
            if f >= EXPECTED_FREQUENCY_THRESHOLD or p in required]
    logsum = digamma(sum(f for _, f in kept))
    return [(p, digamma(f) - logsum) for p, f in kept]


def _prune(pieces: list[tuple[str, float]], words: list[tuple[str, int]], lattices: Lattices,
           required: set[str], target: int) -> list[tuple[str, float]]:
    """Drop the pieces whose removal costs the corpus least likelihood, down to ``target``."""
    model = Unigram(pieces, unk_id=None)
    freq, inverted = lattices.viterbi_counts(np.array([sc for _, sc in pieces]))
    total = float(freq.sum()) or 1.0
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


def learn_unigram(word_counts: dict[str, int], vocab_size: int, *, seed_size: int | None = None,
                  max_piece_length: int = 16, shrinking_factor: float = 0.75, em_iterations: int = 2,
                  boundary: str = "\u2581") -> list[tuple[str, float]]:
    """Unigram pieces with their log-probabilities (highest first), ``vocab_size`` of them at most."""
    if not word_counts:
        raise DataError("no words to train a Unigram model on", "train on a non-empty corpus")
    words = sorted(word_counts.items())
    pieces, required = seed_pieces(word_counts, seed_size or max(10 * vocab_size, 20_000), max_piece_length, boundary)
    lattices = Lattices(words, pieces, max_piece_length)
    bar = progress(desc="Unigram EM + pruning", unit="round")
    while True:
        for _ in range(em_iterations):
            expected, _ = lattices.expected_counts(np.array([sc for _, sc in pieces]))
            pieces, before = _m_step(pieces, expected, required), pieces
            lattices = lattices.subset(before, pieces)
        bar.update(1)
        if len(pieces) <= vocab_size:
            break
        target = max(vocab_size, int(len(pieces) * shrinking_factor))
        pieces, before = _prune(pieces, words, lattices, required, target), pieces
        lattices = lattices.subset(before, pieces)
    bar.close()
    return sorted(pieces, key=lambda ps: (-ps[1], ps[0]))
