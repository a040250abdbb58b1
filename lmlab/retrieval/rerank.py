"""Pointwise re-ranking by a language model: a passage's score is log p(" yes" | a prompt asking
whether it answers the query). Works with any protocol model (the chat model, in practice)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..core.errors import DataError
from ..core.validate import check_number
from ..lm import LanguageModel
from .topk import Hits

TEMPLATE = "Query: {query}\nPassage: {passage}\nDoes the passage answer the query? Answer:"


def relevance_logprobs(lm: LanguageModel, tokenizer, query: str, passages: list[str], answer: str = " yes",
                       template: str = TEMPLATE, batch_size: int = 8) -> list[float]:
    """log p(answer | template(query, passage)) for each passage, scored in right-padded batches."""
    check_number("batch_size", batch_size, low=1, integer=True)
    answer_ids = tokenizer.encode(answer)
    if not answer_ids:
        raise DataError(f"the answer {answer!r} encodes to no tokens", "pass a non-empty answer word")
    start = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    seqs = [start + tokenizer.encode(template.format(query=query, passage=p)) + answer_ids for p in passages]
    pad = lm.pad_id if lm.pad_id is not None else 0
    out: list[float] = []
    for b in range(0, len(seqs), batch_size):
        batch = seqs[b:b + batch_size]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
        with torch.no_grad():
            scores = lm.score(ids.to(lm.device)).double().cpu()
        for row, seq in enumerate(batch):
            out.append(float(scores[row, len(seq) - 1 - len(answer_ids):len(seq) - 1].sum()))
    return out


def rerank(lm: LanguageModel, tokenizer, query: str, hits: Hits, texts: Mapping[str, str], top: int = 20,
           **kwargs) -> Hits:
    """Re-order the first ``top`` hits by the model's relevance log-probability; the rest keep their order."""
    check_number("top", top, low=1, integer=True)
    head, tail = hits[:top], hits[top:]
    missing = [d for d, _ in head if d not in texts]
    if missing:
        raise DataError(f"no text for retrieved document {missing[0]!r}", "pass the texts of every retrieved id")
    scores = relevance_logprobs(lm, tokenizer, query, [texts[d] for d, _ in head], **kwargs)
    return sorted(zip([d for d, _ in head], scores, strict=True), key=lambda item: -item[1]) + tail
