"""Token masks: which vocabulary tokens keep the output inside a grammar, and the logits processor
that applies them.

``TokenIndex`` holds every ordinary token's bytes (``Tokenizer.token_pieces``: byte-level BPE
tokens with half a character stay half a character) as columns of a byte matrix sorted by length.
The mask of an automaton configuration walks all tokens at once, one byte position per step, with
table lookups (``Automaton.table``), dropping a token as soon as it leaves the grammar — the
vectorised form of walking a token trie (Willard & Louf, 2023, "Efficient Guided Generation for
Large Language Models"; Koo et al., 2024, on the token-level automaton). A configuration's mask is
computed once and cached, so after the first visit a step costs a lookup and a ``masked_fill``.

``Constrain`` is a logits processor (``lmlab.generate.processors``): each row's configuration is
a function of that row's generated ids, cached by prefix, so the same object serves n samples,
beam rows that are copied and reordered, and speculative drafts checked position by position,
with no per-row state to fan out. End tokens are allowed exactly where the grammar accepts.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...core.errors import ConfigError, InputError
from .automaton import DEAD, UNKNOWN, Automaton

NEG_INF = float("-inf")


class TokenIndex:
    """The vocabulary as bytes, arranged for walking every token through an automaton at once."""

    def __init__(self, pieces: Sequence[bytes | None]) -> None:
        self.vocab_size = len(pieces)
        self.pieces = list(pieces)
        ordinary = [i for i, p in enumerate(pieces) if p]
        lengths = np.array([len(pieces[i]) for i in ordinary], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        self.ids = np.array(ordinary, dtype=np.int64)[order]
        self.lengths = lengths[order]
        longest = int(self.lengths[0]) if len(self.lengths) else 0
        # counts[j]: tokens longer than j bytes (a prefix of the sorted order); columns[j] their byte j
        self.counts = [int((self.lengths > j).sum()) for j in range(longest)]
        self.columns = []
        for j in range(longest):
            n = self.counts[j]
            self.columns.append(np.frombuffer(b"".join(pieces[i][j:j + 1] for i in self.ids[:n]), dtype=np.uint8)
                                .astype(np.int64))

    def allowed(self, automaton: Automaton, config: int) -> tuple[np.ndarray, np.ndarray]:
        """Bool [vocab_size]: tokens whose bytes, read from ``config``, stay inside the grammar; and the
        distinct configurations those tokens lead to."""
        mask = np.zeros(self.vocab_size, dtype=bool)
        if config == DEAD or not self.counts:
            return mask, np.zeros(0, dtype=np.int64)
        at = np.arange(self.counts[0])  # positions (in length order) of tokens still alive
        states = np.full(len(at), config, dtype=np.int64)
        ends = []
        for j, column in enumerate(self.columns):
            cut = int(np.searchsorted(at, self.counts[j]))
            if cut < len(at):  # tokens that ended before byte j survived every byte: allowed
                mask[self.ids[at[cut:]]] = True
                ends.append(states[cut:])
                at, states = at[:cut], states[:cut]
            if not len(at):
                break
            flat = states * 256 + column[at]
            nxt = automaton.table.reshape(-1)[flat]
            if (nxt == UNKNOWN).any():
                automaton.fill_rows(np.unique(states[nxt == UNKNOWN]).tolist())
                nxt = automaton.table.reshape(-1)[flat]
            alive = nxt != DEAD
            at, states = at[alive], nxt[alive]
        if len(at):
            mask[self.ids[at]] = True
            ends.append(states)
        return mask, np.unique(np.concatenate(ends)) if ends else np.zeros(0, dtype=np.int64)


_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INDEX_LOCK = threading.Lock()


def token_index(tokenizer: Any) -> TokenIndex:
    """The tokenizer's ``TokenIndex``, built once per tokenizer object."""
    with _INDEX_LOCK:
        index = _INDEXES.get(tokenizer)
        if index is None:
            index = _INDEXES[tokenizer] = TokenIndex(tokenizer.token_pieces())
        return index


