"""Translation with an encoder–decoder: sources encoded once, then greedy decoding of a whole batch
at a time (both caches), or beam search per sentence through the LM protocol (``bind``).

Sources are encoded as in ``lmlab pretrain --objective seq2seq``: the tokenizer's ids cut to the
model's context, ending in EOS; the decoder starts from BOS (PAD when there is none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import ConfigError
from ..core.progress import progress
from ..core.validate import check_number
from ..data.loaders import pad_batch
from .beam import beam_search


def encode_sources(model, tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Source ids as in training: cut to the context, ending in EOS."""
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    keep = model.context_length - len(eos)
    return [tokenizer.encode(t)[:keep] + eos for t in texts]


def decoder_start(model) -> int:
    """The id the decoder reads first: BOS, else PAD."""
    start = model.bos_id if model.bos_id is not None else model.pad_id
    if start is None:
        raise ConfigError("the model has neither a BOS nor a PAD id to start decoding from",
                          "train it with a tokenizer that has <s> or <pad>")
    return int(start)


@torch.no_grad()
def greedy_batch(model, sources: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding of every source at once; each row stops at EOS (not included)."""
    src, mask = pad_batch(sources, model.pad_id if model.pad_id is not None else 0)
    state = model.start(src, mask.long())
    b = len(sources)
    ids = torch.full((b, 1), decoder_start(model), dtype=torch.long, device=model.device)
    out = torch.zeros(b, 0, dtype=torch.long, device=model.device)
    done = torch.zeros(b, dtype=torch.bool, device=model.device)
    eos = model.eos_id
    for _ in range(max_new_tokens):
        logits, state = model(ids, state)
        ids = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, ids], 1)
        if eos is not None:
            done |= ids[:, 0] == eos
            if bool(done.all()):
                break
    rows = []
    for row in out.tolist():
        rows.append(row[:row.index(eos)] if eos is not None and eos in row else row)
    return rows


def translate(model, tokenizer, texts: Sequence[str], *, beam_size: int = 1, max_new_tokens: int | None = None,
              batch_size: int = 64, length_penalty: float = 1.0) -> list[str]:
    """Translations of ``texts``: greedy (``beam_size`` 1, batched) or beam search per sentence."""
    check_number("beam_size", beam_size, low=1, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    model.eval()
    limit = max_new_tokens or model.context_length
    sources = encode_sources(model, tokenizer, texts)
    results: list[list[int]] = []
    if beam_size == 1:
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # little padding per batch
        by_index: dict[int, list[int]] = {}
        for k in progress(range(0, len(order), batch_size), desc="translating", unit="batch"):
            chunk = order[k:k + batch_size]
            for i, ids in zip(chunk, greedy_batch(model, [sources[i] for i in chunk], limit), strict=True):
                by_index[i] = ids
        results = [by_index[i] for i in range(len(sources))]
    else:
        start = decoder_start(model)
        for src in progress(sources, desc="translating", unit="sentence"):
            model.bind(torch.tensor(src))
            results.append(beam_search(model, [start], beam_size=beam_size,
                                       max_new_tokens=min(limit, model.context_length - 1),
                                       length_penalty=length_penalty)[0].ids)
        model.source = None
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in results]
