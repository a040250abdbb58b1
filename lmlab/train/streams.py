"""Loss of a model over a token stream (validation during training, test perplexity in benchmarks).

Recurrent and feed-forward models read the stream in order with their state carried, so
every token is predicted from all (or its full window of) preceding tokens. Transformers,
with a fixed context, use sliding windows: each window of ``context`` ids predicts only
the ids not already predicted by the previous one (``stride`` new ids per window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.progress import progress
from ..data.loaders import ContiguousStream
from ..lm import windows


def stream_loss(model, tokens, *, context: int, batch_size: int = 16, stride: int | None = None,
                max_tokens: int | None = None) -> float:
    """Mean cross-entropy (nats/token) of ``model`` over ``tokens`` (anything with ``read``)."""
    n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens + 1)
    with torch.no_grad():
        carried = getattr(model, "context_length", None) is None  # an RNN, or Transformer-XL's segment memory
        if carried or getattr(getattr(model, "config", None), "memory_length", 0):
            return _carried_loss(model, _Prefix(tokens, n), batch_size, context)
        return _window_loss(model, tokens, n, model.context_length, stride or model.context_length // 2,
                            batch_size)


class _Prefix:
    def __init__(self, tokens, n: int) -> None:
        self.tokens, self.n = tokens, n

    def __len__(self) -> int:
        return self.n

    def read(self, start: int, length: int):
        return self.tokens.read(start, length)


def _carried_loss(model, tokens, batch_size: int, bptt: int) -> float:
    stream = ContiguousStream(tokens, batch_size, bptt)
    state, total, count = None, 0.0, 0
    device = model.device
    for w in progress(range(stream.windows_per_pass), desc="evaluating", unit="window"):
        batch = stream.batch(w)
        logits, state = model(batch["input"].to(device), state)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                       batch["target"].to(device).reshape(-1), reduction="sum"))
        count += batch["target"].numel()
    return total / count


def _window_loss(model, tokens, n: int, context: int, stride: int, batch_size: int) -> float:
    """Sliding windows of up to ``context`` inputs; each scores only the targets the previous one did not."""
    device = model.device
    plan = windows(n, context + 1, stride)  # (begin, end, first): read ids[begin:end], count first … end-1
    total, count = 0.0, 0
    for i in progress(range(0, len(plan), batch_size), desc="evaluating", unit="batch"):
        group = plan[i:i + batch_size]
        ids = torch.zeros(len(group), max(end - begin for begin, end, _ in group), dtype=torch.long)
        for row, (begin, end, _) in enumerate(group):
            ids[row, :end - begin] = torch.as_tensor(tokens.read(begin, end - begin), dtype=torch.long)
        ids = ids.to(device)
        logits, _ = model(ids[:, :-1], None)  # right padding never changes earlier positions
        losses = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
        for row, (begin, end, first) in enumerate(group):
            total += float(losses[row, first - begin - 1:end - begin - 1].sum())
            count += end - first
    return total / count
