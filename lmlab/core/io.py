"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash or kill mid-write leaves either the old file or the new one, never a torn file.
Everything in lmlab that saves (models, tokenizers, checkpoints, results) goes through here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success rename it to ``path``.

    Use for writers that want a file name (``safetensors.torch.save_file``, ``np.save``).
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing (``mode`` 'w' or 'wb'); rename it to ``path`` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (UTF-8, non-ASCII kept readable)."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
