"""The n-gram language model: a backoff table behind the ``LanguageModel`` protocol.

The model holds, for each order n, the sorted packed keys of its n-grams (see
``counts.py``), their natural-log probabilities and their backoff weights. A query finds the
longest listed n-gram ending in the word and adds the backoff weights of the longer
contexts it skipped (ARPA semantics); a ``flat`` model (add-k) backs off straight to the
uniform distribution. The state is the last N-1 ids (-1 = nothing yet), so sampling, beam
search and the other decoders work unchanged; ``score`` is vectorised over whole batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import ConfigError, ModelError
from ..core.progress import progress
from ..core.validate import check_number
from ..lm import LanguageModel, State, as_id_tensor
from ..tokenizers.base import encode_documents
from ..tokenizers.wordlevel import WordLevelTokenizer
from .counts import (
    KeyIndex,
    NgramCounts,
    count_ngrams,
    lookup,
    open_sentences,
    suffix_rows,
)
from .smoothing import SMOOTHINGS, estimate

if TYPE_CHECKING:  # torch is imported where it is used: training and writing ARPA files go without it
    import torch


class NgramLM(LanguageModel):
    """An order-N count model; build it with ``NgramLM.fit_corpus`` / ``fit_counts`` or load an ARPA."""

    def __init__(self, keys: list[np.ndarray], logprobs: list[np.ndarray], logbows: list[np.ndarray], *,
                 vocab_size: int, smoothing: str = "unknown", flat: bool = False, normalized: bool = True,
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None,
                 unk_id: int | None = None, params: dict | None = None,
                 counts: list[np.ndarray] | None = None) -> None:
        if not keys or len(keys) != len(logprobs) or len(keys) != len(logbows):
            raise ModelError("an n-gram model needs keys, log-probabilities and backoffs for every order")
        if len(keys[0]) != vocab_size or len(logprobs[0]) != vocab_size:
            raise ModelError(f"the unigram table must cover the whole vocabulary ({vocab_size} ids)")
        for n, (k, p, b) in enumerate(zip(keys, logprobs, logbows, strict=True), 1):
            if len(k) != len(p) or len(k) != len(b):
                raise ModelError(f"order {n}: keys, probabilities and backoffs differ in length")
        self.keys = [np.ascontiguousarray(k, dtype=np.int64) for k in keys]
        self.logprobs = [np.asarray(p, dtype=np.float64) for p in logprobs]
        self.logbows = [np.asarray(b, dtype=np.float64) for b in logbows]
        self.counts = counts
        self._vocab_size = int(vocab_size)
        self.smoothing, self.flat, self.normalized = smoothing, bool(flat), bool(normalized)
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = bos_id, eos_id, pad_id, unk_id
        self.params = dict(params or {})
        self._index: list[KeyIndex | None] = [None] * len(self.keys)  # built on first use by score_array
        predictable = np.ones(vocab_size, dtype=bool)
        for i in (bos_id, pad_id):
            if i is not None:
                predictable[i] = False
        self.predictable = predictable
        self._log_uniform = -math.log(int(predictable.sum()))

    # --- building -------------------------------------------------------------------------
    @classmethod
    def fit_counts(cls, counts: NgramCounts, smoothing: str = "mkn", **options) -> NgramLM:
        """Estimate a model from ``NgramCounts`` (options: k, discount, lambdas, alpha)."""
        est = estimate(counts, smoothing, **options)
        return cls(counts.keys, est.logprobs, est.logbows, vocab_size=counts.vocab_size, smoothing=smoothing,
                   flat=est.flat, normalized=est.normalized, bos_id=counts.bos_id, eos_id=counts.eos_id,
                   pad_id=counts.pad_id, unk_id=counts.unk_id, params=est.params, counts=counts.counts)

    @classmethod
    def fit_corpus(cls, corpus: Iterable[str], tokenizer, *, order: int = 3, smoothing: str = "mkn",
                   heldout: Iterable[str] | None = None, **options) -> NgramLM:
        """Count ``corpus`` (one sentence per document) through ``tokenizer`` and estimate a model.

        Jelinek-Mercer fits its weights on ``heldout`` (default: the last tenth of the corpus).
        """
        counts = corpus_counts(corpus, tokenizer, order)
        if smoothing == "jm" and options.get("lambdas") is None:
            options["lambdas"] = fit_jm_lambdas(corpus, tokenizer, order, heldout)
        return cls.fit_counts(counts, smoothing, **options)

    # --- protocol -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def order(self) -> int:
        return len(self.keys)

    def sizes(self) -> list[int]:
        """Number of listed n-grams per order (order 1: ids with a finite probability)."""
        return [int(np.isfinite(self.logprobs[0]).sum())] + [len(k) for k in self.keys[1:]]

    def initial_state(self, batch_size: int) -> State:
        import torch

        return torch.full((batch_size, self.order - 1), -1, dtype=torch.long)

    def select_state(self, state: State, index: torch.Tensor) -> State:
        import torch

        return state[index.to(torch.long)]

    def next_logprobs(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        import torch

        tokens = as_id_tensor(tokens, self.vocab_size)
        # the state always holds N-1 columns (-1 = nothing yet), so the new state is the last N-1 of both
        history = torch.cat([state, tokens], dim=1)[:, tokens.shape[1]:]
        rows = [self._distribution([int(i) for i in h if i >= 0]) for h in history.numpy()]
        return torch.from_numpy(np.stack(rows)), history

    def _context_row(self, context: list[int]) -> int:
        """Row of the n-gram ``context`` in its order's table, or -1."""
        row = context[0]
        for n, word in enumerate(context[1:], 2):
            row = int(lookup(self.keys[n - 1], np.array([row * self.vocab_size + word]))[0])
            if row < 0:
                return -1
        return row

    def _distribution(self, history: list[int]) -> np.ndarray:
        """log p(· | history) over the whole vocabulary."""
        V = self.vocab_size
        history = history[max(0, len(history) - (self.order - 1)):] if self.order > 1 else []
        if self.flat:
            if not history:
                return self.logprobs[0].copy()
            dist = np.where(self.predictable, self._log_uniform, -np.inf)
            starts = [0]
        else:
            dist = self.logprobs[0].copy()
            starts = range(len(history) - 1, -1, -1)  # contexts from shortest to longest
        for start in starts:
            context = history[start:]
            m = len(context)
            row = self._context_row(context)
            if row < 0:
                continue
            dist = dist + self.logbows[m - 1][row]
            keys = self.keys[m]
            lo, hi = np.searchsorted(keys, [row * V, (row + 1) * V])
            dist[keys[lo:hi] - row * V] = self.logprobs[m][lo:hi]
        return dist

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        import torch

        ids = as_id_tensor(ids, self.vocab_size)
        if ids.shape[1] < 2:
            return torch.zeros(ids.shape[0], 0, dtype=torch.float64)
        return torch.from_numpy(self.score_array(ids.numpy()))

    def score_array(self, ids: np.ndarray) -> np.ndarray:
        """Vectorised ``score`` on a [B, T] int64 array: log p(ids[:, t] | ids[:, :t]) for t ≥ 1."""
        ids = np.asarray(ids, dtype=np.int64)
        B, T = ids.shape
        V, N = self.vocab_size, self.order
        rows = [ids]  # rows[n-1][b, t]: row of the n-gram ending at t, or -1
        for n in range(2, N + 1):
            prev = np.full((B, T), -1, dtype=np.int64)
            prev[:, 1:] = rows[-1][:, :-1]
            rows.append(self._find(n, np.where(prev >= 0, prev * V + ids, -1)))
        target = slice(1, T)
        if self.flat:
            depth = np.minimum(np.arange(1, T), N - 1)  # context length used at each position
            out = np.full((B, T - 1), self._log_uniform)
            out[:, depth == 0] = self.logprobs[0][ids[:, target][:, depth == 0]]
            for m in range(1, N):
                at = depth == m
                found = rows[m][:, target][:, at]
                ctx = rows[m - 1][:, :-1][:, at]
                val = np.where(ctx >= 0, self.logbows[m - 1][np.maximum(ctx, 0)] + self._log_uniform,
                               self._log_uniform)
                out[:, at] = np.where(found >= 0, self.logprobs[m][np.maximum(found, 0)], val)
            return out
        out = self.logprobs[0][ids[:, target]].copy()
        best = np.ones((B, T - 1), dtype=np.int64)
        for n in range(2, N + 1):
            found = rows[n - 1][:, target]
            hit = found >= 0
            out[hit] = self.logprobs[n - 1][found[hit]]
            best[hit] = n
        for m in range(1, N):  # add the backoff weight of every listed context longer than the match
            ctx = rows[m - 1][:, :-1]
            use = (ctx >= 0) & (best <= m)
            out[use] += self.logbows[m - 1][ctx[use]]
        return out

    def _find(self, n: int, query: np.ndarray) -> np.ndarray:
        if self._index[n - 1] is None:
            self._index[n - 1] = KeyIndex(self.keys[n - 1])
        return self._index[n - 1].find(query)

    # --- model directory --------------------------------------------------------------------
    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        import torch

        config = {"model_type": "ngram", "order": self.order, "smoothing": self.smoothing, "flat": self.flat,
                  "normalized": self.normalized, "vocab_size": self.vocab_size, "bos_id": self.bos_id,
                  "eos_id": self.eos_id, "pad_id": self.pad_id, "unk_id": self.unk_id, "params": self.params,
                  "sizes": self.sizes()}
        tensors = {}
        for n in range(1, self.order + 1):
            tensors[f"keys.{n}"] = torch.from_numpy(self.keys[n - 1])
            tensors[f"logprob.{n}"] = torch.from_numpy(self.logprobs[n - 1])
            tensors[f"logbow.{n}"] = torch.from_numpy(self.logbows[n - 1])
            if self.counts is not None:
                tensors[f"count.{n}"] = torch.from_numpy(np.asarray(self.counts[n - 1], dtype=np.int64))
        return config, tensors

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> NgramLM:
        order = config.get("order")
        if not isinstance(order, int) or order < 1:
            raise ModelError(f"config.json has no valid n-gram order (got {order!r})")
        try:
            parts = {name: [tensors[f"{name}.{n}"].numpy() for n in range(1, order + 1)]
                     for name in ("keys", "logprob", "logbow")}
        except KeyError as exc:
            raise ModelError(f"n-gram model weights lack the tensor {exc.args[0]!r}",
                             "the file is incomplete; save the model again") from None
        counts = ([tensors[f"count.{n}"].numpy() for n in range(1, order + 1)]
                  if all(f"count.{n}" in tensors for n in range(1, order + 1)) else None)
        return cls(parts["keys"], parts["logprob"], parts["logbow"], vocab_size=int(config["vocab_size"]),
                   smoothing=config.get("smoothing", "unknown"), flat=bool(config.get("flat", False)),
                   normalized=bool(config.get("normalized", True)), bos_id=config.get("bos_id"),
                   eos_id=config.get("eos_id"), pad_id=config.get("pad_id"), unk_id=config.get("unk_id"),
                   params=config.get("params"), counts=counts)

    def suffix_rows(self) -> list[np.ndarray]:
        """Row of each n-gram's suffix one order down (see ``counts.suffix_rows``)."""
        return suffix_rows(self.keys, self.vocab_size)


