"""An inverted index of term counts on scipy.sparse: streamed building, incremental add and delete,
atomic save/load (safetensors + JSON, checksummed), and the corpus statistics BM25 needs.

Rows are documents, columns terms; the index keeps raw counts only, so any weighting (BM25 variants,
TF-IDF) is computed from it on demand and stays correct after documents are added or deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..analysis.analyzer import Analyzer
from ..core.errors import DataError, InputError
from ..core.io import atomic_path, write_json
from ..core.progress import progress
from ..core.validate import check_number

FORMAT = "lmlab-inverted-index"
VERSION = 1
META_FILE, ARRAYS_FILE = "index.json", "index.safetensors"


def _pairs(docs: Iterable[str | tuple[str, str]], first_id: int) -> Iterator[tuple[str, str]]:
    """(id, text) pairs from texts (numbered from ``first_id``) or from (id, text) pairs."""
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            yield str(first_id + i), doc
        elif isinstance(doc, (tuple, list)) and len(doc) == 2 and isinstance(doc[1], str):
            yield str(doc[0]), doc[1]
        else:
            raise DataError(f"document {i} is a {type(doc).__name__}, not a text or an (id, text) pair",
                            "pass strings or (id, text) tuples")


class InvertedIndex:
    """Term counts of a growing, shrinking document collection (documents × terms, CSR)."""

    def __init__(self, analyzer: Analyzer | None = None) -> None:
        self.analyzer = analyzer or Analyzer()
        self.vocab: dict[str, int] = {}
        self.doc_ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self.counts = sp.csr_matrix((0, 0), dtype=np.float32)
        self.doc_len = np.zeros(0, dtype=np.int64)
        self.live = np.zeros(0, dtype=bool)
        self.version = 0  # bumped on every change, so cached weightings know when to rebuild

    # ---- building ------------------------------------------------------------------------
    @classmethod
    def build(cls, docs: Iterable[str | tuple[str, str]], analyzer: Analyzer | None = None,
              batch_size: int = 10_000) -> InvertedIndex:
        """Index a stream of texts or (id, text) pairs, ``batch_size`` documents in memory at a time."""
        index = cls(analyzer)
        index.add(docs, batch_size=batch_size)
        if index.num_docs == 0:
            raise DataError("cannot build an index from an empty corpus", "pass at least one document")
        return index

    def add(self, docs: Iterable[str | tuple[str, str]], batch_size: int = 10_000) -> int:
        """Add documents (streamed in batches); returns how many were added."""
        check_number("batch_size", batch_size, low=1, integer=True)
        chunks, added = [], 0
        batch: list[tuple[str, str]] = []
        for pair in progress(_pairs(docs, len(self.doc_ids)), desc="indexing", unit="doc"):
            batch.append(pair)
            if len(batch) == batch_size:
                chunks.append(self._count_batch(batch))
                added += len(batch)
                batch = []
        if batch:
            chunks.append(self._count_batch(batch))
            added += len(batch)
        if chunks:
            width = len(self.vocab)
            self.counts.resize((self.counts.shape[0], width))
            for c in chunks:
                c.resize((c.shape[0], width))
            self.counts = sp.vstack([self.counts, *chunks], format="csr", dtype=np.float32)
            self.version += 1
        return added

    def _count_batch(self, batch: list[tuple[str, str]]) -> sp.csr_matrix:
        vocab, analyze = self.vocab, self.analyzer
        cols: list[int] = []
        indptr = [0]
        for doc_id, text in batch:
            if doc_id in self._row_of:
                raise DataError(f"document id {doc_id!r} is already in the index",
                                "delete the old document first or give each document a unique id")
            for term in analyze(text):
                col = vocab.get(term)
                if col is None:
                    col = vocab[term] = len(vocab)
                cols.append(col)
            indptr.append(len(cols))
            self._row_of[doc_id] = len(self.doc_ids)
            self.doc_ids.append(doc_id)
        indptr_a = np.asarray(indptr, dtype=np.int64)
        lengths = np.diff(indptr_a)
        rows = np.repeat(np.arange(len(batch)), lengths)
        data = np.ones(len(cols), dtype=np.float32)
        m = sp.csr_matrix((data, (rows, np.asarray(cols, dtype=np.int64))), shape=(len(batch), len(vocab)))
        m.sum_duplicates()
        self.doc_len = np.concatenate([self.doc_len, lengths])
        self.live = np.concatenate([self.live, np.ones(len(batch), dtype=bool)])
        return m

    def delete(self, ids: Iterable[str]) -> int:
        """Remove documents by id (their rows stay as tombstones until ``compact``); returns how many."""
        ids = [str(d) for d in ids]
        rows = []
        for doc_id in ids:
            row = self._row_of.get(doc_id)
            if row is None:
                raise InputError(f"no document with id {doc_id!r} in the index", "check the id")
            rows.append(row)
        for doc_id in ids:
            self._row_of.pop(doc_id, None)
        self.live[rows] = False
        self.version += 1
        return len(rows)

    def compact(self) -> None:
        """Drop deleted rows for good (row numbers change; ids do not)."""
        keep = np.flatnonzero(self.live)
        self.counts = self.counts[keep]
        self.doc_len = self.doc_len[keep]
        self.doc_ids = [self.doc_ids[i] for i in keep]
        self._row_of = {d: i for i, d in enumerate(self.doc_ids)}
        self.live = np.ones(len(keep), dtype=bool)
        self.version += 1

    # ---- statistics ----------------------------------------------------------------------
    @property
    def num_docs(self) -> int:
        """Live (not deleted) documents."""
        return int(self.live.sum())

    @property
    def num_terms(self) -> int:
        return len(self.vocab)

    def live_counts(self) -> sp.csr_matrix:
        """The count matrix with deleted documents' rows emptied (shape unchanged)."""
        if self.live.all():
            return self.counts
        return sp.diags(self.live.astype(np.float32)) @ self.counts

    def document_frequency(self) -> np.ndarray:
        """How many live documents contain each term."""
        live = self.live_counts()
        return np.bincount(live.indices[live.data > 0], minlength=self.num_terms)

    def average_length(self) -> float:
        return float(self.doc_len[self.live].mean()) if self.num_docs else 0.0

    def query_matrix(self, queries: Sequence[str]) -> sp.csr_matrix:
        """Analyse queries into a (queries × terms) count matrix; unknown terms are dropped."""
        vocab, cols, indptr = self.vocab, [], [0]
        for q in queries:
            cols.extend(c for c in map(vocab.get, self.analyzer(q)) if c is not None)
            indptr.append(len(cols))
        indptr_a = np.asarray(indptr, dtype=np.int64)
        rows = np.repeat(np.arange(len(queries)), np.diff(indptr_a))
        m = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, np.asarray(cols, dtype=np.int64))),
                          shape=(len(queries), self.num_terms))
        m.sum_duplicates()
        return m

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``index.safetensors`` then ``index.json`` (with the arrays' checksum) atomically."""
        from safetensors.numpy import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        c = self.counts
        arrays = {"indptr": c.indptr.astype(np.int64), "indices": c.indices.astype(np.int32),
                  "data": c.data.astype(np.float32), "doc_len": self.doc_len.astype(np.int64),
                  "live": self.live.astype(np.uint8)}
        with atomic_path(folder / ARRAYS_FILE) as tmp:
            save_file(arrays, str(tmp))
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        terms = sorted(self.vocab, key=self.vocab.get)
        write_json(folder / META_FILE, {"format": FORMAT, "version": VERSION, "analyzer": self.analyzer.to_dict(),
                                        "num_rows": c.shape[0], "num_terms": c.shape[1], "sha256": digest,
                                        "doc_ids": self.doc_ids, "terms": terms}, indent=None)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> InvertedIndex:
        """Read an index saved by ``save``; a missing, foreign or corrupted index is one clear error."""
        from safetensors.numpy import load as load_bytes

        folder = Path(path)
        meta_path, arrays_path = folder / META_FILE, folder / ARRAYS_FILE
        if not meta_path.is_file() or not arrays_path.is_file():
            raise InputError(f"{folder} is not a saved index (it needs {META_FILE} and {ARRAYS_FILE})",
                             "build one first, e.g. InvertedIndex.build(docs).save(path)")
        fix = "the index files are damaged or from elsewhere: rebuild the index"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"index metadata {meta_path} is corrupted ({exc})", fix) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{meta_path} is not an lmlab inverted index", fix)
        if meta.get("version") != VERSION:
            raise DataError(f"index {folder} has format version {meta.get('version')}, this lmlab reads {VERSION}",
                            "rebuild the index with this version of lmlab")
        raw = arrays_path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
            raise DataError(f"index arrays {arrays_path} are corrupted (checksum mismatch)", fix)
        try:
            a = load_bytes(raw)
            n, v = int(meta["num_rows"]), int(meta["num_terms"])
            counts = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=(n, v))
            counts.check_format(full_check=True)
            if len(meta["doc_ids"]) != n or len(meta["terms"]) != v or len(a["doc_len"]) != n or len(a["live"]) != n:
                raise ValueError("array sizes disagree with the metadata")
        except Exception as exc:  # any inconsistency means a damaged index
            raise DataError(f"index {folder} is corrupted ({exc})", fix) from exc
        index = cls(Analyzer.from_dict(meta["analyzer"]))
        index.counts = counts
        index.doc_len = a["doc_len"].astype(np.int64)
        index.live = a["live"].astype(bool)
        index.doc_ids = list(meta["doc_ids"])
        index._row_of = {d: i for i, d in enumerate(index.doc_ids) if index.live[i]}
        index.vocab = {t: i for i, t in enumerate(meta["terms"])}
        return index


def check_searchable(index: InvertedIndex) -> None:
    """Raise a clear error when there is nothing to search."""
    if index.num_docs == 0:
        raise DataError("the index has no documents", "add documents before searching")

