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

from .errors import DataError, InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success rename it to ``path``.

    Use for writers that want a file name (``safetensors.torch.save_file``, ``np.save``).
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}", "choose a writable output path") from None
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


def check_writable(path: str | os.PathLike, *, directory: bool = False, what: str = "output") -> Path:
    """Refuse, before any work is done, an output path that cannot be created.

    ``path`` names a file to write (or, with ``directory``, a directory to create or fill). Its
    nearest existing ancestor must be a directory in which a file can be created — probed with a
    temporary file, because permission bits say nothing for root or on a read-only mount. Nothing is
    left behind. Raises InputError naming ``what`` (e.g. the option), the path and the reason.
    """
    target = Path(path)
    if target.exists() and target.is_dir() != directory:
        found = "a directory" if target.is_dir() else "a file"
        raise InputError(f"cannot write {what} {target}: it is {found}",
                         f"pass the path of {'a directory' if directory else 'a file'} to write")
    folder = target if directory and target.exists() else target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {what} {target}: {folder} is a file, not a directory",
                         "choose an output path whose parent folders are directories")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {what} {target}: {exc.strerror or exc} in {folder}",
                         "choose a writable output path") from None
    return target


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The JSON value in ``path``, or one clear error naming it (missing, a directory, not UTF-8, not JSON)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{what} {p} is not UTF-8 text", "pass a JSON file") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}", "check the path") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {p} is not valid JSON ({exc.msg}, line {exc.lineno})", "pass a JSON file") from None
