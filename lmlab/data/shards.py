"""Token shards: a corpus tokenized once into memory-mapped uint16/uint32 files plus a JSON header.

Layout of a shard directory: ``shard_00000.bin`` … (raw little-endian ids), ``header.json``
(format, dtype, vocabulary size, token and document counts, the shards' sizes, the
tokenizer's fingerprint) and the tokenizer's own ``tokenizer.json``. Every document is
followed by the tokenizer's EOS id (when it has one), so documents stay separable. The
header is written last: a directory without one is an interrupted run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core.errors import DataError, InputError
from ..core.io import atomic_write, write_json
from ..core.progress import progress
from ..core.validate import check_number

HEADER_FILE = "header.json"
FORMAT = "lmlab-token-shards"


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2 ** 16 else np.dtype("<u4")


def write_shards(corpus: Iterable[str], tokenizer, out_dir: str | os.PathLike, *,
                 shard_tokens: int = 1 << 26, eos: bool = True) -> TokenShards:
    """Tokenize ``corpus`` into shards of at most ``shard_tokens`` ids in ``out_dir``."""
    check_number("shard_tokens", shard_tokens, low=1, integer=True)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory", "choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    dtype = _dtype_for(tokenizer.vocab_size)
    eos_id = tokenizer.eos_id if eos else None
    shards: list[dict] = []
    pending: list[np.ndarray] = []
    pending_len, documents = 0, 0

    def flush(limit: int) -> None:
        nonlocal pending, pending_len
        while pending_len >= limit and pending_len > 0:
            ids = np.concatenate(pending)
            head, rest = ids[:shard_tokens], ids[shard_tokens:]
            name = f"shard_{len(shards):05d}.bin"
            with atomic_write(out / name, "wb") as fh:
                fh.write(head.astype(dtype).tobytes())
            shards.append({"file": name, "tokens": int(head.size)})
            pending, pending_len = ([rest] if rest.size else []), int(rest.size)

    for doc in progress(corpus, desc="tokenizing", unit="doc"):
        ids = tokenizer.encode(doc)
        if eos_id is not None:
            ids.append(eos_id)
        pending.append(np.asarray(ids, dtype=np.int64))
        pending_len += len(ids)
        documents += 1
        if pending_len >= shard_tokens:
            flush(shard_tokens)
    flush(1)
    total = sum(s["tokens"] for s in shards)
    if total == 0:
        raise DataError("the corpus produced no tokens", "check the corpus and the tokenizer")
    tokenizer.save(out)
    write_json(out / HEADER_FILE, {
        "format": FORMAT, "version": 1, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
        "tokens": total, "documents": documents, "eos_id": eos_id, "shards": shards,
        "tokenizer": {"file": "tokenizer.json", "fingerprint": tokenizer.fingerprint()},
    })
    return TokenShards(out)


class TokenShards:
    """Read-only view of a shard directory as one long id sequence (memory-mapped, never loaded whole)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        header_path = self.path / HEADER_FILE
        if not header_path.exists():
            raise InputError(f"{self.path} has no {HEADER_FILE}",
                             "make the shards with 'lmlab data tokenize' (an interrupted run leaves no header)")
        try:
            self.header = json.loads(header_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{header_path} is not valid JSON ({exc})") from None
        if self.header.get("format") != FORMAT:
            raise DataError(f"{header_path} is not an lmlab token-shard header")
        dtype = np.dtype(self.header["dtype"])
        self.vocab_size = int(self.header["vocab_size"])
        self._maps, starts = [], [0]
        for shard in self.header["shards"]:
            file = self.path / shard["file"]
            if not file.exists() or file.stat().st_size != shard["tokens"] * dtype.itemsize:
                raise DataError(f"shard {file} is missing or has the wrong size", "tokenize the corpus again")
            self._maps.append(np.memmap(file, dtype=dtype, mode="r"))
            starts.append(starts[-1] + shard["tokens"])
        self._starts = np.asarray(starts)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Ids ``start`` … ``start + length - 1`` as int64 (crossing shard boundaries as needed)."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"range {start}+{length} is outside {len(self)} tokens")
        out, pos, end = [], start, start + length
        while pos < end:
            i = int(np.searchsorted(self._starts, pos, side="right")) - 1
            offset = pos - int(self._starts[i])
            take = min(end - pos, len(self._maps[i]) - offset)
            out.append(np.asarray(self._maps[i][offset:offset + take], dtype=np.int64))
            pos += take
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def tokenizer(self):
        """The tokenizer the shards were made with."""
        from ..tokenizers import load

        return load(self.path / self.header["tokenizer"]["file"])


class TokenArray:
    """An in-memory id sequence with the same ``read`` interface as ``TokenShards`` (small data, tests)."""

    def __init__(self, ids: Iterable[int] | np.ndarray, vocab_size: int | None = None) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vocab_size = int(self.ids.max()) + 1 if vocab_size is None else vocab_size

    def __len__(self) -> int:
        return int(self.ids.size)

    def read(self, start: int, length: int) -> np.ndarray:
        if start < 0 or start + length > len(self):
            raise IndexError(f"range {start}+{length} is outside {len(self)} tokens")
        return self.ids[start:start + length]
