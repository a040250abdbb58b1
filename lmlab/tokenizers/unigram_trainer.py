"""Training a Unigram LM tokenizer (Kudo 2018), as SentencePiece does.

Seed: the most frequent substrings of the words (score = frequency × length). Then rounds
of EM — expected piece counts by forward–backward over each word's lattice, M-step with the
Bayesian (digamma) update — followed by pruning: each piece's loss is how much the corpus
likelihood drops when its occurrences are re-segmented without it; the pieces with the
smallest loss go, ``shrinking_factor`` at a time, until the target size. Single characters
are always kept, so every seen character stays encodable.
"""

from __future__ import annotations

from itertools import compress

import numpy as np

from ..core.errors import DataError
from ..core.progress import progress
from .bpe_trainer import code_points

EXPECTED_FREQUENCY_THRESHOLD = 0.5


def digamma(x: float) -> float:
    """ψ(x) by the recurrence ψ(x) = ψ(x+1) − 1/x and the asymptotic series (x > 0)."""
    from . import _unigram_kernels

    return float(_unigram_kernels.digamma(float(x)))


def digamma_scores(counts: np.ndarray) -> np.ndarray:
    """ψ(count) − ψ(total count) for each count (the Bayesian M-step's log-probabilities)."""
    from . import _unigram_kernels

    return _unigram_kernels.digamma_scores(np.ascontiguousarray(counts, dtype=np.float64))


def _laid_out(words: list[str]) -> tuple[str, np.ndarray, np.ndarray]:
    """The words joined, their code points, and where each starts (offsets, one more than words)."""
    text = "".join(words)
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)))
    return text, code_points(text), offsets


def _piece_table(names: list[str]) -> tuple[np.ndarray, ...]:
    """The pieces' code points, their offsets, and the kernels' lookup table over them (see
    ``_unigram_kernels.piece_table``)."""
    from . import _unigram_kernels

    _, cp, offsets = _laid_out(names)
    return cp, offsets, _unigram_kernels.piece_table(cp, offsets)


def seed(word_counts: dict[str, int], seed_size: int, max_piece_length: int,
         boundary: str) -> tuple[list[str], np.ndarray, np.ndarray, Lattices]:
    """The seed vocabulary: its pieces, their log-probabilities, which are single characters (the
    pieces that must stay), and the words' lattices over it (found while counting substrings).

    Every character (in order of first appearance), then the substrings of 2..``max_piece_length``
    characters (never holding ``boundary`` after their first) with the highest frequency ×
    length, ties in string order.
    """
    from . import _unigram_kernels

    _, cp, offsets = _laid_out(list(word_counts))
    weights = np.fromiter(word_counts.values(), dtype=np.int64, count=len(word_counts))
    uniq, first, inverse = np.unique(cp, return_index=True, return_inverse=True)
    per_char = np.bincount(inverse.ravel(), weights=np.repeat(weights, np.diff(offsets)), minlength=len(uniq))
    by_appearance = np.argsort(first, kind="stable")
    chars = {chr(c): int(n) for c, n in zip(uniq[by_appearance].tolist(), per_char[by_appearance].tolist(),
                                            strict=True)}
    words = sorted(word_counts.items())
    text, cp, offsets = _laid_out([w for w, _ in words])
    weights = np.array([n for _, n in words], dtype=np.int64)
    substrings, occurrences = _unigram_kernels.substring_occurrences(cp, offsets, weights, max_piece_length,
                                                                     ord(boundary) if boundary else -1)
    start, length, count = substrings.T
    score = count * length
    subs = [text[i:i + n] for i, n in zip(start.tolist(), length.tolist(), strict=True)]
    text_rank = np.empty(len(subs), dtype=np.int64)
    text_rank[sorted(range(len(subs)), key=subs.__getitem__)] = np.arange(len(subs))
    best = np.lexsort((text_rank, -score))[:max(0, seed_size - len(chars))]
    frequency = np.concatenate([np.fromiter(chars.values(), dtype=np.int64, count=len(chars)), score[best]])
    names = list(chars) + [subs[i] for i in best.tolist()]
    # piece ids of the occurrences: substrings by their rank, characters by first appearance
    substring_piece = np.full(len(subs), -1, dtype=np.int64)
    substring_piece[best] = len(chars) + np.arange(len(best))
    char_piece = np.empty(len(uniq), dtype=np.int64)
    char_piece[by_appearance] = np.arange(len(uniq))
    ref = occurrences[:, 3]
    is_char = ref < 0
    piece = np.where(is_char, char_piece[np.searchsorted(uniq, np.where(is_char, -1 - ref, 0))],
                     substring_piece[np.maximum(ref, 0)])
    edges = occurrences[piece >= 0]
    required = np.arange(len(names)) < len(chars)
    lattices = Lattices.from_edges(words, len(names), edges[:, :3], piece[piece >= 0])
    return names, _unigram_kernels.log_shares(frequency), required, lattices


