"""The tokenizer protocol: the only place where text becomes ids and ids become text.

Every tokenizer has a vocabulary, special tokens by role (``unk``, ``bos``, ``eos``,
``pad``), ``encode``/``decode`` and their batch forms, and saves itself as a Hugging Face
``tokenizer.json`` so files move both ways between lmlab and the ecosystem. Special-token
strings found in the input text become their single ids (as in HF ``tokenizers``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, ModelError
from ..core.io import write_json
from .decoders import TextStreamDecoder

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class BatchEncoding:
    """A padded batch: ids, attention masks (1 = token, 0 = padding) and character offsets."""

    ids: list[list[int]]
    attention_mask: list[list[int]]
    offsets: list[list[tuple[int, int]]]


class Tokenizer(ABC):
    """Base class of all lmlab tokenizers (see the module docstring for the contract)."""

    #: role → token string, e.g. {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
    special_tokens: dict[str, str]

    # --- vocabulary -------------------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry, or None when it is not in the vocabulary."""

    @abstractmethod
    def id_to_token(self, id: int) -> str:
        """The vocabulary entry of an id."""

    def _role_id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self.token_to_id(token)

    @property
    def unk_id(self) -> int | None:
        return self._role_id("unk")

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def start_id(self) -> int | None:
        """The id a sequence starts from: BOS, or EOS where there is no BOS (GPT-2's convention,
        whose documents are separated by <|endoftext|>)."""
        return self.bos_id if self.bos_id is not None else self.eos_id

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def special_ids(self) -> set[int]:
        return {i for i in (self.token_to_id(t) for t in self.special_tokens.values()) if i is not None}

    # --- text <-> ids -------------------------------------------------------------------
    @abstractmethod
    def _encode_text(self, text: str) -> list[int]:
        """Encode ordinary text (no special tokens inside it)."""

    @abstractmethod
    def _decode_ids(self, ids: Sequence[int]) -> str:
        """Decode ids that may include special tokens (already filtered if asked)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text → ids. ``add_special_tokens`` wraps the result in BOS … EOS where defined."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, not {type(text).__name__}")
        ids: list[int] = []
        for segment, special_id in self._split_special(text):
            if special_id is not None:
                ids.append(special_id)
            elif segment:
                ids.extend(self._encode_text(segment))
        if add_special_tokens:
            ids = self._wrap(ids)
        return ids

    def _encode_text_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """(id, start, end) per token of ordinary text; subclasses with offsets override this."""
        raise NotImplementedError(f"{type(self).__name__} does not report offsets")

    def encode_with_offsets(self, text: str, add_special_tokens: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and, per id, the character span of ``text`` it came from ((0, 0) for added specials)."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for start, end, special_id in self._special_spans(text):
            if special_id is not None:
                ids.append(special_id)
                offsets.append((start, end))
            elif end > start:
                for tid, s, e in self._encode_text_offsets(text[start:end]):
                    ids.append(tid)
                    offsets.append((start + s, start + e))
        return self._wrap_offsets(ids, offsets) if add_special_tokens else (ids, offsets)

    def _wrap_offsets(self, ids: list[int], offsets: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
        """``_wrap`` for ids with offsets: added specials get the empty span (0, 0)."""
        wrapped = self._wrap(ids)
        n_before = self._wrap([-1]).index(-1)  # specials placed before the sequence
        n_after = len(wrapped) - n_before - len(ids)
        return wrapped, [(0, 0)] * n_before + offsets + [(0, 0)] * n_after

    def batch_encode(self, texts: Iterable[str], *, add_special_tokens: bool = False, max_length: int | None = None,
                     padding: bool | str = True, padding_side: str = "right") -> BatchEncoding:
        """Encode texts with offsets; truncate to ``max_length``; pad to the longest (or to max_length
        with ``padding="max_length"``) with attention masks."""
        rows = [self.encode_with_offsets(t) for t in texts]
        n_added = len(self._wrap([])) if add_special_tokens else 0
        if max_length is not None:
            if max_length <= n_added:
                raise ConfigError(f"max_length must be more than the {n_added} added special tokens, not {max_length}")
            rows = [(ids[:max_length - n_added], offs[:max_length - n_added]) for ids, offs in rows]
        if add_special_tokens:
            rows = [self._wrap_offsets(ids, offs) for ids, offs in rows]
        width = max((len(ids) for ids, _ in rows), default=0)
        if padding == "max_length":
            if max_length is None:
                raise ConfigError("padding='max_length' needs max_length")
            width = max_length
        masks = [[1] * len(ids) for ids, _ in rows]
        if padding:
            pad = self.pad_id
            if pad is None:
                raise ConfigError("this tokenizer has no pad token", "pass padding=False or add a 'pad' special token")
            for (ids, offs), mask in zip(rows, masks, strict=True):
                extra = width - len(ids)
                if padding_side == "left":
                    ids[:0], offs[:0], mask[:0] = [pad] * extra, [(0, 0)] * extra, [0] * extra
                else:
                    ids += [pad] * extra
                    offs += [(0, 0)] * extra
                    mask += [0] * extra
        return BatchEncoding([ids for ids, _ in rows], masks, [offs for _, offs in rows])

    def stream_decoder(self, skip_special_tokens: bool = False) -> TextStreamDecoder:
        """An incremental decoder: ``push(id) -> str`` returns the newly complete text, ``flush()`` the rest."""
        return TextStreamDecoder(lambda ids: self.decode(ids, skip_special_tokens))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Ids → text, optionally dropping special tokens."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ModelError(f"token id {i} is outside the vocabulary (size {self.vocab_size})",
                                 "the ids were probably produced with another tokenizer")
        if skip_special_tokens:
            special = self.special_ids
            ids = [i for i in ids if i not in special]
        return self._decode_ids(ids)

    def token_pieces(self) -> list[bytes | None]:
        """The bytes each token adds to decoded text in the middle of a sequence (None for special
        tokens): the alphabet that constrained decoding matches tokens with. A tokenizer whose
        decoding is not the concatenation of these pieces (one that joins words with spaces) is refused."""
        special = self.special_ids
        ordinary = [i for i in range(self.vocab_size) if i not in special]
        pieces: list[bytes | None] = [None] * self.vocab_size
        for i in ordinary:
            pieces[i] = self.decode([i]).encode("utf-8")
        pairs = list(zip(ordinary[:50], ordinary[50:100] or ordinary[:50], strict=False))
        for a, b in pairs:
            if self.decode([a, b]).encode("utf-8") != pieces[a] + pieces[b]:
                raise ConfigError(f"this tokenizer's text is not the concatenation of its tokens (tokens {a} and {b} "
                                  "decode to something else together)", "constrained decoding needs a tokenizer whose "
                                  "pieces concatenate: a byte-level BPE or a character tokenizer")
        return pieces

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def _wrap(self, ids: list[int]) -> list[int]:
        bos, eos = self.bos_id, self.eos_id
        return ([bos] if bos is not None else []) + ids + ([eos] if eos is not None else [])

    def _split_special(self, text: str) -> list[tuple[str, int | None]]:
        """Cut ``text`` around occurrences of special-token strings (longest match first)."""
        return [(text[s:e], tid) for s, e, tid in self._special_spans(text)]

    def _special_spans(self, text: str) -> list[tuple[int, int, int | None]]:
        """(start, end, id or None) for special-token matches and the ordinary text between them."""
        pattern = self._special_pattern()
        if pattern is None:
            return [(0, len(text), None)]
        out: list[tuple[int, int, int | None]] = []
        pos = 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                out.append((pos, m.start(), None))
            out.append((m.start(), m.end(), self._special_match_id(m)))
            pos = m.end()
        if pos < len(text):
            out.append((pos, len(text), None))
        return out

    def _special_match_id(self, match: re.Match) -> int:
        return self.token_to_id(match.group())

    def _special_pattern(self) -> re.Pattern | None:
        cached = self.__dict__.get("_special_re")
        if cached is not None and cached[0] == self.vocab_size:
            return cached[1]
        tokens = sorted({t for t in self.special_tokens.values() if self.token_to_id(t) is not None},
                        key=lambda t: (-len(t), t))
        pattern = re.compile("|".join(re.escape(t) for t in tokens)) if tokens else None
        self.__dict__["_special_re"] = (self.vocab_size, pattern)
        return pattern

    # --- files --------------------------------------------------------------------------
    @abstractmethod
    def to_hf_json(self) -> dict:
        """The tokenizer as a Hugging Face ``tokenizer.json`` object."""

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` (atomically) to ``path``, or into ``path`` if it is a directory."""
        p = Path(path)
        if p.is_dir() or p.suffix != ".json":
            p = p / TOKENIZER_FILE
        write_json(p, self.to_hf_json())
        return p

    def fingerprint(self) -> str:
        """A short hash of the tokenizer's full definition, to tell tokenizers apart."""
        blob = json.dumps(self.to_hf_json(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class TrainableTokenizer(Tokenizer):
    """A tokenizer whose vocabulary is learned from a corpus with ``train(texts)``."""

    @abstractmethod
    def train(self, texts: Iterable[str]) -> TrainableTokenizer:
        """Learn the vocabulary from an iterable of documents; returns self."""


def encode_documents(tokenizer: Tokenizer, documents: Iterable[str]) -> np.ndarray:
    """Every document's ids followed by the tokenizer's ``</s>``, laid end to end as one int64 array — what
    an n-gram counter reads."""
    eos = tokenizer.eos_id
    if eos is None:
        raise ModelError("encoding documents with </s> needs a tokenizer with an end-of-sentence token",
                         "use the word or char tokenizer (they define one)")
    ids = array("q")
    for doc in documents:
        ids.extend(tokenizer.encode(doc))
        ids.append(eos)
    return np.frombuffer(ids, dtype=np.int64) if len(ids) else np.empty(0, dtype=np.int64)