class CompiledConstraint:
    """A grammar's automaton against one vocabulary: per-configuration masks (cached) and moves."""

    def __init__(self, automaton: Automaton, index: TokenIndex, description: str = "") -> None:
        self.automaton, self.index, self.description = automaton, index, description
        self._masks: dict[int, np.ndarray] = {}
        self._next: dict[int, np.ndarray] = {}  # the configurations a configuration's tokens lead to
        self._moves: dict[tuple[int, int], int] = {}
        self.misses = 0

    @property
    def start(self) -> int:
        return self.automaton.start

    def mask(self, config: int) -> np.ndarray:
        """Bool [vocab]: the tokens allowed in ``config`` (end tokens not included)."""
        found = self._masks.get(config)
        if found is None:
            with self.automaton.lock:
                found = self._masks.get(config)
                if found is None:
                    self.misses += 1
                    found, self._next[config] = self.index.allowed(self.automaton, config)
                    self._masks[config] = found
        return found

    def precompute(self, max_states: int = 4096, budget_s: float = 1.0) -> int:
        """Compute the masks of the configurations tokens can reach from the start, breadth first, until
        there are no more (a regular language), ``max_states`` or ``budget_s`` seconds (a recursive one
        has unboundedly many: the rest are computed when first met). Returns how many are known."""
        deadline = time.perf_counter() + budget_s
        queue, seen = deque([self.start]), {self.start}
        while queue and len(self._masks) < max_states and time.perf_counter() < deadline:
            config = queue.popleft()
            self.mask(config)
            for nxt in self._next[config].tolist():
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return len(self._masks)

    def move(self, config: int, token: int) -> int:
        """The configuration after ``token`` (DEAD if it leaves the grammar or is special)."""
        key = (config, token)
        found = self._moves.get(key)
        if found is None:
            piece = self.index.pieces[token] if 0 <= token < self.index.vocab_size else None
            found = DEAD if not piece else self.automaton.walk(config, piece)
            self._moves[key] = found
        return found

    def accepts(self, config: int) -> bool:
        return self.automaton.accepting[config]

    def check_vocabulary(self) -> None:
        """The start must allow some token (else this vocabulary cannot write the language)."""
        if not self.mask(self.start).any() and not self.accepts(self.start):
            raise ConfigError(f"no token of this vocabulary can begin {self.description or 'the constrained output'}",
                              "use a tokenizer that has the characters the constraint needs")


class Constrain:
    """Logits processor: scores of tokens that would leave the grammar become -inf; the end tokens
    (``end_ids``) are allowed only where the output so far is a complete match.

    Runs first in the chain (``DecodingSettings.constraint``), on raw scores, so penalties and
    truncation see only allowed tokens. A row that can no longer continue (its vocabulary cannot
    write any allowed byte) raises an InputError naming the text so far.
    """

    def __init__(self, compiled: CompiledConstraint, end_ids: Sequence[int]) -> None:
        if not end_ids:
            raise ConfigError("constrained decoding needs an end token to stop on",
                              "the model has no EOS: pass stop_ids")
        self.compiled, self.end_ids = compiled, tuple(int(i) for i in end_ids)
        self._configs: dict[tuple[int, ...], int] = {(): compiled.start}
        self._masks: dict[tuple[int, int, str], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"Constrain({self.compiled.description or 'grammar'})"

    def config(self, generated: tuple[int, ...]) -> int:
        """The automaton configuration after a row's generated ids (cached by prefix)."""
        found = self._configs.get(generated)
        if found is not None:
            return found
        k = len(generated) - 1
        while generated[:k] not in self._configs:
            k -= 1
        config = self._configs[generated[:k]]
        for i in range(k, len(generated)):
            config = self.compiled.move(config, generated[i])
            self._configs[generated[:i + 1]] = config
        return config

    def allowed(self, config: int, width: int, device: torch.device) -> torch.Tensor:
        """Bool [width]: the tokens allowed in ``config``, end tokens included where it accepts."""
        key = (config, width, str(device))
        found = self._masks.get(key)
        if found is None:
            mask = np.zeros(width, dtype=bool)
            if config != DEAD:
                allowed = self.compiled.mask(config)
                n = min(width, len(allowed))
                mask[:n] = allowed[:n]
            if config == DEAD or self.compiled.accepts(config):
                mask[[i for i in self.end_ids if i < width]] = True
            found = self._masks[key] = torch.from_numpy(mask).to(device)
        return found

    def __call__(self, scores: torch.Tensor, ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
        rows = ids[:, prompt_length:].tolist()
        masks = []
        live: set[tuple[int, ...]] = {()}
        for row in rows:
            key = tuple(row)
            config = self.config(key)
            mask = self.allowed(config, scores.shape[1], scores.device)
            if config != DEAD and not bool(mask.any()):
                text = b"".join(self.compiled.index.pieces[t] or b"" for t in key).decode("utf-8", "replace")
                raise InputError(f"the constrained output cannot continue after {text!r}: no token of this "
                                 "vocabulary fits", "use a tokenizer that has the characters the constraint needs")
            masks.append(mask)
            live.update(key[:j] for j in range(max(0, len(key) - 1), len(key) + 1))
        if len(self._configs) > 4 * len(live) + 64:  # keep the prefixes rows can still extend
            self._configs = {k: v for k, v in self._configs.items() if k in live}
        return scores.masked_fill(~torch.stack(masks), NEG_INF)


__all__ = ["CompiledConstraint", "Constrain", "TokenIndex", "token_index"]
