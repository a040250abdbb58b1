"""Language-model metrics on the protocol: log-likelihood, cross-entropy, perplexity, bits per
character and bits per byte.

Perplexity depends on the tokenizer (it is per token); bits per byte does not, so it is
the number to compare across tokenizers. What counts:

* tokens — every *predicted* id: each document's tokens plus its end-of-sequence token
  (the beginning-of-sequence token is context, never predicted);
* characters / bytes — each document's code points / UTF-8 bytes plus one for its end
  (the newline that the end-of-sequence token stands for).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from ..core.errors import ModelError
from ..core.progress import progress
from ..lm import LanguageModel, check_tokenizer

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
        d.update(cross_entropy_nats=self.cross_entropy_nats, cross_entropy_bits=self.cross_entropy_bits,
                 perplexity=self.perplexity, bits_per_char=self.bits_per_char,
                 bits_per_byte=self.bits_per_byte, oov_rate=self.oov_rate)
        return d


def evaluate_lm(lm: LanguageModel, tokenizer, corpus: Iterable[str], *, batch_size: int = 64) -> LMScore:
    """Score every document of ``corpus`` (BOS + tokens + EOS) and total the log-likelihood."""
    check_tokenizer(lm, tokenizer)
    unk = tokenizer.unk_id
    totals = {"logprob": 0.0, "tokens": 0, "docs": 0, "chars": 0, "bytes": 0, "unk": 0}
    batch: list[list[int]] = []

    def flush() -> None:
        if not batch:
            return
        length = max(len(s) for s in batch)
        if lm.context_length is not None and length > lm.context_length:
            raise ModelError(f"a document of {length} tokens exceeds the model's context of {lm.context_length}",
                             "evaluate with a sliding window (--stride) or split the documents")
        pad = lm.pad_id if lm.pad_id is not None else 0
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), length - 1, dtype=torch.bool)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq) - 1] = True
        with torch.no_grad():
            scores = lm.score(ids.to(lm.device)).double().cpu()
        picked = scores[mask]
        if lm.normalized and bool(torch.isneginf(picked).any()):
            raise ModelError("the model gives probability 0 to a token of the evaluation data",
                             "use a smoothed model (e.g. --smoothing add-k) or map rare tokens to <unk>")
        totals["logprob"] += float(picked.sum())
        totals["tokens"] += int(mask.sum())
        batch.clear()

    for doc in progress(corpus, desc="scoring", unit="doc"):
        seq = tokenizer.encode(doc, add_special_tokens=False)
        if unk is not None:
            totals["unk"] += sum(1 for i in seq if i == unk)
        bos, eos = tokenizer.bos_id, tokenizer.eos_id
        seq = ([bos] if bos is not None else []) + seq + ([eos] if eos is not None else [])
        totals["docs"] += 1
        totals["chars"] += len(doc) + 1
        totals["bytes"] += len(doc.encode("utf-8")) + 1
        if len(seq) >= 2:
            batch.append(seq)
        if len(batch) >= batch_size:
            flush()
    flush()
    if totals["tokens"] == 0:
        raise ModelError("nothing to score: every document was empty after tokenization")
    return LMScore(total_logprob=totals["logprob"], tokens=totals["tokens"], documents=totals["docs"],
                   characters=totals["chars"], bytes=totals["bytes"], unk_tokens=totals["unk"])