class Lattices:
    """Every word's lattice at once, as flat numpy edge arrays, for vectorized EM and Viterbi.

    Built once per pruning round (the set of pieces is fixed within it); EM only changes
    the scores. Edges are sorted by (end, word, start) so each (word, end) group is
    contiguous and ties in Viterbi go to the earliest start, as in ``Unigram.tokenize``.
    """

    def __init__(self, words: list[tuple[str, int]], pieces: list[tuple[str, float]], max_len: int) -> None:
        from . import _unigram_kernels

        _, cp, offsets = _laid_out([w for w, _ in words])
        piece_cp, _, table = _piece_table([p for p, _ in pieces])
        edges = _unigram_kernels.lattice_edges(cp, offsets, piece_cp, table, max_len)
        self._build(words, len(pieces), edges[:, :3], edges[:, 3])

    @classmethod
    def from_edges(cls, words: list[tuple[str, int]], n_pieces: int, spans: np.ndarray,
                   pieces: np.ndarray) -> Lattices:
        """Lattices from their edges: rows of (word, start, end) in that order, and each one's piece."""
        out = object.__new__(cls)
        out._build(words, n_pieces, spans, pieces)
        return out

    def _build(self, words: list[tuple[str, int]], n_pieces: int, spans: np.ndarray, pieces: np.ndarray) -> None:
        # edges come in (word, start, end) order: a stable sort by end gives (end, word, start), one by
        # start gives the backward pass's (start, word, end)
        from . import _unigram_kernels

        W, B, E = spans.T
        order = _unigram_kernels.stable_order(E)
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        self.bwd_order = position[_unigram_kernels.stable_order(B)]
        self.W, self.B, self.E, self.P = (np.ascontiguousarray(a[order]) for a in (W, B, E, pieces))
        self.n_words, self.n_pieces = len(words), n_pieces
        self.lengths = np.array([len(w) for w, _ in words], dtype=np.int64)
        self.counts = np.array([n for _, n in words], dtype=np.float64)
        self.max_len = int(self.lengths.max(initial=0))
        self._group()

    def _group(self) -> None:
        """Where each (end, word) group of the forward pass and (start, word) group of the backward
        pass begins."""
        key = self.E * (self.n_words + 1) + self.W
        self.fwd_starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
        bkey = (self.B * (self.n_words + 1) + self.W)[self.bwd_order]
        self.bwd_starts = np.flatnonzero(np.r_[True, bkey[1:] != bkey[:-1]]) if len(bkey) else np.zeros(0, np.int64)

    def subset(self, kept: np.ndarray) -> Lattices:
        """The same lattices over the pieces where ``kept`` is true (renumbered in order; the edges
        of the others removed)."""
        remap = np.where(kept, np.cumsum(kept) - 1, -1)
        mapped = remap[self.P]
        keep = mapped >= 0
        out = object.__new__(Lattices)
        out.__dict__.update(self.__dict__)
        out.W, out.B, out.E, out.P = self.W[keep], self.B[keep], self.E[keep], mapped[keep]
        out.bwd_order = (np.cumsum(keep) - 1)[self.bwd_order[keep[self.bwd_order]]]
        out.n_pieces = int(np.count_nonzero(kept))
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

    def viterbi_counts(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How often each piece occurs in the best segmentations, and the summed count of the
        words whose best segmentation uses it."""
        from . import _unigram_kernels

        best = self._sweep(scores, "max")
        v = best[self.W, self.B] + scores[self.P]
        hits = np.flatnonzero(v == best[self.W, self.E])
        # edges are sorted by start within each (end, word) group: the first hit wins ties
        _, first = np.unique(self.E[hits] * (self.n_words + 1) + self.W[hits], return_index=True)
        hits = hits[first]
        choice = np.zeros((self.n_words, self.max_len + 1), dtype=np.int64)
        choice[self.W[hits], self.E[hits]] = hits
        return _unigram_kernels.segmentation_counts(choice, self.lengths, self.B, self.P, self.counts, self.n_pieces)


def _m_step(expected: np.ndarray, required: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bayesian M-step: score = ψ(count) − ψ(total). Pieces expected under 0.5 times go, except the
    ``required`` ones (single characters), which keep that floor count so that they stay usable
    (not −∞). Returns the scores of the pieces kept and which pieces they are."""
    kept = (expected >= EXPECTED_FREQUENCY_THRESHOLD) | required
    floored = np.where(required, np.maximum(expected, EXPECTED_FREQUENCY_THRESHOLD), expected)[kept]
    return digamma_scores(floored), kept


def _prune(names: list[str], scores: np.ndarray, required: np.ndarray, lattices: Lattices,
           target: int) -> np.ndarray:
    """Which pieces stay when those whose removal costs the corpus least likelihood go, down to
    ``target`` (``required`` ones always stay)."""
    from . import _unigram_kernels

    freq, users = lattices.viterbi_counts(scores)
    total = float(freq.sum()) or 1.0
    cp, offsets, table = _piece_table(names)
    loss = _unigram_kernels.pruning_losses(cp, offsets, table, scores, freq, users, total, required)
    candidates = np.flatnonzero(~required)
    ranked = candidates[np.lexsort((candidates, loss[candidates]))]
    kept = np.ones(len(names), dtype=bool)
    kept[ranked[:max(0, len(names) - target)]] = False
    return kept


def learn_unigram(word_counts: dict[str, int], vocab_size: int, *, seed_size: int | None = None,
                  max_piece_length: int = 16, shrinking_factor: float = 0.75, em_iterations: int = 2,
                  boundary: str = "\u2581") -> list[tuple[str, float]]:
    """Unigram pieces with their log-probabilities (highest first), ``vocab_size`` of them at most
    (or every single character, when there are more of those)."""
    if not word_counts:
        raise DataError("no words to train a Unigram model on", "train on a non-empty corpus")
    names, scores, required, lattices = seed(word_counts, seed_size or max(10 * vocab_size, 20_000),
                                             max_piece_length, boundary)
    bar = progress(desc="Unigram EM + pruning", unit="round")
    while True:
        for _ in range(em_iterations):
            expected, _ = lattices.expected_counts(scores)
            scores, kept = _m_step(expected, required)
            names, required = list(compress(names, kept.tolist())), required[kept]
            lattices = lattices.subset(kept)
        bar.update(1)
        if len(names) <= vocab_size:
            break
        target = max(vocab_size, int(len(names) * shrinking_factor))
        kept = _prune(names, scores, required, lattices, target)
        if kept.all():
            break  # only single characters are left
        names, scores, required = list(compress(names, kept.tolist())), scores[kept], required[kept]
        lattices = lattices.subset(kept)
    bar.close()
    return sorted(zip(names, scores.tolist(), strict=True), key=lambda ps: (-ps[1], ps[0]))
