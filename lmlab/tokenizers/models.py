"""Subword models: how one pre-tokenized piece becomes ids (BPE, WordPiece, Unigram).

Each model's ``tokenize(piece)`` returns ``(id, start, end)`` triples (character spans in the
piece) and follows Hugging Face ``tokenizers`` exactly, so files move both ways; ``encode``
is the fast path that caches piece → ids, since most words repeat.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence

from ..core.errors import ModelError

Triples = list[tuple[int, int, int]]
UNK_PENALTY = 10.0  # a Unigram unknown character scores min(score) - 10, as in SentencePiece


class SubwordModel:
    """Shared vocabulary bookkeeping and the per-piece cache of every subword model."""

    type_name = ""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise ModelError(f"the {self.type_name} vocabulary has duplicate entries")
        self._cache: dict[str, list[int]] = {}

    def tokenize(self, piece: str) -> Triples:
        raise NotImplementedError

    def encode(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            ids = [t[0] for t in self.tokenize(piece)]
            if len(self._cache) < 1_000_000:
                self._cache[piece] = ids
        return ids

    def to_json(self) -> dict:
        raise NotImplementedError


def _vocab_list(mapping: dict[str, int], kind: str) -> list[str]:
    vocab: list[str | None] = [None] * len(mapping)
    for tok, i in mapping.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or vocab[i] is not None:
            raise ModelError(f"{kind} vocabulary ids are not 0..N-1 without gaps")
        vocab[i] = tok
    return vocab  # type: ignore[return-value]


class BPE(SubwordModel):
    """Byte-pair encoding: apply learned merges, lowest rank first (leftmost on ties), as HF does."""

    type_name = "BPE"

    def __init__(self, vocab: Sequence[str], merges: Sequence[tuple[str, str]], *, unk_token: str | None = None,
                 continuing_subword_prefix: str = "", end_of_word_suffix: str = "",
                 fuse_unk: bool = False, byte_fallback: bool = False, ignore_merges: bool = False) -> None:
        super().__init__(vocab)
        self.merges = [tuple(m) for m in merges]
        self.unk_token, self.prefix, self.suffix = unk_token, continuing_subword_prefix or "", end_of_word_suffix or ""
        self.fuse_unk, self.byte_fallback, self.ignore_merges = fuse_unk, byte_fallback, ignore_merges
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            new = a + (b[len(self.prefix):] if self.prefix and b.startswith(self.prefix) else b)
            try:
                self.ranks[(self.ids[a], self.ids[b])] = (rank, self.ids[new])
            except KeyError as exc:
                raise ModelError(f"BPE merge {a!r} {b!r} uses a token missing from the vocabulary ({exc})") from None
        self.unk_id = self.ids.get(unk_token) if unk_token is not None else None
        if unk_token is not None and self.unk_id is None:
            raise ModelError(f"the BPE unk token {unk_token!r} is not in the vocabulary")

    def _initial(self, piece: str) -> tuple[list[int], list[int], list[int]]:
        """Symbols (ids, char starts, char ends) before any merge; unknown characters → unk."""
        ids, starts, ends = [], [], []
        last = len(piece) - 1
        for i, ch in enumerate(piece):
            sym = (self.prefix + ch if i and self.prefix else ch) + (self.suffix if i == last else "")
            tid = self.ids.get(sym)
            if tid is None and self.byte_fallback:
                byte_ids = [self.ids.get(f"<0x{b:02X}>") for b in ch.encode("utf-8")]
                if None not in byte_ids:
                    ids.extend(byte_ids)
                    starts.extend([i] * len(byte_ids))
                    ends.extend([i + 1] * len(byte_ids))
                    continue
            if tid is None:
                if self.unk_id is None:
                    continue
                if self.fuse_unk and ids and ids[-1] == self.unk_id:
                    ends[-1] = i + 1
                    continue
                tid = self.unk_id
            ids.append(tid)
            starts.append(i)
            ends.append(i + 1)
        return ids, starts, ends

    def tokenize(self, piece: str) -> Triples:
        if self.ignore_merges:
            tid = self.ids.get(piece)
            if tid is not None:
                return [(tid, 0, len(piece))]
        ids, starts, ends = self._initial(piece)
        n = len(ids)
        if n < 2:
            return list(zip(ids, starts, ends, strict=True))
        ranks = self.ranks
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            r = ranks.get((ids[i], ids[i + 1]))
            if r is not None:
                heap.append((r[0], i, r[1]))
        heapq.heapify(heap)
        while heap:
            _, pos, new_id = heapq.heappop(heap)
            if not alive[pos] or nxt[pos] >= n:
                continue
            right = nxt[pos]
            r = ranks.get((ids[pos], ids[right]))
            if r is None or r[1] != new_id:
                continue
            ids[pos], ends[pos] = new_id, ends[right]
            alive[right] = False
            nxt[pos] = nxt[right]
            if nxt[pos] < n:
                prv[nxt[pos]] = pos
            p = prv[pos]
            if p >= 0:
                r = ranks.get((ids[p], new_id))
                if r is not None:
                    heapq.heappush(heap, (r[0], p, r[1]))
            q = nxt[pos]
            if q < n:
                r = ranks.get((new_id, ids[q]))
                if r is not None:
                    heapq.heappush(heap, (r[0], pos, r[1]))
        return [(ids[i], starts[i], ends[i]) for i in range(n) if alive[i]]

    def to_json(self) -> dict:
        return {"type": "BPE", "dropout": None, "unk_token": self.unk_token,
                "continuing_subword_prefix": self.prefix or None, "end_of_word_suffix": self.suffix or None,
                "fuse_unk": self.fuse_unk, "byte_fallback": self.byte_fallback, "ignore_merges": self.ignore_merges,
                "vocab": dict(self.ids), "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_json(cls, model: dict) -> BPE:
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        if any(len(m) != 2 for m in merges):
            raise ModelError("a BPE merge is not a pair of tokens")
        return cls(_vocab_list(model.get("vocab") or {}, "BPE"), merges, unk_token=model.get("unk_token"),
                   continuing_subword_prefix=model.get("continuing_subword_prefix") or "",
                   end_of_word_suffix=model.get("end_of_word_suffix") or "",
                   fuse_unk=bool(model.get("fuse_unk")), byte_fallback=bool(model.get("byte_fallback")),
                   ignore_merges=bool(model.get("ignore_merges")))


class WordPiece(SubwordModel):
    """Greedy longest-match-first; ``##`` marks a continuation; a word that fails is one ``[UNK]``."""

    type_name = "WordPiece"

    def __init__(self, vocab: Sequence[str], *, unk_token: str = "[UNK]", continuing_subword_prefix: str = "##",
                 max_input_chars_per_word: int = 100) -> None:
        super().__init__(vocab)
        self.unk_token, self.prefix, self.max_chars = unk_token, continuing_subword_prefix, max_input_chars_per_word
        if unk_token not in self.ids:
            raise ModelError(f"the WordPiece unk token {unk_token!r} is not in the vocabulary")
        self.unk_id = self.ids[unk_token]
        self.max_len = max((len(t) for t in self.vocab), default=1)

    def tokenize(self, piece: str) -> Triples:
        n = len(piece)
        if n > self.max_chars:
            return [(self.unk_id, 0, n)]
        out: Triples = []
        start, ids, prefix = 0, self.ids, self.prefix
        while start < n:
            end = min(n, start + self.max_len)
            found = None
            while start < end:
                sub = piece[start:end]
                tid = ids.get(prefix + sub if start else sub)
                if tid is not None:
                    found = tid
                    break
                end -= 1
            if found is None:
                return [(self.unk_id, 0, n)]
            out.append((found, start, end))
            start = end
        return out

    def to_json(self) -> dict:
        return {"type": "WordPiece", "unk_token": self.unk_token, "continuing_subword_prefix": self.prefix,
                "max_input_chars_per_word": self.max_chars, "vocab": dict(self.ids)}

    @classmethod
    def from_json(cls, model: dict) -> WordPiece:
        return cls(_vocab_list(model.get("vocab") or {}, "WordPiece"), unk_token=model.get("unk_token", "[UNK]"),
                   continuing_subword_prefix=model.get("continuing_subword_prefix", "##"),
                   max_input_chars_per_word=model.get("max_input_chars_per_word", 100))


