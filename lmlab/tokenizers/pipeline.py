"""The subword tokenizer: normalizer → pre-tokenizer → model → post-processor, and back by a decoder.

This is the Hugging Face ``tokenizers`` pipeline. Each stage is kept as its
``tokenizer.json`` object (so saving is exact) and built into plain functions for speed.
Added tokens (chat markers, ``[CLS]``…) are matched in the raw text first and never split.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from itertools import chain

from ..core.errors import ModelError
from .base import Tokenizer
from .decoders import (
    ByteStreamDecoder,
    TextStreamDecoder,
    build_decoder,
    byte_level_decoder,
    token_bytes,
)
from .models import MODELS, SubwordModel, Unigram
from .normalizers import WHITESPACE, build_normalizer, normalize_aligned
from .pre_tokenizers import build_pre_tokenizer

_WS = "[" + "".join(re.escape(c) for c in sorted(WHITESPACE)) + "]*"


def added_token(content: str, id: int, special: bool = True, **flags) -> dict:
    """An entry of ``added_tokens`` in tokenizer.json form."""
    return {"id": id, "content": content, "single_word": flags.get("single_word", False),
            "lstrip": flags.get("lstrip", False), "rstrip": flags.get("rstrip", False),
            "normalized": flags.get("normalized", not special), "special": special}


class SubwordTokenizer(Tokenizer):
    """A BPE, byte-level BPE, WordPiece or Unigram tokenizer with its full HF pipeline."""

    def __init__(self, model: SubwordModel, *, normalizer: dict | None = None, pre_tokenizer: dict | None = None,
                 decoder: dict | None = None, post_processor: dict | None = None,
                 added_tokens: Sequence[dict] = (), special_tokens: dict[str, str] | None = None) -> None:
        self.model = model
        self.normalizer_spec, self.pre_tokenizer_spec = normalizer, pre_tokenizer
        self.decoder_spec, self.post_processor = decoder, post_processor
        self.added_tokens = [dict(t) for t in added_tokens]
        self._normalize = build_normalizer(normalizer)
        self._pre = build_pre_tokenizer(pre_tokenizer)
        self._decoder = build_decoder(decoder)
        self._added_ids = {t["content"]: int(t["id"]) for t in self.added_tokens}
        self._added_tokens_by_id = {int(t["id"]): t["content"] for t in self.added_tokens}
        self._size = max([len(model.vocab)] + [i + 1 for i in self._added_tokens_by_id])
        self._special_added = {int(t["id"]) for t in self.added_tokens if t.get("special")}
        self.special_tokens = dict(special_tokens or {})
        self._added_re, self._added_groups = self._compile_added()
        self._added_first_chars = {t["content"][0] for t in self.added_tokens if t["content"]}
        self._piece_cache: dict[str, list[int]] = {}  # raw piece (not first in its text) → ids
        self._template = _template_ids(post_processor, self)

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._size

    def token_to_id(self, token: str) -> int | None:
        tid = self._added_ids.get(token)
        return tid if tid is not None else self.model.ids.get(token)

    def id_to_token(self, id: int) -> str:
        token = self._added_tokens_by_id.get(id)
        if token is not None:
            return token
        if 0 <= id < len(self.model.vocab):
            return self.model.vocab[id]
        raise ModelError(f"token id {id} is outside the vocabulary (size {self.vocab_size})")

    def get_vocab(self) -> dict[str, int]:
        vocab = dict(self.model.ids)
        vocab.update(self._added_ids)
        return vocab

    @property
    def special_ids(self) -> set[int]:
        return super().special_ids | self._special_added

    # --- added tokens ---------------------------------------------------------------------
    def _compile_added(self) -> tuple[re.Pattern | None, list[int]]:
        tokens = sorted(self.added_tokens, key=lambda t: (-len(t["content"]), t["content"]))
        parts, groups = [], []
        for t in tokens:
            if not t["content"]:
                continue
            body = re.escape(t["content"])
            if t.get("single_word"):
                body = rf"(?<!\w){body}(?!\w)"
            parts.append(f"({_WS if t.get('lstrip') else ''}{body}{_WS if t.get('rstrip') else ''})")
            groups.append(int(t["id"]))
        if not parts:
            return None, groups
        starts = {t["content"][0] for t in tokens if t["content"]}
        if any(t.get("lstrip") for t in tokens):
            starts |= WHITESPACE
        # the lookahead lets the engine skip positions where no added token can begin
        first = "[" + "".join(re.escape(c) for c in sorted(starts)) + "]"
        return re.compile(f"(?={first})(?:{'|'.join(parts)})"), groups

    def _special_pattern(self) -> re.Pattern | None:
        return self._added_re

    def _special_spans(self, text: str) -> list[tuple[int, int, int | None]]:
        if not any(c in text for c in self._added_first_chars):  # cheap test before the regex
            return [(0, len(text), None)]
        return super()._special_spans(text)

    def _special_match_id(self, match: re.Match) -> int:
        return self._added_groups[match.lastindex - 1]

    # --- encoding -------------------------------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        if self._normalize is not None:
            text = self._normalize(text)
        if not text:
            return []
        pre, encode = self._pre, self.model.encode
        if pre is None:
            return list(encode(text))
        pieces = pre.pieces(text)
        if not pieces:
            return []
        transform = pre.transform
        if transform is None:
            return [i for p in pieces for i in encode(p)]
        cache = self._piece_cache
        hits = list(map(cache.get, pieces))  # C-speed lookups; most pieces were seen before
        hits[0] = encode(transform(pieces[0], True))
        if None in hits:
            for k, hit in enumerate(hits):
                if hit is None:
                    p = pieces[k]
                    hit = hits[k] = encode(transform(p, False))
                    if len(cache) < 1_000_000:
                        cache[p] = hit
        return list(chain.from_iterable(hits))

    def _encode_text_offsets(self, text: str) -> list[tuple[int, int, int]]:
        normalized, align = normalize_aligned(self._normalize, text)
        if not normalized:
            return []
        pre = self._pre
        spans = pre.split(normalized) if pre is not None else [(0, len(normalized))]
        out = []
        for k, (s, e) in enumerate(spans):
            piece, piece_align = normalized[s:e], list(range(s, e))
            if pre is not None and pre.transform is not None:
                chars, piece_align = [], []
                for j, ch in enumerate(piece):
                    t = pre.transform(ch, k == 0 and j == 0)
                    chars.append(t)
                    piece_align.extend([s + j] * len(t))
                piece = "".join(chars)
            for tid, a, b in self.model.tokenize(piece):
                first, last = piece_align[a], piece_align[b - 1]
                out.append((tid, align[first][0], align[last][1]))
        return out

    def sample_encode(self, text: str, alpha: float = 0.1, nbest_size: int = -1, seed: int | None = None) -> list[int]:
        """Subword regularisation (Unigram only): a segmentation sampled ∝ P^alpha, for training-time noise."""
        if not isinstance(self.model, Unigram):
            raise ModelError(f"sampling needs a Unigram model, not {self.model.type_name}",
                             "train with kind='unigram' or use encode()")
        rng = random.Random(seed)
        ids: list[int] = []
        for start, end, special_id in self._special_spans(text):
            if special_id is not None:
                ids.append(special_id)
                continue
            segment = text[start:end]
            if self._normalize is not None:
                segment = self._normalize(segment)
            pre = self._pre
            pieces = pre.pieces(segment) if pre is not None else ([segment] if segment else [])
            for k, p in enumerate(pieces):
                if pre is not None and pre.transform is not None:
                    p = pre.transform(p, k == 0)
                ids += [t[0] for t in self.model.sample(p, alpha, rng, nbest_size)]
        return ids

    def _wrap(self, ids: list[int]) -> list[int]:
        if self._template is None:  # no post-processor: nothing is added (as in HF)
            return list(ids)
        before, after = self._template
        return before + ids + after

    # --- decoding -------------------------------------------------------------------------
    def _decode_ids(self, ids: Sequence[int]) -> str:
        tokens = [self.id_to_token(i) for i in ids]
        if self._decoder is None:
            return "".join(tokens)
        return "".join(self._decoder(tokens))

    def token_pieces(self) -> list[bytes | None]:
        """Byte-level BPE: each token's own bytes (half a character stays half a character)."""
        if self._decoder is not byte_level_decoder:
            return super().token_pieces()
        special = self.special_ids
        return [None if i in special else token_bytes(self.id_to_token(i)) for i in range(self.vocab_size)]

    def stream_decoder(self, skip_special_tokens: bool = False) -> ByteStreamDecoder | TextStreamDecoder:
        if self._decoder is byte_level_decoder:
            return ByteStreamDecoder(self.id_to_token, self.special_ids if skip_special_tokens else set())
        return super().stream_decoder(skip_special_tokens)

    # --- tokenizer.json -------------------------------------------------------------------
    def to_hf_json(self) -> dict:
        return {"version": "1.0", "truncation": None, "padding": None,
                "added_tokens": sorted(self.added_tokens, key=lambda t: t["id"]),
                "normalizer": self.normalizer_spec, "pre_tokenizer": self.pre_tokenizer_spec,
                "post_processor": self.post_processor, "decoder": self.decoder_spec,
                "model": self.model.to_json()}

    @classmethod
    def from_hf_json(cls, data: dict) -> SubwordTokenizer:
        model_spec = data.get("model") or {}
        model = MODELS[model_spec.get("type")].from_json(model_spec)
        added = data.get("added_tokens") or []
        return cls(model, normalizer=data.get("normalizer"), pre_tokenizer=data.get("pre_tokenizer"),
                   decoder=data.get("decoder"), post_processor=data.get("post_processor"), added_tokens=added,
                   special_tokens=special_roles(data, model))