def fit_word_model(corpus: Iterable[str], *, order: int = 3, smoothing: str = "mkn", min_count: int = 1,
                   max_vocab: int | None = None, heldout: Iterable[str] | None = None,
                   **options) -> tuple[NgramLM, WordLevelTokenizer]:
    """A word-level tokenizer trained on ``corpus`` and an order-``order`` model counted through it (the
    ``lmlab ngram train`` pipeline). The corpus is read once for both when it is a plain text file
    (``WordLevelTokenizer.train_encode``)."""
    check_number("order", order, low=1, integer=True)  # before the corpus is read
    tokenizer = WordLevelTokenizer("word", min_count=min_count, max_size=max_vocab)
    counts = token_counts(tokenizer.train_encode(corpus), tokenizer, order)
    if smoothing == "jm" and options.get("lambdas") is None:
        options["lambdas"] = fit_jm_lambdas(corpus, tokenizer, order, heldout)
    return NgramLM.fit_counts(counts, smoothing, **options), tokenizer


def corpus_counts(corpus: Iterable[str], tokenizer, order: int) -> NgramCounts:
    """Count every order up to ``order`` over documents encoded by ``tokenizer`` (``<s>`` … ``</s>``)."""
    sentence_marks(tokenizer)  # before reading the corpus
    docs = progress(corpus, desc="reading corpus", unit="doc")
    return token_counts(encode_documents(tokenizer, docs), tokenizer, order)