class Unigram(SubwordModel):
    """Unigram LM (Kudo 2018): the segmentation with the highest total log-probability (Viterbi)."""

    type_name = "Unigram"

    def __init__(self, pieces: Sequence[tuple[str, float]], *, unk_id: int | None = 0, fuse_unk: bool = True) -> None:
        super().__init__([p for p, _ in pieces])
        self.scores = [float(s) for _, s in pieces]
        self.unk_id, self.fuse_unk = unk_id, fuse_unk
        if unk_id is not None and not 0 <= unk_id < len(self.vocab):
            raise ModelError(f"Unigram unk_id {unk_id} is outside the vocabulary")
        self.max_len = max((len(p) for p in self.vocab), default=1)
        self.unk_score = min(self.scores, default=0.0) - UNK_PENALTY
        self._score_of = {p: (i, s) for i, (p, s) in enumerate(zip(self.vocab, self.scores, strict=True))
                          if i != unk_id}

    def _lattice(self, piece: str) -> list[list[tuple[int, int, float]]]:
        """For each end position, the (start, id, score) of every vocabulary piece ending there."""
        n = len(piece)
        ends: list[list[tuple[int, int, float]]] = [[] for _ in range(n + 1)]
        table, max_len = self._score_of, self.max_len
        for b in range(n):
            has_single = False
            for e in range(b + 1, min(n, b + max_len) + 1):
                hit = table.get(piece[b:e])
                if hit is not None:
                    ends[e].append((b, hit[0], hit[1]))
                    has_single |= e == b + 1
            if not has_single:
                ends[b + 1].append((b, -1, self.unk_score))
        return ends  # each list is in start order (HF's visiting order: ties go to the earliest start)

    def tokenize(self, piece: str) -> Triples:
        n = len(piece)
        if not n:
            return []
        ends = self._lattice(piece)
        best = [-math.inf] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        best[0] = 0.0
        for e in range(1, n + 1):
            for b, tid, score in ends[e]:
                cand = best[b] + score
                if cand > best[e]:
                    best[e], back[e] = cand, (b, tid)
        return self._unk_fuse(_backtrack(back, n))

    def _unk_fuse(self, path: Triples) -> Triples:
        out: Triples = []
        unk = self.unk_id if self.unk_id is not None else -1
        for tid, s, e in path:
            tid = unk if tid == -1 else tid
            if tid == -1:
                raise ModelError("a character is not in the Unigram vocabulary and there is no unk token")
            if self.fuse_unk and tid == unk and out and out[-1][0] == unk:
                out[-1] = (unk, out[-1][1], e)
            else:
                out.append((tid, s, e))
        return out

    def nbest(self, piece: str, n: int) -> list[tuple[float, Triples]]:
        """The ``n`` best segmentations with their log-probabilities, best first."""
        L = len(piece)
        if not L:
            return [(0.0, [])]
        ends = self._lattice(piece)
        # kbest[e]: up to n (score, start, id, rank in kbest[start]) entries, best first
        kbest: list[list[tuple[float, int, int, int]]] = [[(0.0, -1, -1, -1)]] + [[] for _ in range(L)]
        for e in range(1, L + 1):
            cands = [(prev[0] + s, b, tid, r) for b, tid, s in ends[e] for r, prev in enumerate(kbest[b])]
            kbest[e] = heapq.nlargest(n, cands, key=lambda c: c[0])
        out = []
        for score, b, tid, r in kbest[L]:
            path: Triples = []
            e = L
            while e > 0:
                path.append((tid, b, e))
                e = b
                _, b, tid, r = kbest[e][r] if e > 0 else (0.0, -1, -1, -1)
            out.append((score, self._unk_fuse(path[::-1])))
        return out

    def sample(self, piece: str, alpha: float = 0.1, rng: random.Random | None = None,
               nbest_size: int = -1) -> Triples:
        """A segmentation drawn with probability ∝ P(segmentation)^alpha (subword regularisation).

        ``nbest_size`` < 0: over all segmentations (forward filtering, backward sampling);
        otherwise among the ``nbest_size`` best ones, as SentencePiece's ``nbest_size``.
        """
        rng = rng or random.Random()
        n = len(piece)
        if not n:
            return []
        if nbest_size > 0:
            cands = self.nbest(piece, nbest_size)
            top = max(s for s, _ in cands)
            return rng.choices([p for _, p in cands], weights=[math.exp(alpha * (s - top)) for s, _ in cands])[0]
        ends = self._lattice(piece)
        fwd = [-math.inf] * (n + 1)
        fwd[0] = 0.0
        for e in range(1, n + 1):
            fwd[e] = _logsumexp([fwd[b] + alpha * s for b, _, s in ends[e]])
        path: Triples = []
        e = n
        while e > 0:
            weights = [fwd[b] + alpha * s for b, _, s in ends[e]]
            top = max(weights)
            b, tid, _ = rng.choices(ends[e], weights=[math.exp(w - top) for w in weights])[0]
            path.append((tid, b, e))
            e = b
        return self._unk_fuse(path[::-1])

    def to_json(self) -> dict:
        return {"type": "Unigram", "unk_id": self.unk_id, "byte_fallback": False,
                "vocab": [[p, s] for p, s in zip(self.vocab, self.scores, strict=True)]}

    @classmethod
    def from_json(cls, model: dict) -> Unigram:
        if model.get("byte_fallback"):
            raise ModelError("Unigram with byte_fallback is not supported")
        return cls([(p, s) for p, s in model.get("vocab") or []], unk_id=model.get("unk_id"))


def _backtrack(back: list[tuple[int, int]], n: int) -> Triples:
    path: Triples = []
    e = n
    while e > 0:
        b, tid = back[e]
        path.append((tid, b, e))
        e = b
    return path[::-1]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


MODELS = {"BPE": BPE, "WordPiece": WordPiece, "Unigram": Unigram}
