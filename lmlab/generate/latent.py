"""Sentences from a sentence VAE's codes (``lmlab.models.sentence_vae``), decoded greedily through the one
decoding loop, and the homotopy between two sentences (Bowman et al., 2016, §5): their codes mixed in
equal steps, z_t = (1 − t)·z_a + t·z_b, each decoded — what a smooth code space looks like, read.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ConfigError
from ..core.validate import check_number
from ..data.loaders import pad_batch
from ..models.sentence_vae import CodeDecoder, SentenceVAE
from .engine import Engine, Request


def decode_codes(vae: SentenceVAE, tokenizer: Any, z: torch.Tensor, *, max_new_tokens: int = 40) -> list[str]:
    """The greedy sentence of each code row ``z`` [N, code width], one batch through ``Engine``."""
    if tokenizer.bos_id is None or tokenizer.eos_id is None:
        raise ConfigError("decoding from a code starts at BOS and stops at EOS; the tokenizer lacks one",
                          "use the tokenizer the VAE was trained with")
    lm = CodeDecoder(vae.eval(), z, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    engine = Engine(lm, tokenizer, greedy=True, decode_layout=False)
    requests = [Request([tokenizer.bos_id], max_new_tokens=max_new_tokens, stop_ids=[tokenizer.eos_id])
                for _ in range(len(z))]
    return [out.text for out in engine.generate(requests)]


@torch.no_grad()
def sentence_codes(vae: SentenceVAE, tokenizer: Any, sentences: list[str]) -> torch.Tensor:
    """The posterior mean (Gaussian) or mode (categorical, one-hot) code of each sentence [N, code width]."""
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    ids, mask = pad_batch([tokenizer.encode(s) + [tokenizer.eos_id] for s in sentences], pad)
    vae.eval()
    return vae.sample(*vae.encode(ids, mask))


def interpolate(vae: SentenceVAE, tokenizer: Any, first: str, second: str, *, steps: int = 5,
                max_new_tokens: int = 40) -> list[str]:
    """``steps`` sentences decoded from codes evenly spaced from ``first``'s to ``second``'s (both included)."""
    check_number("steps", steps, low=2, integer=True)
    a, b = sentence_codes(vae, tokenizer, [first, second])
    t = torch.linspace(0, 1, steps, dtype=a.dtype)[:, None]
    return decode_codes(vae, tokenizer, (1 - t) * a + t * b, max_new_tokens=max_new_tokens)
