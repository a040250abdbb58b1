"""kNN-LM (Khandelwal et al., 2020): interpolate a language model with a nearest-neighbour
distribution over a datastore of (context representation → next token) pairs.

    p(w | c) = λ · p_kNN(w | c) + (1 − λ) · p_LM(w | c),   p_kNN(w | c) ∝ Σ_{neighbours with value w} exp(−d² / T)

The context representation comes from a *context encoder*: ids [B, T] → [B, T, d], where row t
represents the prefix ids[:, :t+1] (for a transformer: its last hidden state at t). ``KNNLM`` is a
protocol model, so perplexity and every decoding strategy work on it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from ..core.errors import DataError, ModelError
from ..core.progress import progress
from ..core.validate import check_number
from ..lm import LanguageModel, State, as_id_tensor

ContextEncoder = Callable[[torch.Tensor], torch.Tensor]


class Datastore:
    """Keys (context vectors) and values (the token that followed), searched exactly by L2 distance."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, chunk: int = 32768) -> None:
        if keys.dim() != 2 or values.dim() != 1 or len(keys) != len(values):
            raise DataError(f"datastore keys {tuple(keys.shape)} and values {tuple(values.shape)} do not match",
                            "pass keys [N, d] and values [N]")
        if len(keys) == 0:
            raise DataError("the datastore is empty", "build it from a non-empty corpus")
        self.keys = keys.float().contiguous()
        self.values = values.long()
        self.key_norms = (self.keys * self.keys).sum(1)
        self.chunk = chunk

    @classmethod
    def build(cls, encode_contexts: ContextEncoder, sequences: Iterable[list[int]], batch_size: int = 1) -> Datastore:
        """One entry per predicted token of each id sequence (BOS … EOS): key = context before it.
        Consecutive sequences of equal length are encoded ``batch_size`` at a time."""
        check_number("batch_size", batch_size, low=1, integer=True)
        keys, values = [], []

        def flush(batch: list[list[int]]) -> None:
            ids = torch.as_tensor(batch, dtype=torch.long)
            keys.append(encode_contexts(ids)[:, :-1].float().reshape(len(batch) * (ids.shape[1] - 1), -1))
            values.append(ids[:, 1:].reshape(-1))

        with torch.no_grad():
            batch: list[list[int]] = []
            for seq in progress(sequences, desc="building datastore", unit="seq"):
                if len(seq) < 2:
                    continue
                if batch and (len(seq) != len(batch[0]) or len(batch) == batch_size):
                    flush(batch)
                    batch = []
                batch.append(list(seq))
            if batch:
                flush(batch)
        if not keys:
            raise DataError("no sequence of two or more tokens to build a datastore from", "pass a non-empty corpus")
        return cls(torch.cat(keys), torch.cat(values))

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distances, values) of the ``k`` nearest keys of each query [M, d], nearest first."""
        k = min(k, len(self.keys))
        block = max(1, (1 << 24) // self.chunk)  # queries per block: distance tiles stay ~64 MB
        parts = [self._search_block(queries[s:s + block].float(), k) for s in range(0, len(queries), block)]
        if not parts:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
        return torch.cat([d for d, _ in parts]), torch.cat([v for _, v in parts])

    def _search_block(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        qn = (q * q).sum(1, keepdim=True)
        best_d = torch.full((len(q), 0), math.inf)
        best_i = torch.zeros((len(q), 0), dtype=torch.long)
        for start in range(0, len(self.keys), self.chunk):
            keys = self.keys[start:start + self.chunk]
            d = (qn - 2 * q @ keys.T + self.key_norms[start:start + self.chunk]).clamp_min(0)
            idx = torch.arange(start, start + len(keys)).expand(len(q), -1)
            d, i = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
            best_d, pos = d.topk(k, dim=1, largest=False)
            best_i = i.gather(1, pos)
        return best_d, self.values[best_i]


class KNNLM(LanguageModel):
    """``base`` interpolated with a kNN distribution (weight ``lam``, ``k`` neighbours, temperature)."""

    def __init__(self, base: LanguageModel, encode_contexts: ContextEncoder, datastore: Datastore,
                 lam: float = 0.25, k: int = 16, temperature: float = 1.0) -> None:
        self.base, self.encode_contexts, self.datastore = base, encode_contexts, datastore
        self.lam = float(check_number("lam", lam, low=0.0, high=1.0))
        self.k = int(check_number("k", k, low=1, integer=True))
        self.temperature = float(check_number("temperature", temperature, low=0.0, low_inclusive=False))
        if int(datastore.values.max()) >= base.vocab_size:
            raise ModelError("the datastore holds token ids outside the base model's vocabulary",
                             "build the datastore with the base model's tokenizer")
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = base.bos_id, base.eos_id, base.pad_id, base.unk_id
        self.context_length = base.context_length

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    def _neighbour_weights(self, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log softmax weights over each context's neighbours, and the neighbours' tokens."""
        dist, values = self.datastore.search(contexts, self.k)
        return torch.log_softmax(-dist.double() / self.temperature, dim=1), values

    def _mix(self, base_logprobs: torch.Tensor, knn_logprobs: torch.Tensor) -> torch.Tensor:
        if self.lam == 0.0:
            return base_logprobs.double()
        if self.lam == 1.0:
            return knn_logprobs
        return torch.logaddexp(base_logprobs.double() + math.log1p(-self.lam), knn_logprobs + math.log(self.lam))

    def knn_logprobs(self, contexts: torch.Tensor) -> torch.Tensor:
        """The kNN distribution [M, V] (log) of contexts [M, d]; -inf for tokens no neighbour has."""
        logw, values = self._neighbour_weights(contexts)
        probs = torch.zeros(len(contexts), self.vocab_size, dtype=torch.float64)
        probs.scatter_add_(1, values, logw.exp())
        return probs.log()

    def initial_state(self, batch_size: int) -> State:
        """The base model's state and each row's ids so far (a list: rows may differ in length)."""
        return self.base.initial_state(batch_size), [torch.zeros(0, dtype=torch.long)] * batch_size

    def next_logprobs(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        # the encoder re-reads the whole prefix each step: simple and exact for any encoder
        tokens = as_id_tensor(tokens, self.vocab_size)
        base_state, history = state
        base_lp, base_state = self.base.next_logprobs(tokens, base_state)
        history = [torch.cat([h, row]) for h, row in zip(history, tokens.cpu(), strict=True)]
        with torch.no_grad():
            if len({len(h) for h in history}) == 1:
                contexts = self.encode_contexts(torch.stack(history))[:, -1]
            else:
                contexts = torch.cat([self.encode_contexts(h.unsqueeze(0))[:, -1] for h in history])
        return self._mix(base_lp.cpu(), self.knn_logprobs(contexts)), (base_state, history)

    def select_state(self, state: State, index: torch.Tensor) -> State:
        base_state, history = state
        return self.base.select_state(base_state, index), [history[i] for i in index.tolist()]

    def concat_states(self, states: list[State]) -> State:
        return (self.base.concat_states([s[0] for s in states]), [h for s in states for h in s[1]])

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """All positions at once: one encoder pass, one batched neighbour search."""
        ids = as_id_tensor(ids, self.vocab_size)
        batch, length = ids.shape
        if length < 2:
            return torch.zeros(batch, 0, dtype=torch.float64)
        base = self.base.score(ids).double().cpu()
        with torch.no_grad():
            contexts = self.encode_contexts(ids)[:, :-1].reshape(batch * (length - 1), -1)
        logw, values = self._neighbour_weights(contexts)
        targets = ids[:, 1:].reshape(-1, 1)
        hit = torch.where(values == targets, logw, torch.full_like(logw, -math.inf))
        knn = torch.logsumexp(hit, dim=1).reshape(batch, length - 1)
        return self._mix(base, knn)


def last_tokens_encoder(vocab_size: int, dim: int = 64, window: int = 2, seed: int = 0) -> ContextEncoder:
    """A context encoder with no training: random embeddings of the last ``window`` tokens, concatenated
    (zeros before the start). With it a kNN-LM behaves like a smoothed (window+1)-gram — a baseline and
    a stand-in until a neural encoder is plugged in."""
    check_number("window", window, low=1, integer=True)
    table = torch.randn(vocab_size, dim, generator=torch.Generator().manual_seed(seed)) / math.sqrt(dim)

    def encode(ids: torch.Tensor) -> torch.Tensor:
        emb = table[ids]  # [B, T, d]
        shifted = [emb] + [torch.nn.functional.pad(emb, (0, 0, j, 0))[:, :emb.shape[1]] for j in range(1, window)]
        return torch.cat(shifted, dim=2)

    return encode


def hidden_state_encoder(model) -> ContextEncoder:
    """A transformer's final hidden states (after its last norm, the input of the output head) as
    context representations: row t of ``hidden_states(ids)`` represents the prefix ids[:, :t+1]."""
    if getattr(getattr(model, "config", None), "causal", False) is not True:
        raise ModelError("kNN-LM contexts need a causal transformer (hidden_states, causal attention)",
                         "pass a TransformerLM with a causal preset (gpt2, llama, vaswani)")

    def encode(ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.hidden_states(ids.to(model.device))[0].float().cpu()

    return encode