def sentence_marks(tokenizer) -> tuple[int, int]:
    """The tokenizer's (<s>, </s>) ids, which every n-gram model needs."""
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    if bos is None or eos is None:
        raise ConfigError("an n-gram model needs a tokenizer with <s> and </s> tokens",
                          "use the word or char tokenizer (they define both)")
    return bos, eos


def token_counts(ids: np.ndarray, tokenizer, order: int) -> NgramCounts:
    """Count every order up to ``order`` over ``ids``: ``tokenizer``'s ids of sentences, each ending with
    ``</s>`` (``encode_documents``, ``WordLevelTokenizer.train_encode``), laid end to end."""
    check_number("order", order, low=1, integer=True)
    bos, eos = sentence_marks(tokenizer)
    return count_ngrams(open_sentences(ids, bos, eos), order, tokenizer.vocab_size, bos_id=bos, eos_id=eos,
                        unk_id=tokenizer.unk_id, pad_id=tokenizer.pad_id)


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Id sequences as a right-padded [B, T] array, and the [B, T-1] mask of real predicted positions."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width - 1), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r) - 1] = True
    return ids, mask


def _split(corpus: Iterable[str], every: int = 10) -> tuple[list[str], list[str]]:
    docs = list(corpus)
    cut = len(docs) - max(1, len(docs) // every)
    return docs[:cut], docs[cut:]


def fit_jm_lambdas(corpus: Iterable[str], tokenizer, order: int, heldout: Iterable[str] | None = None,
                   *, tol: float = 1e-4) -> list[float]:
    """Jelinek-Mercer weights λ_1..λ_N maximising held-out likelihood, one order at a time.

    Without ``heldout`` the last tenth of ``corpus`` is held out. Each λ_n is found by
    golden-section search (the held-out log-likelihood is concave in λ_n with the lower
    orders fixed).
    """
    train = list(corpus)
    if heldout is None:
        train, held = _split(train)
    else:
        held = list(heldout)
    counts = corpus_counts(train, tokenizer, order)
    rows = [[tokenizer.bos_id] + tokenizer.encode(d) + [tokenizer.eos_id] for d in held]
    rows = [r for r in rows if len(r) >= 2]
    if not rows:
        raise ConfigError("the held-out data for Jelinek-Mercer is empty", "pass a non-empty --heldout corpus")
    ids, mask = pad_rows(rows, tokenizer.eos_id)
    lambdas: list[float] = []
    golden = (math.sqrt(5) - 1) / 2
    for n in range(1, order + 1):
        sub = NgramCounts(counts.vocab_size, counts.keys[:n], counts.counts[:n], counts.suffix[:n],
                          counts.bos_id, counts.eos_id, counts.unk_id, counts.pad_id)

        lm = NgramLM.fit_counts(sub, "jm", lambdas=lambdas + [0.5])

        def loglik(lam: float, sub: NgramCounts = sub, lm: NgramLM = lm) -> float:
            est = estimate(sub, "jm", lambdas=lambdas + [lam])
            lm.logprobs, lm.logbows = est.logprobs, est.logbows  # same n-grams: keep the lookup index
            return float(lm.score_array(ids)[mask].sum())

        lo, hi = 1e-3, 1 - 1e-3
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        fa, fb = loglik(a), loglik(b)
        while hi - lo > tol:
            if fa < fb:
                lo, a, fa = a, b, fb
                b = lo + golden * (hi - lo)
                fb = loglik(b)
            else:
                hi, b, fb = b, a, fa
                a = hi - golden * (hi - lo)
                fa = loglik(a)
        lambdas.append(round((lo + hi) / 2, 6))
    return lambdas


__all__ = ["NgramLM", "SMOOTHINGS", "corpus_counts", "fit_jm_lambdas", "fit_word_model", "pad_rows", "token_counts"]
