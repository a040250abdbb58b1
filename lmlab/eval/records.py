"""JSON Lines records for evaluation inputs and outputs (predictions, task items)."""

from __future__ import annotations

import json
import os

from ..core.io import atomic_write
from ..data.corpus import read_jsonl

__all__ = ["read_jsonl", "write_jsonl"]


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records atomically, one JSON object per line."""
    with atomic_write(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
