"""An independent decoding reference for the tests: no cache, no batching, no decoding loop.

Each step re-reads the whole sequence from the empty state (``next_scores`` on a fresh state),
applies the processors to those raw scores and takes the argmax, or draws with a generator
seeded ``seed`` — what ``lmlab.generate``'s loop must reproduce with its caches and batches.
"""

from __future__ import annotations

import torch

from lmlab.generate.processors import apply


def reference_continuation(lm, prompt, steps, *, processors=(), greedy=True, seed=None, stop_ids=()):
    """(ids, log-probs) of ``steps`` tokens after ``prompt`` (stopping early at a stop id)."""
    ids = list(prompt)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out, lps = [], []
    with torch.no_grad():
        for _ in range(steps):
            raw, _ = lm.next_scores(torch.tensor([ids]), lm.initial_state(1))
            raw = raw.float()
            scores = apply(list(processors), raw, torch.tensor([ids]), len(prompt))
            token = int(scores.argmax()) if greedy else int(torch.multinomial(scores.softmax(-1)[0], 1, generator=gen))
            if token in stop_ids:
                break
            out.append(token)
            lps.append(float(raw.log_softmax(-1)[0, token]))
            ids.append(token)
    return out, lps
