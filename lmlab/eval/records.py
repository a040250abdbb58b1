"""JSON Lines records for evaluation inputs and outputs (predictions, task items)."""

from __future__ import annotations

import json
import os

from ..core.errors import DataError
from ..core.io import atomic_write
from ..data.corpus import text_file


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every JSON object of a JSONL file (blank lines skipped), with a clear error for a bad line."""
    records = []
    for number, line in enumerate(text_file(path), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: record {number} is not valid JSON ({exc.msg})",
                            "each line of a JSONL file must be one JSON object") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {number} is a {type(record).__name__}, not a JSON object")
        records.append(record)
    return records


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records atomically, one JSON object per line."""
    with atomic_write(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
