"""Read a BEIR folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import DataError, InputError


def _jsonl(path: Path) -> Iterator[dict]:
    if not path.is_file():
        raise InputError(f"{path} not found", "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno} is not valid JSON ({exc.msg})", "fix or regenerate the file") from exc


def corpus_docs(folder: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """(doc id, "title text") pairs, streamed — title and body joined with a space, as BEIR's BM25 does."""
    for rec in _jsonl(Path(folder) / "corpus.jsonl"):
        title, text = rec.get("title") or "", rec.get("text") or ""
        yield str(rec["_id"]), f"{title} {text}".strip()


def load_queries(folder: str | os.PathLike) -> dict[str, str]:
    return {str(r["_id"]): r["text"] for r in _jsonl(Path(folder) / "queries.jsonl")}


def load_qrels(folder: str | os.PathLike, split: str = "test") -> dict[str, dict[str, int]]:
    """query id → {doc id: relevance} from ``qrels/<split>.tsv`` (header line skipped)."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise InputError(f"{path} not found", f"pass a BEIR folder with qrels/{split}.tsv or another --split")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0] == "query-id" or not line.strip():
                continue
            try:
                q, d, rel = parts[0], parts[1], int(parts[2])
            except (IndexError, ValueError) as exc:
                raise DataError(f"{path}:{lineno} is not 'query-id<TAB>corpus-id<TAB>score'", "fix the qrels file") from exc
            qrels.setdefault(q, {})[d] = rel
    if not qrels:
        raise DataError(f"{path} has no judgements", "check the qrels file")
    return qrels
