"""Word-level and character-level tokenizers: a counted vocabulary with ``<unk>`` for the rest.

Both are the Hugging Face ``WordLevel`` model; they differ only in how text is split
(Unicode whitespace for words, one code point per token for characters) and how ids are
joined back (a space between words, nothing between characters).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from pathlib import Path

import numpy as np

from ..core.errors import DataError, ModelError
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from .base import TrainableTokenizer, encode_documents

DEFAULT_SPECIALS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
LEVELS = ("word", "char")

# Unicode White_Space, as HF tokenizers' WhitespaceSplit (Rust char::is_whitespace) defines it;
# Python's str.split() would also split on \x1c-\x1f, which are not whitespace there.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WORD_RE = re.compile(f"[^{_WHITESPACE}]+")
_CHAR_SPLIT_PATTERN = r"[\s\S]"


def split_words(text: str) -> list[str]:
    """Split on runs of Unicode whitespace (HF ``WhitespaceSplit``)."""
    if "\x1c" in text or "\x1d" in text or "\x1e" in text or "\x1f" in text:
        return _WORD_RE.findall(text)
    return text.split()  # the same split where \x1c-\x1f (white space to Python only) do not occur


class WordLevelTokenizer(TrainableTokenizer):
    """A vocabulary of whole words (``level="word"``) or characters (``level="char"``).

    ``train`` keeps tokens seen at least ``min_count`` times, at most ``max_size`` of them
    (most frequent first, ties by code point order), after the special tokens, which take
    the first ids in the order unk, bos, eos, pad.
    """

    def __init__(self, level: str = "word", *, min_count: int = 1, max_size: int | None = None,
                 special_tokens: dict[str, str] | None = None, vocab: Sequence[str] | None = None) -> None:
        self.level = check_choice("level", level, LEVELS)
        self.min_count = int(check_number("min_count", min_count, low=1, integer=True))
        self.max_size = None if max_size is None else int(check_number("max_size", max_size, low=1, integer=True))
        self.special_tokens = dict(DEFAULT_SPECIALS if special_tokens is None else special_tokens)
        if "unk" not in self.special_tokens:
            raise ModelError("a word-level tokenizer needs an 'unk' special token")
        self._set_vocab(list(vocab) if vocab is not None else list(dict.fromkeys(self.special_tokens.values())))

    def _set_vocab(self, vocab: list[str]) -> None:
        if len(set(vocab)) != len(vocab):
            raise ModelError("the vocabulary has duplicate entries")
        self.vocab = vocab
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        self._unk = self.ids[self.special_tokens["unk"]]

    # --- protocol -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self.ids.get(token)

    def id_to_token(self, id: int) -> str:
        return self.vocab[id]

    def pieces(self, text: str) -> list[str]:
        """The units this tokenizer maps to ids: words or characters."""
        return split_words(text) if self.level == "word" else list(text)

    def _encode_text(self, text: str) -> list[int]:
        pieces = self.pieces(text)
        return list(map(self.ids.get, pieces, repeat(self._unk, len(pieces))))

    def _encode_text_offsets(self, text: str) -> list[tuple[int, int, int]]:
        ids, unk = self.ids, self._unk
        if self.level == "word":
            return [(ids.get(m.group(), unk), m.start(), m.end()) for m in _WORD_RE.finditer(text)]
        return [(ids.get(c, unk), i, i + 1) for i, c in enumerate(text)]

    def _decode_ids(self, ids: Sequence[int]) -> str:
        sep = " " if self.level == "word" else ""
        return sep.join(self.vocab[i] for i in ids)

    def train(self, texts: Iterable[str]) -> WordLevelTokenizer:
        counts: Counter[str] = Counter()
        for doc in progress(texts, desc=f"counting {self.level}s", unit="doc"):
            counts.update(self.pieces(doc))
        self._keep(counts)
        return self

    def _keep(self, counts: Mapping[str, int]) -> list[str]:
        """Set the vocabulary from piece counts (the rule in the class docstring); returns the kept pieces."""
        specials = list(dict.fromkeys(self.special_tokens.values()))
        kept = sorted((t for t, c in counts.items() if c >= self.min_count and t not in specials),
                      key=lambda t: (-counts[t], t))
        if self.max_size is not None:
            kept = kept[: max(0, self.max_size - len(specials))]
        if not kept:
            raise DataError(f"no {self.level} occurs at least min_count={self.min_count} times",
                            "lower --min-count or use a larger corpus")
        self._set_vocab(specials + kept)
        return kept

    def train_encode(self, corpus: Iterable[str]) -> np.ndarray:
        """Train on ``corpus`` and return it encoded: every document's ids followed by ``</s>``, laid end to
        end (int64) — what an n-gram counter reads.

        A word-level corpus that is a plain UTF-8 file of lines (``Corpus.lines_of``) is read in one numba
        pass over its bytes that counts and encodes at once; any other corpus (or a file with white space
        beyond ASCII's, bytes that are not UTF-8, or a special token's text inside a word) trains, then
        encodes document by document. Both give the same vocabulary and the same ids (tested)."""
        eos = self.special_tokens.get("eos")
        if eos is None:
            raise ModelError("encoding documents with </s> needs an 'eos' special token",
                             "use the default special tokens")
        path = getattr(corpus, "lines_of", None)
        if self.level == "word" and path is not None:
            ids = self._train_encode_file(path, eos)
            if ids is not None:
                return ids
        self.train(corpus)
        return encode_documents(self, corpus)

    def _train_encode_file(self, path: Path, eos: str) -> np.ndarray | None:
        from . import _wordlevel_kernels as kernels

        specials = list(dict.fromkeys(self.special_tokens.values()))
        head = [t.encode("utf-8") for t in specials]
        raw = Path(path).read_bytes()
        buf = np.frombuffer(b"".join(head) + raw, dtype=np.uint8)
        begin = sum(map(len, head))
        status, tokens = kernels.check_bytes(buf, begin)
        if status != kernels.OK or tokens == 0:
            return None
        ids, entries = kernels.scan(buf, begin, np.cumsum([len(h) for h in head]).astype(np.int64),
                                    specials.index(eos), tokens)
        counts = entries[:, kernels.VALUE]
        if any(raw.count(h) != counts[s] for s, h in enumerate(head)):
            return None  # a special token's text inside a longer word: encode() cuts it out, so go the general way
        words = [bytes(buf[a:a + n]).decode("utf-8") for a, n in entries[len(specials):, :2].tolist()]
        kept = self._keep(dict(zip(words, counts[len(specials):].tolist(), strict=True)))
        row_of = {w: len(specials) + r for r, w in enumerate(words)}
        to_id = np.full(len(entries), self._unk, dtype=np.int64)
        to_id[:len(specials)] = [self.ids[t] for t in specials]
        to_id[[row_of[w] for w in kept]] = [self.ids[w] for w in kept]
        return to_id[ids]

    # --- tokenizer.json -------------------------------------------------------------------
    def to_hf_json(self) -> dict:
        sp = self.special_tokens
        added = [{"id": self.ids[t], "content": t, "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": True}
                 for t in dict.fromkeys(sp.values())]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": ({"type": "WhitespaceSplit"} if self.level == "word" else
                              {"type": "Split", "pattern": {"Regex": _CHAR_SPLIT_PATTERN},
                               "behavior": "Isolated", "invert": False}),
            "post_processor": bos_eos_template(sp.get("bos"), sp.get("eos"), self.ids),
            "decoder": None if self.level == "word" else {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": dict(self.ids), "unk_token": sp["unk"]},
        }

    @classmethod
    def from_hf_json(cls, data: dict) -> WordLevelTokenizer:
        model = data.get("model") or {}
        vocab_map = model.get("vocab")
        if model.get("type") != "WordLevel" or not isinstance(vocab_map, dict):
            raise ModelError("not a WordLevel tokenizer.json")
        pre = data.get("pre_tokenizer") or {}
        if pre.get("type") == "WhitespaceSplit":
            level = "word"
        elif pre.get("type") == "Split" and (pre.get("pattern") or {}).get("Regex") == _CHAR_SPLIT_PATTERN:
            level = "char"
        else:
            raise ModelError(f"WordLevel tokenizer with pre-tokenizer {pre.get('type')!r} is not supported",
                             "lmlab reads WhitespaceSplit (words) and per-character Split")
        vocab = [None] * len(vocab_map)
        for tok, i in vocab_map.items():
            if not isinstance(i, int) or not 0 <= i < len(vocab) or vocab[i] is not None:
                raise ModelError("tokenizer.json vocabulary ids are not 0..N-1 without gaps")
            vocab[i] = tok
        return cls(level, special_tokens=_special_roles(data, model.get("unk_token")), vocab=vocab)


def bos_eos_template(bos: str | None, eos: str | None, ids: dict[str, int]) -> dict | None:
    """A tokenizer.json TemplateProcessing that wraps sequences in bos … eos (None when neither)."""
    if bos is None and eos is None:
        return None
    single = ([{"SpecialToken": {"id": bos, "type_id": 0}}] if bos else []) + \
        [{"Sequence": {"id": "A", "type_id": 0}}] + \
        ([{"SpecialToken": {"id": eos, "type_id": 0}}] if eos else [])
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}] + \
        ([{"SpecialToken": {"id": eos, "type_id": 1}}] if eos else [])
    special = {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in (bos, eos) if t}
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special}


def _special_roles(data: dict, unk: str | None) -> dict[str, str]:
    """Special roles read back from tokenizer.json: unk from the model, bos/eos from the
    post-processor template (before/after the sequence), pad from the added tokens."""
    roles = {"unk": unk} if unk else {}
    post = data.get("post_processor") or {}
    single = post.get("single") or []
    seq_at = next((i for i, p in enumerate(single) if "Sequence" in p), None)
    for i, p in enumerate(single):
        if "SpecialToken" in p and seq_at is not None:
            roles.setdefault("bos" if i < seq_at else "eos", p["SpecialToken"]["id"])
    for t in data.get("added_tokens") or []:
        if t.get("content") in ("<pad>", "[PAD]"):
            roles.setdefault("pad", t["content"])
    return roles
