"""The unigram language model: p(w) from counts, MLE or add-k smoothed.

Counts are taken over every *predicted* token of each document — its tokens and the
end-of-sequence token, never the beginning-of-sequence or padding ids, which can never be
a next token. Add-k gives each predictable id (``<unk>`` and ``</s>`` included) k extra
counts: p(w) = (c(w) + k) / (N + k·|V'|) with V' the predictable ids. ``<unk>`` keeps the
mass of the training tokens the tokenizer mapped to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from ..core.errors import DataError, ModelError
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from ..lm import LanguageModel, State, as_id_tensor

SMOOTHINGS = ("mle", "add-k")


class UnigramLM(LanguageModel):
    """A context-free language model over a tokenizer's vocabulary."""

    def __init__(self, counts: np.ndarray | torch.Tensor, *, smoothing: str = "add-k", k: float = 1.0,
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None,
                 unk_id: int | None = None) -> None:
        self.smoothing = check_choice("smoothing", smoothing, SMOOTHINGS)
        self.k = float(check_number("k", k, low=0.0, low_inclusive=smoothing == "mle"))
        counts = torch.as_tensor(np.asarray(counts, dtype=np.float64))
        if counts.dim() != 1 or counts.numel() == 0:
            raise ModelError("unigram counts must be a non-empty 1-D array")
        if bool((counts < 0).any()):
            raise ModelError("unigram counts must be non-negative")
        self.counts = counts
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = bos_id, eos_id, pad_id, unk_id
        predictable = torch.ones(counts.numel(), dtype=torch.bool)
        for i in (bos_id, pad_id):
            if i is not None:
                predictable[i] = False
        self.predictable = predictable
        total = float(counts[predictable].sum())
        if smoothing == "mle":
            if total == 0:
                raise DataError("the unigram model saw no tokens", "train it on a non-empty corpus")
            probs = torch.where(predictable, counts / total, torch.zeros_like(counts))
        else:
            denom = total + self.k * int(predictable.sum())
            probs = torch.where(predictable, (counts + self.k) / denom, torch.zeros_like(counts))
        self.logprobs = torch.log(probs)  # float64; -inf where p = 0

    @classmethod
    def fit(cls, sequences: Iterable[list[int]], vocab_size: int, *, smoothing: str = "add-k",
            k: float = 1.0, bos_id: int | None = None, eos_id: int | None = None,
            pad_id: int | None = None, unk_id: int | None = None) -> UnigramLM:
        """Count the predicted tokens of id sequences (each already ending with EOS if wanted)."""
        counts = np.zeros(vocab_size, dtype=np.float64)
        for ids in sequences:
            arr = np.asarray(ids, dtype=np.int64)
            if arr.size:
                counts += np.bincount(arr, minlength=vocab_size)
        for i in (bos_id, pad_id):
            if i is not None:
                counts[i] = 0.0
        return cls(counts, smoothing=smoothing, k=k, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, unk_id=unk_id)

    @classmethod
    def fit_corpus(cls, corpus: Iterable[str], tokenizer, *, smoothing: str = "add-k", k: float = 1.0) -> UnigramLM:
        """Train on documents through ``tokenizer`` (each document gets its EOS token)."""
        eos = tokenizer.eos_id
        seqs = (tokenizer.encode(doc) + ([eos] if eos is not None else [])
                for doc in progress(corpus, desc="counting unigrams", unit="doc"))
        return cls.fit(seqs, tokenizer.vocab_size, smoothing=smoothing, k=k, bos_id=tokenizer.bos_id,
                       eos_id=eos, pad_id=tokenizer.pad_id, unk_id=tokenizer.unk_id)

    # --- protocol ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.counts.numel()

    def initial_state(self, batch_size: int) -> State:
        return batch_size

    def next_logprobs(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        batch = as_id_tensor(tokens, self.vocab_size).shape[0]
        return self.logprobs.unsqueeze(0).expand(batch, -1), batch

    def select_state(self, state: State, index: torch.Tensor) -> State:
        return int(index.numel())

    def concat_states(self, states: list[State]) -> State:
        return sum(states)

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        ids = as_id_tensor(ids, self.vocab_size)
        return self.logprobs[ids[:, 1:]]

    def entropy_bits(self) -> float:
        """Entropy of the distribution in bits (a quick sanity figure)."""
        p = self.logprobs.exp()
        mask = p > 0
        return float(-(p[mask] * self.logprobs[mask]).sum() / math.log(2))

    # --- model directory ----------------------------------------------------------------------
    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {"model_type": "unigram", "smoothing": self.smoothing, "k": self.k,
                  "vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id,
                  "pad_id": self.pad_id, "unk_id": self.unk_id}
        return config, {"counts": self.counts}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> UnigramLM:
        if "counts" not in tensors:
            raise ModelError("unigram model weights have no 'counts' tensor")
        counts = tensors["counts"]
        if config.get("vocab_size") not in (None, counts.numel()):
            raise ModelError(f"config.json says vocab_size {config['vocab_size']} but counts has {counts.numel()}")
        return cls(counts, smoothing=config.get("smoothing", "add-k"), k=config.get("k", 1.0),
                   bos_id=config.get("bos_id"), eos_id=config.get("eos_id"),
                   pad_id=config.get("pad_id"), unk_id=config.get("unk_id"))
