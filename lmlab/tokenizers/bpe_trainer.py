"""Learning BPE merges (count-based, as Sennrich et al. and HF ``tokenizers``) and WordPiece merges
(likelihood-based: count(ab) / (count(a)·count(b))) from word counts.

Both run incrementally: pair counts are updated only in the words a merge touches (found
through a pair → word-index map), and the next merge comes from a heap with lazy deletion
(an entry whose count is stale is re-pushed with the current count when it surfaces).

Tie-breaking (documented, deterministic): among pairs with the same count, BPE takes the
pair whose ids are smallest — ids are assigned to the alphabet in code-point order, then to
merged tokens in creation order — which is exactly HF ``tokenizers``' rule, so both learn
the same merges. WordPiece breaks score ties by the higher pair count, then smallest ids.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable

from ..core.errors import DataError
from ..core.progress import progress

Pair = tuple[int, int]


def compute_alphabet(word_counts: dict[str, int], initial: Iterable[str] = (), limit: int | None = None) -> list[str]:
    """Characters of the corpus (plus ``initial``), the ``limit`` most frequent, in code-point order."""
    counts: Counter[str] = Counter()
    for word, n in word_counts.items():
        for ch in word:
            counts[ch] += n
    huge = float("inf")
    freq = {c: float(n) for c, n in counts.items()}
    freq.update({c: huge for c in initial})
    kept = list(freq)
    if limit is not None and len(kept) > limit:
        kept = sorted(kept, key=lambda c: freq[c])[len(kept) - limit:]
    return sorted(kept)


def _symbolize(word_counts: dict[str, int], vocab: list[str], ids: dict[str, int], prefix: str,
               suffix: str) -> tuple[list[list[int]], list[int]]:
    """Words as lists of symbol ids (new ``##c`` / ``c</w>`` symbols join the vocabulary, in word order)."""
    words, counts = [], []
    for word, n in sorted(word_counts.items()):
        syms = []
        last = len(word) - 1
        for i, ch in enumerate(word):
            if ch not in ids:
                continue  # outside a limited alphabet: dropped, as HF does
            s = (prefix + ch if i and prefix else ch) + (suffix if i == last and suffix else "")
            if s not in ids:
                ids[s] = len(vocab)
                vocab.append(s)
            syms.append(ids[s])
        words.append(syms)
        counts.append(n)
    return words, counts


def _pair_index(words: list[list[int]], counts: list[int]) -> tuple[dict[Pair, int], dict[Pair, set[int]]]:
    pair_counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}
    for w, (syms, n) in enumerate(zip(words, counts, strict=True)):
        for pair in zip(syms, syms[1:], strict=False):
            pair_counts[pair] = pair_counts.get(pair, 0) + n
            s = where.get(pair)
            if s is None:
                where[pair] = {w}
            else:
                s.add(w)
    return pair_counts, where


def _merge_words(pair: Pair, new: int, words: list[list[int]], counts: list[int], positions: Iterable[int],
                 pair_counts: dict[Pair, int], where: dict[Pair, set[int]]) -> tuple[set[Pair], int]:
    """Replace ``pair`` by ``new`` in the given words, updating the pair counts and the pair → word map
    where the merge touches; returns the pairs that gained occurrences and the number of merges made
    (weighted by word counts; fewer than the pair count when occurrences overlap, as in ``aaa``)."""
    a, b = pair
    gained: set[Pair] = set()
    merged = 0
    for w in positions:
        syms = words[w]
        n = counts[w]
        i = 0
        while True:
            try:
                i = syms.index(a, i)
            except ValueError:
                break
            if i + 1 >= len(syms):
                break
            if syms[i + 1] != b:
                i += 1
                continue
            if i > 0:
                left = syms[i - 1]
                pair_counts[(left, a)] -= n
                p = (left, new)
                pair_counts[p] = pair_counts.get(p, 0) + n
                where.setdefault(p, set()).add(w)
                gained.add(p)
            syms[i:i + 2] = [new]
            merged += n
            if i + 1 < len(syms):
                right = syms[i + 1]
                pair_counts[(b, right)] -= n
                p = (new, right)
                pair_counts[p] = pair_counts.get(p, 0) + n
                where.setdefault(p, set()).add(w)
                gained.add(p)
            i += 1
    return gained, merged


