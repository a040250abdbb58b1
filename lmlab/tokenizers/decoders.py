"""Decoders: token strings → text, undoing what the pre-tokenizer and model did.

A decoder maps the list of token strings to a list of strings that are concatenated (HF's
``decode_chain``); built from ``tokenizer.json`` objects by ``build_decoder``. Byte-level
decoding also has an incremental form (``ByteStreamDecoder``) that holds back incomplete
UTF-8 so that a stream of ids can be printed as it is produced.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable

from ..core.errors import ModelError
from .pre_tokenizers import CHAR_TO_BYTE, METASPACE

Decoder = Callable[[list[str]], list[str]]


def token_bytes(token: str) -> bytes:
    """The bytes a byte-level token stands for (a token outside the alphabet is its own UTF-8)."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return token.encode("utf-8")


def byte_level_decoder(tokens: list[str]) -> list[str]:
    return [b"".join(token_bytes(t) for t in tokens).decode("utf-8", errors="replace")]


def wordpiece_cleanup(text: str) -> str:
    """BERT's detokenizer clean-up of spaces before punctuation and contractions."""
    for old, new in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                     (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(old, new)
    return text


def wordpiece_decoder(prefix: str = "##", cleanup: bool = True) -> Decoder:
    def decode(tokens: list[str]) -> list[str]:
        out = []
        for i, t in enumerate(tokens):
            if i and t.startswith(prefix):
                t = t[len(prefix):]
            elif i:
                t = " " + t
            out.append(wordpiece_cleanup(t) if cleanup else t)
        return out
    return decode


def metaspace_decoder(replacement: str = METASPACE, prepend_scheme: str = "always") -> Decoder:
    def decode(tokens: list[str]) -> list[str]:
        out = []
        for i, t in enumerate(tokens):
            t = t.replace(replacement, " ")
            if i == 0 and prepend_scheme != "never" and t.startswith(" "):
                t = t[1:]
            out.append(t)
        return out
    return decode


def bpe_suffix_decoder(suffix: str = "</w>") -> Decoder:
    def decode(tokens: list[str]) -> list[str]:
        last = len(tokens) - 1
        return [t.replace(suffix, "" if i == last else " ") for i, t in enumerate(tokens)]
    return decode


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_fallback_decoder(tokens: list[str]) -> list[str]:
    """``<0xNN>`` tokens are bytes; runs of them are decoded together (invalid UTF-8 → U+FFFD each)."""
    out: list[str] = []
    pending: list[int] = []
    for t in tokens + [""]:
        m = _BYTE_TOKEN.fullmatch(t)
        if m:
            pending.append(int(m.group(1), 16))
            continue
        if pending:
            try:
                out.append(bytes(pending).decode("utf-8"))
            except UnicodeDecodeError:
                out.extend("\ufffd" * len(pending))
            pending = []
        if t:
            out.append(t)
    return out


def _sequence(decoders: list[Decoder]) -> Decoder:
    def decode(tokens: list[str]) -> list[str]:
        for d in decoders:
            tokens = d(tokens)
        return tokens
    return decode


def build_decoder(spec: dict | None) -> Decoder | None:
    """A decoder from its ``tokenizer.json`` object (None: tokens are concatenated as they are)."""
    if not spec:
        return None
    kind = spec.get("type")
    if kind == "ByteLevel":
        return byte_level_decoder
    if kind == "WordPiece":
        return wordpiece_decoder(spec.get("prefix", "##"), spec.get("cleanup", True))
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme") or ("always" if spec.get("add_prefix_space", True) else "never")
        return metaspace_decoder(spec.get("replacement", METASPACE), scheme)
    if kind == "BPEDecoder":
        return bpe_suffix_decoder(spec.get("suffix", "</w>"))
    if kind == "ByteFallback":
        return byte_fallback_decoder
    if kind == "Fuse":
        return lambda tokens: ["".join(tokens)]
    if kind == "Strip":
        content, start, stop = spec.get("content", " "), spec.get("start", 0), spec.get("stop", 0)

        def strip(tokens: list[str]) -> list[str]:
            out = []
            for t in tokens:
                for _ in range(start):
                    t = t[1:] if t.startswith(content) else t
                for _ in range(stop):
                    t = t[:-1] if t.endswith(content) else t
                out.append(t)
            return out
        return strip
    if kind == "Replace":
        pattern = spec.get("pattern") or {}
        if "String" not in pattern:
            raise ModelError("Replace decoder with a regex pattern is not supported")
        old, new = pattern["String"], spec.get("content", "")
        return lambda tokens: [t.replace(old, new) for t in tokens]
    if kind == "Sequence":
        return _sequence([d for d in (build_decoder(s) for s in spec.get("decoders", [])) if d is not None])
    raise ModelError(f"decoder {kind!r} is not supported",
                     "supported: ByteLevel, WordPiece, Metaspace, BPEDecoder, ByteFallback, Fuse, Strip, "
                     "Replace, Sequence")


class ByteStreamDecoder:
    """Incremental decoding of a byte-level id stream: ``push(id)`` returns the text now complete.

    Bytes of a character split across tokens are held back until the character is whole,
    so concatenating every ``push`` result and ``flush()`` equals decoding all ids at once.
    """

    def __init__(self, id_to_token: Callable[[int], str], skip: set[int] | None = None) -> None:
        self._id_to_token = id_to_token
        self._skip = skip or set()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, id: int) -> str:
        if id in self._skip:
            return ""
        return self._utf8.decode(token_bytes(self._id_to_token(id)))

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


class TextStreamDecoder:
    """Incremental decoding for any tokenizer: emits the growth of the decoded text.

    Decodes a short window — the tokens since the last emitted piece plus the tokens of that
    piece as left context (a joining space, a word-piece ``##``, a Metaspace leading space depend
    on it) — and emits what the new tokens add, so each push costs the window, not the whole
    text. Holds back while the window ends in U+FFFD (a possibly incomplete character).
    Byte-level tokenizers use the constant-cost ``ByteStreamDecoder`` instead.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._context = 0  # window start: the first token of the last emitted piece
        self._read = 0  # tokens up to here are emitted

    def _pending(self) -> str | None:
        before = self._decode(self._ids[self._context:self._read])
        text = self._decode(self._ids[self._context:])
        return text[len(before):] if text.startswith(before) else None

    def push(self, id: int) -> str:
        self._ids.append(int(id))
        new = self._pending()
        if not new or new.endswith("\ufffd"):
            return ""
        self._context, self._read = self._read, len(self._ids)
        return new

    def flush(self) -> str:
        new = self._pending() or ""
        self._context = self._read = len(self._ids)
        return new
