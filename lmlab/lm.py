"""The language-model protocol: one interface for everything that assigns probabilities to ids.

n-gram models, feed-forward/RNN/transformer LMs, kNN-LM mixtures and remote models all
subclass ``LanguageModel``; perplexity, sampling and every decoding strategy are written
once against it. The full contract is in ``docs/protocol.md``; in short:

* ``vocab_size`` and special ids (``bos_id``, ``eos_id``, ``pad_id``, ``unk_id``);
* ``initial_state(batch_size)`` — the state before any token (empty KV cache, zero RNN
  hidden state, empty n-gram history);
* ``next_logprobs(tokens, state) -> (logprobs, state)`` — feed ``tokens`` [B, T] (T ≥ 1)
  after what ``state`` has seen; return log p(next | everything so far) as [B, V] and the
  new state. Implementations may update ``state`` in place: always use the returned one;
* ``select_state(state, index)`` — keep/reorder/duplicate batch rows (beam search, n samples);
* ``concat_states(states)`` — the rows of several states as one batch (requests joining a batch);
* ``next_scores(tokens, state)`` — like ``next_logprobs`` but unnormalised (logits on neural
  models), what decoding's logits processors see; ``prefill(prompts)`` — feed several prompts
  of any lengths from the empty state into one batch state. Both have generic defaults that
  models override for speed (the transformer: one padded forward into a preallocated cache);
* ``next_scores_all(tokens, state, attention_mask)`` — the scores after *every* fed position
  [B, T, V] (rows may be left-padded: ``attention_mask`` marks real tokens), and
  ``rewind(state, drop)`` — forget each row's last ``drop[i]`` tokens: together they let
  speculative decoding verify several drafted tokens in one forward pass and take back the
  rejected ones. ``next_scores_all`` has a generic default; ``rewind`` only where the state can
  forget (the transformer's KV cache; ``can_rewind`` tells);
* ``score(ids)`` — log p(ids[:, t] | ids[:, :t]) for t = 1 … T-1 as [B, T-1]. The default
  here feeds one token at a time through ``next_logprobs``; models override it for speed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .core.errors import ModelError

if TYPE_CHECKING:  # torch is imported where it is used: count models (n-grams) train and load without it
    import torch

State = Any


class LanguageModel(ABC):
    """Base class of every lmlab language model (see the module docstring)."""

    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None
    #: the longest context the model can condition on; None when unbounded (n-gram, RNN)
    context_length: int | None = None
    #: False for scores that are not probabilities (stupid backoff): perplexity is then flagged
    normalized: bool = True

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Size of the output distribution."""

    @property
    def device(self) -> torch.device:
        """Where input ids must live; count models work on the CPU."""
        import torch

        return torch.device("cpu")

    @abstractmethod
    def initial_state(self, batch_size: int) -> State:
        """The state of ``batch_size`` empty contexts."""

    @abstractmethod
    def next_logprobs(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Consume ``tokens`` [B, T] and return (log-probabilities [B, V] of the next token, state)."""

    @abstractmethod
    def select_state(self, state: State, index: torch.Tensor) -> State:
        """A state whose row i is row ``index[i]`` of ``state`` (for beams and sample fan-out)."""

    def concat_states(self, states: Sequence[State]) -> State:
        """One state whose rows are the rows of ``states`` in order (requests joining a running batch).

        The default handles states that are tensors with the batch first (n-gram histories,
        feed-forward windows), tuples and lists of such, and None; models with another layout
        override it.
        """
        return concat_rows(list(states))

    def next_scores(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Unnormalised next-token scores [B, V] and the state: what logits processors see (raw logits
        on neural models, log-probabilities on count models); ``log_softmax`` gives ``next_logprobs``."""
        return self.next_logprobs(tokens, state)

    def prefill(self, prompts: Sequence[Sequence[int]], reserve: int = 0,
                setup: Any = None) -> tuple[torch.Tensor, State]:
        """Feed each prompt (ids, any lengths ≥ 1) from the empty state: the next-token scores [N, V]
        and one state holding the N rows. ``reserve`` says how many tokens will follow (a hint
        for preallocating caches); ``setup(state)``, if given, prepares each fresh state before a
        token goes in (KV-cache policies choose storage and observations there). The default runs
        the prompts one by one."""
        import torch

        scores, states = [], []
        for prompt in prompts:
            ids = as_id_tensor(list(prompt), self.vocab_size, self.device)
            state = self.initial_state(1)
            if setup is not None:
                setup(state)
            row, state = self.next_scores(ids, state)
            scores.append(row.float())
            states.append(state)
        return torch.cat(scores), states[0] if len(states) == 1 else self.concat_states(states)

    def next_scores_all(self, tokens: torch.Tensor, state: State, attention_mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, State]:
        """Feed ``tokens`` [B, T] and return the unnormalised scores after every position [B, T, V] and the
        state. Rows may be left-padded: ``attention_mask`` [B, T] (1 real, 0 padding; None: all real)
        says which tokens are fed; the scores at padded positions are undefined. The default feeds
        one position at a time (row by row when there is padding); models override it with one
        forward pass (the transformer)."""
        import torch

        tokens = as_id_tensor(tokens, self.vocab_size, self.device)
        if attention_mask is None or bool(attention_mask.bool().all()):
            out = []
            for t in range(tokens.shape[1]):
                scores, state = self.next_scores(tokens[:, t:t + 1], state)
                out.append(scores)
            return torch.stack(out, dim=1), state
        real = attention_mask.bool().to(tokens.device)
        rows, states = [], []
        for i in range(tokens.shape[0]):
            row_state = self.select_state(state, torch.tensor([i], dtype=torch.long, device=self.device))
            fed = tokens[i, real[i]].view(1, -1)
            scores, row_state = self.next_scores_all(fed, row_state)
            pad = scores.new_full((1, tokens.shape[1] - fed.shape[1], scores.shape[-1]), float("nan"))
            rows.append(torch.cat([pad, scores], dim=1))
            states.append(row_state)
        return torch.cat(rows), states[0] if len(states) == 1 else self.concat_states(states)

    def rewind(self, state: State, drop: Sequence[int]) -> State:
        """The state with each row's last ``drop[i]`` tokens forgotten, as if they had never been fed
        (speculative decoding takes back rejected draft tokens). The default refuses: a state that
        only summarises the past (an RNN's hidden vector, an n-gram history) cannot forget; models
        whose state can (the transformer's KV cache) override it."""
        raise ModelError(f"a {type(self).__name__}'s state cannot forget tokens it has read",
                         "use a transformer model here (its KV cache can be rewound)")

    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities [B, T-1] of ``ids[:, 1:]`` given their prefixes.

        Rows may be right-padded with any valid id: a causal model's scores before the
        padding do not depend on it, so callers simply ignore the padded positions.
        """
        import torch

        ids = as_id_tensor(ids, self.vocab_size, self.device)
        batch, length = ids.shape
        if length < 2:
            return torch.zeros(batch, 0)
        logprobs, state = self.next_logprobs(ids[:, :1], self.initial_state(batch))
        out = torch.empty(batch, length - 1, dtype=logprobs.dtype, device=logprobs.device)
        for t in range(1, length):
            out[:, t - 1] = logprobs.gather(1, ids[:, t:t + 1]).squeeze(1)
            if t < length - 1:
                logprobs, state = self.next_logprobs(ids[:, t:t + 1], state)
        return out


def can_rewind(lm: LanguageModel) -> bool:
    """Whether ``lm`` overrides ``rewind`` (its state can forget its last tokens)."""
    return type(lm).rewind is not LanguageModel.rewind


def concat_rows(states: list) -> Any:
    """Batch-first tensors concatenated along rows; tuples/lists of them element by element; None stays None."""
    import torch

    first = states[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=0)
    if isinstance(first, (tuple, list)):
        return type(first)(concat_rows([s[i] for s in states]) for i in range(len(first)))
    raise ModelError(f"states of type {type(first).__name__} cannot be batched by the default concat_states",
                     "implement concat_states on the model")


def as_id_tensor(ids: Any, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Turn a list / 1-D / 2-D array of ids into a [B, T] long tensor, checking the id range."""
    import torch

    t = torch.as_tensor(ids, dtype=torch.long, device=device)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise ModelError(f"token ids must be a [batch, length] array, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ModelError(f"token id {bad} is outside the model's vocabulary (size {vocab_size})",
                         "the ids come from a tokenizer that does not belong to this model")
    return t


def check_tokenizer(lm: LanguageModel, tokenizer: Any) -> None:
    """Raise ModelError unless ``tokenizer`` can feed ``lm`` (same vocabulary size and special ids)."""
    if tokenizer.vocab_size != lm.vocab_size:
        raise ModelError(
            f"the model and the tokenizer do not belong together: the model has {lm.vocab_size} "
            f"outputs, the tokenizer {tokenizer.vocab_size} ids",
            "use the tokenizer saved with the model (omit --tokenizer to use the model directory's)")
    for role in ("bos_id", "eos_id", "unk_id"):
        mine, theirs = getattr(lm, role), getattr(tokenizer, role)
        if mine is not None and theirs is not None and mine != theirs:
            raise ModelError(f"the model and the tokenizer disagree on {role[:-3]} (model {mine}, tokenizer {theirs})",
                             "use the tokenizer saved with the model")


def check_shared_tokenizer(role: str, tokenizer: Any, target_tokenizer: Any) -> None:
    """Raise ModelError unless ``tokenizer`` (of a draft or amateur model) maps every id to the same token
    as the target's: helper models of speculative and contrastive decoding read the target's ids."""
    mine, theirs = tokenizer.vocab_size, target_tokenizer.vocab_size
    if mine != theirs:
        raise ModelError(f"the {role} model's tokenizer has {mine} ids and the target's {theirs}: they do not share "
                         "a tokenizer", f"use a {role} model trained with the target's tokenizer")
    for i in range(theirs):
        if tokenizer.id_to_token(i) != target_tokenizer.id_to_token(i):
            raise ModelError(f"the {role} model's tokenizer maps id {i} to {tokenizer.id_to_token(i)!r}, the target's "
                             f"to {target_tokenizer.id_to_token(i)!r}: they do not share a tokenizer",
                             f"use a {role} model trained with the target's tokenizer")


def windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over ``length`` ids for a model that sees ``context`` ids at once.

    Each window is (begin, end, first): the model reads ids[begin:end] and the positions
    first … end-1 are counted, so every predicted position (1 … length-1) is counted once,
    with up to ``context - stride`` ids of history from the window before.
    """
    if length <= context:
        return [(0, length, 1)]
    out, counted, begin = [], 1, 0
    while True:
        end = min(begin + context, length)
        out.append((begin, end, counted))
        counted = end
        if end == length:
            return out
        begin += stride