def special_roles(data: dict, model: SubwordModel) -> dict[str, str]:
    """Special-token roles read back from a tokenizer.json: unk from the model, bos/eos from the
    post-processor template, pad from the padding settings or a conventional name."""
    roles: dict[str, str] = {}
    spec = data.get("model") or {}
    if spec.get("unk_token"):
        roles["unk"] = spec["unk_token"]
    elif spec.get("type") == "Unigram" and spec.get("unk_id") is not None:
        roles["unk"] = model.vocab[spec["unk_id"]]
    post = data.get("post_processor") or {}
    if post.get("type") == "TemplateProcessing":
        single = post.get("single") or []
        seq_at = next((i for i, p in enumerate(single) if "Sequence" in p), None)
        for i, p in enumerate(single):
            if "SpecialToken" in p and seq_at is not None:
                roles.setdefault("bos" if i < seq_at else "eos", p["SpecialToken"]["id"])
    elif post.get("type") in ("BertProcessing", "RobertaProcessing"):
        roles["bos"], roles["eos"] = post["cls"][0], post["sep"][0]
    padding = data.get("padding") or {}
    if padding.get("pad_token"):
        roles["pad"] = padding["pad_token"]
    for t in data.get("added_tokens") or []:
        for role, names in (("pad", ("<pad>", "[PAD]")), ("unk", ("<unk>", "[UNK]")),
                            ("bos", ("<s>",)), ("eos", ("</s>",))):
            if t.get("content") in names:
                roles.setdefault(role, t["content"])
    return roles


def _template_ids(post: dict | None, tok: SubwordTokenizer) -> tuple[list[int], list[int]] | None:
    """The ids a single-sequence post-processor puts before and after the sequence."""
    if not post:
        return None
    kind = post.get("type")
    if kind == "TemplateProcessing":
        before: list[int] = []
        after: list[int] = []
        seen = False
        specials = post.get("special_tokens") or {}
        for p in post.get("single") or []:
            if "Sequence" in p:
                seen = True
                continue
            name = p["SpecialToken"]["id"]
            ids = specials.get(name, {}).get("ids") or [tok.token_to_id(name)]
            (after if seen else before).extend(int(i) for i in ids)
        return before, after
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [int(post["cls"][1])], [int(post["sep"][1])]
    if kind == "ByteLevel":
        return [], []
    if kind == "Sequence":
        parts = [_template_ids(p, tok) for p in post.get("processors", [])]
        parts = [p for p in parts if p is not None]
        return ([i for p in parts for i in p[0]], [i for p in parts for i in p[1]]) if parts else None
    raise ModelError(f"post-processor {kind!r} is not supported",
                     "supported: TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence")
