"""Language-model metrics on the protocol: log-likelihood, cross-entropy, perplexity, bits per
character and bits per byte.

Perplexity depends on the tokenizer (it is per token); bits per byte does not, so it is
the number to compare across tokenizers. What counts:

* tokens — every *predicted* id: each document's tokens plus its end-of-sequence token
  (the beginning-of-sequence token is context, never predicted);
* characters / bytes — each document's code points / UTF-8 bytes plus one for its end
  (the newline that the end-of-sequence token stands for);
* words — each document's whitespace-separated words plus one for its end, so word-level
  perplexity spreads the same total over a count every tokenizer agrees on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from ..core.errors import ConfigError, ModelError
from ..core.progress import progress
from ..core.validate import check_number
from ..lm import LanguageModel, check_tokenizer, windows

LN2 = math.log(2.0)


def cross_entropy_nats(total_logprob: float, tokens: int) -> float:
    """Mean negative log-likelihood per token, in nats."""
    return -total_logprob / tokens


def perplexity(total_logprob: float, tokens: int) -> float:
    """exp of the per-token cross-entropy (``total_logprob`` in nats)."""
    return math.exp(cross_entropy_nats(total_logprob, tokens))


def bits_per_unit(total_logprob: float, units: int) -> float:
    """Total information in bits divided by a unit count (characters or bytes)."""
    return -total_logprob / LN2 / units


@dataclass
class LMScore:
    """The totals of one evaluation and the metrics derived from them."""

    total_logprob: float  # natural log
    tokens: int
    documents: int
    characters: int
    bytes: int
    unk_tokens: int
    words: int = 0  # whitespace-separated words plus one end per document, like tokens
    per_document: list[dict] | None = None

    @property
    def cross_entropy_nats(self) -> float:
        return cross_entropy_nats(self.total_logprob, self.tokens)

    @property
    def cross_entropy_bits(self) -> float:
        return self.cross_entropy_nats / LN2

    @property
    def perplexity(self) -> float:
        return perplexity(self.total_logprob, self.tokens)

    @property
    def word_perplexity(self) -> float:
        """Perplexity per word (the same total over word counts): comparable across tokenizers."""
        return perplexity(self.total_logprob, self.words) if self.words else float("nan")

    @property
    def bits_per_char(self) -> float:
        return bits_per_unit(self.total_logprob, self.characters)

    @property
    def bits_per_byte(self) -> float:
        return bits_per_unit(self.total_logprob, self.bytes)

    @property
    def oov_rate(self) -> float:
        return self.unk_tokens / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        if d["per_document"] is None:
            del d["per_document"]
        d.update(cross_entropy_nats=self.cross_entropy_nats, cross_entropy_bits=self.cross_entropy_bits,
                 perplexity=self.perplexity, word_perplexity=self.word_perplexity,
                 bits_per_char=self.bits_per_char, bits_per_byte=self.bits_per_byte, oov_rate=self.oov_rate)
        return d


def evaluate_lm(lm: LanguageModel, tokenizer, corpus: Iterable[str], *, batch_size: int = 64,
                stride: int | None = None, context: int | None = None, per_document: bool = False) -> LMScore:
    """Score every document of ``corpus`` (BOS + tokens + EOS) and total the log-likelihood.

    Documents longer than ``context`` ids (default: a fixed-context model's ``context_length``) are
    scored with sliding windows of ``context`` ids moved by ``stride`` (each token predicted once, with
    at least ``context - stride`` ids of history); without a stride they are an error. At most
    ``batch_size`` sequences or windows are scored at once — a long document's windows are spread over
    batches — so memory is bounded by ``batch_size`` × ``context``, and running out of it is a clear
    error. ``per_document`` keeps each document's totals as well.
    """
    check_tokenizer(lm, tokenizer)
    check_number("batch_size", batch_size, low=1, integer=True)
    limit = lm.context_length
    if context is not None:
        check_number("context", context, low=2, integer=True)
        if limit is not None and context > limit:
            raise ConfigError(f"context {context} is longer than the model's {limit} positions",
                              f"use a context of at most {limit}")
        limit = context
    if stride is not None:
        check_number("stride", stride, low=1, integer=True)
        if limit is not None and stride > limit - 1:
            raise ConfigError(f"stride {stride} leaves tokens unscored with a context of {limit}",
                              f"use a stride of at most {limit - 1}")
    unk = tokenizer.unk_id
    totals = {"logprob": 0.0, "tokens": 0, "docs": 0, "chars": 0, "bytes": 0, "unk": 0, "words": 0}
    docs: list[dict] = []
    batch: list[tuple[list[int], int, int]] = []  # (ids, first counted position, document index)

    def flush() -> None:
        if not batch:
            return
        length = max(len(s) for s, _, _ in batch)
        if limit is not None and length > limit:
            raise ModelError(f"a document of {length} tokens is longer than the context of {limit}",
                             f"score it in sliding windows (--stride, e.g. {max(1, limit // 2)}) or split the documents")
        scores, mask = score_rows(lm, [s for s, _, _ in batch], [first for _, first, _ in batch])
        picked = scores[mask]
        if lm.normalized and bool(torch.isneginf(picked).any()):
            raise ModelError("the model gives probability 0 to a token of the evaluation data",
                             "use a smoothed model (e.g. --smoothing add-k) or map rare tokens to <unk>")
        totals["logprob"] += float(picked.sum())
        totals["tokens"] += int(mask.sum())
        if per_document:
            row_sums = torch.where(mask, scores, torch.zeros_like(scores)).sum(dim=1)
            for row, (_, _, index) in enumerate(batch):
                docs[index]["logprob"] += float(row_sums[row])
        batch.clear()

    for doc in progress(corpus, desc="scoring", unit="doc"):
        seq = tokenizer.encode(doc, add_special_tokens=False)
        n_unk = sum(1 for i in seq if i == unk) if unk is not None else 0
        start, eos = tokenizer.start_id, tokenizer.eos_id
        seq = ([start] if start is not None else []) + seq + ([eos] if eos is not None else [])
        n_words = len(doc.split()) + 1
        totals["unk"] += n_unk
        totals["docs"] += 1
        totals["chars"] += len(doc) + 1
        totals["bytes"] += len(doc.encode("utf-8")) + 1
        totals["words"] += n_words
        index = len(docs)
        if per_document:
            docs.append({"index": index, "tokens": max(len(seq) - 1, 0), "words": n_words,
                         "bytes": len(doc.encode("utf-8")) + 1, "logprob": 0.0})
        if len(seq) >= 2:
            parts = (windows(len(seq), limit, stride) if limit is not None and stride is not None and len(seq) > limit
                     else [(0, len(seq), 1)])
            for b, e, first in parts:
                batch.append((seq[b:e], first - b, index))
                if len(batch) >= batch_size:
                    flush()
    flush()
    if totals["tokens"] == 0:
        raise ModelError("nothing to score: every document was empty after tokenization")
    for d in docs:
        d["perplexity"] = math.exp(-d["logprob"] / d["tokens"]) if d["tokens"] else float("nan")
        d["bits_per_byte"] = bits_per_unit(d["logprob"], d["bytes"])
    return LMScore(total_logprob=totals["logprob"], tokens=totals["tokens"], documents=totals["docs"],
                   characters=totals["chars"], bytes=totals["bytes"], unk_tokens=totals["unk"],
                   words=totals["words"], per_document=docs if per_document else None)


def score_rows(lm: LanguageModel, rows: list[list[int]], firsts: list[int] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Score id rows of any lengths in one padded ``lm.score`` call: (log-probabilities [B, T-1] as float64 on
    the CPU, mask [B, T-1] of the counted positions — row i's predictions from position ``firsts[i]``
    (default 1: every token after the first) to its end). Running out of memory is a clear error."""
    firsts = [1] * len(rows) if firsts is None else firsts
    length = max(len(r) for r in rows)
    pad = lm.pad_id if lm.pad_id is not None else 0
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), max(length - 1, 0), dtype=torch.bool)
    for row, (seq, first) in enumerate(zip(rows, firsts, strict=True)):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, first - 1:len(seq) - 1] = True
    try:
        with torch.no_grad():
            scores = lm.score(ids.to(lm.device)).double().cpu()
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise _out_of_memory(len(rows), length) from exc
    except RuntimeError as exc:
        if "alloc" not in str(exc):
            raise
        raise _out_of_memory(len(rows), length) from exc
    return scores, mask


def _out_of_memory(rows: int, length: int) -> ModelError:
    return ModelError(f"out of memory scoring {rows} sequence(s) of up to {length} tokens",
                      "lower --batch-size (memory grows with it), or score shorter windows with --context and --stride")


def comparability_note(tokenizer_a, tokenizer_b) -> str | None:
    """A warning when two models' per-token perplexities cannot be compared (different vocabularies)."""
    if tokenizer_a.fingerprint() == tokenizer_b.fingerprint():
        return None
    return ("not comparable: the two models use different vocabularies, so their per-token perplexities "
            "measure different units — compare bits per byte (or word-level perplexity) instead")