def learn_bpe(word_counts: dict[str, int], vocab_size: int, *, specials: Iterable[str] = (),
              initial_alphabet: Iterable[str] = (), limit_alphabet: int | None = None, min_frequency: int = 0,
              prefix: str = "", suffix: str = "") -> tuple[list[str], list[tuple[str, str]]]:
    """BPE vocabulary (specials, alphabet, merged tokens) and merges, most frequent pair first."""
    vocab = list(dict.fromkeys(specials))
    for ch in compute_alphabet(word_counts, initial_alphabet, limit_alphabet):
        if ch not in vocab:
            vocab.append(ch)
    ids = {t: i for i, t in enumerate(vocab)}
    words, counts = _symbolize(word_counts, vocab, ids, prefix, suffix)
    if not words:
        raise DataError("no words to learn BPE merges from", "train on a non-empty corpus")
    pair_counts, where = _pair_index(words, counts)
    heap = [(-c, a, b) for (a, b), c in pair_counts.items() if c > 0]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    bar = progress(total=max(0, vocab_size - len(vocab)), desc="learning BPE merges", unit="merge")
    while heap and len(vocab) < vocab_size:
        neg, a, b = heapq.heappop(heap)
        current = pair_counts.get((a, b), 0)
        if -neg != current:
            if current > 0:
                heapq.heappush(heap, (-current, a, b))
            continue
        if current < 1 or current < min_frequency:
            break
        tok_b = vocab[b][len(prefix):] if prefix and vocab[b].startswith(prefix) else vocab[b]
        new_token = vocab[a] + tok_b
        new = ids.get(new_token)
        if new is None:
            new = ids[new_token] = len(vocab)
            vocab.append(new_token)
        merges.append((vocab[a], vocab[b]))
        gained, _ = _merge_words((a, b), new, words, counts, where.pop((a, b), ()), pair_counts, where)
        for p in gained:
            c = pair_counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p[0], p[1]))
        bar.update(1)
    bar.close()
    return vocab, merges


def learn_wordpiece(word_counts: dict[str, int], vocab_size: int, *, specials: Iterable[str] = (),
                    prefix: str = "##", limit_alphabet: int | None = None) -> list[str]:
    """WordPiece vocabulary: repeatedly merge the pair with the best count(ab) / (count(a)·count(b))."""
    vocab = list(dict.fromkeys(specials))
    for ch in compute_alphabet(word_counts, (), limit_alphabet):
        if ch not in vocab:
            vocab.append(ch)
    ids = {t: i for i, t in enumerate(vocab)}
    words, counts = _symbolize(word_counts, vocab, ids, prefix, "")
    if not words:
        raise DataError("no words to learn WordPiece merges from", "train on a non-empty corpus")
    sym_counts: Counter[int] = Counter()
    for syms, n in zip(words, counts, strict=True):
        for s in syms:
            sym_counts[s] += n
    pair_counts, where = _pair_index(words, counts)
    pairs_of: dict[int, set[Pair]] = {}
    for a, b in pair_counts:
        pairs_of.setdefault(a, set()).add((a, b))
        pairs_of.setdefault(b, set()).add((a, b))

    def entry(p: Pair) -> tuple:
        c = pair_counts[p]
        return (-c / (sym_counts[p[0]] * sym_counts[p[1]]), -c, p[0], p[1], sym_counts[p[0]], sym_counts[p[1]])

    heap = [entry(p) for p, c in pair_counts.items() if c > 0]
    heapq.heapify(heap)
    bar = progress(total=max(0, vocab_size - len(vocab)), desc="learning WordPiece merges", unit="merge")
    while heap and len(vocab) < vocab_size:
        top = heapq.heappop(heap)
        p = (top[2], top[3])
        c = pair_counts.get(p, 0)
        if c < 1:
            continue
        if (-top[1], top[4], top[5]) != (c, sym_counts[p[0]], sym_counts[p[1]]):
            heapq.heappush(heap, entry(p))
            continue
        a, b = p
        tok_b = vocab[b][len(prefix):] if vocab[b].startswith(prefix) else vocab[b]
        new_token = vocab[a] + tok_b
        new = ids.get(new_token)
        if new is None:
            new = ids[new_token] = len(vocab)
            vocab.append(new_token)
        gained, merged = _merge_words(p, new, words, counts, where.pop(p, ()), pair_counts, where)
        sym_counts[a] -= merged
        sym_counts[b] -= merged
        sym_counts[new] += merged
        pair_counts[p] = 0
        for q in gained:
            pairs_of.setdefault(q[0], set()).add(q)
            pairs_of.setdefault(q[1], set()).add(q)
        # count(a) and count(b) fell, so every live pair containing them scores higher now: re-push
        # those (dead pairs leave the symbol → pairs map here, which keeps the sets small)
        touched = {q for q in gained if pair_counts[q] > 0}
        for sym in {a, b}:
            live = {q for q in pairs_of.get(sym, ()) if pair_counts[q] > 0}
            if sym_counts[sym] > 0 and live:
                pairs_of[sym] = live
            else:
                pairs_of.pop(sym, None)
            touched |= live
        push = heapq.heappush
        for q in touched:
            x, y = q
            cq, cx, cy = pair_counts[q], sym_counts[x], sym_counts[y]
            push(heap, (-cq / (cx * cy), -cq, x, y, cx, cy))
        bar.update(1)
    bar.close()
    return vocab
