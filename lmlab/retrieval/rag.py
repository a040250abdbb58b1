"""Retrieval-augmented generation, retrieval side: index chunked files, fetch numbered sources for a
question, build a prompt that asks for [n] citations, and map an answer's citations back to spans.

Generation is any callable ``prompt → text`` (the chat model plugs in here); without one, ``ask``
returns the sources and the prompt. Low retrieval scores give the answer "not found in the sources".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import DataError, InputError
from ..core.io import write_text
from ..core.validate import check_choice, check_number
from .chunking import Chunk, chunk_by_sentences, chunk_by_tokens
from .index import InvertedIndex
from .sparse import SparseRetriever

CHUNKS_FILE = "chunks.jsonl"
NOT_FOUND = "Not found in the sources."
CITATION = re.compile(r"\[(\d+)\]")


def text_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files named, with directories expanded to their *.txt and *.md files (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".md"))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p} does not exist", "pass text files or directories of .txt/.md files")
    if not out:
        raise DataError("no text files to index", "pass .txt or .md files, or a directory holding some")
    return out


def chunk_files(files: Iterable[Path], by: str = "sentences", size: int = 800, overlap: int = 1) -> Iterable[Chunk]:
    """Chunks of every file: ``by`` 'sentences' (size = max characters) or 'tokens' (size = tokens)."""
    check_choice("chunking", by, ("sentences", "tokens"))
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{f} is not UTF-8 text", "convert it to UTF-8") from exc
        yield from (chunk_by_sentences(text, str(f), size, overlap) if by == "sentences"
                    else chunk_by_tokens(text, str(f), size, overlap))


def build_rag_index(paths: Iterable[str | os.PathLike], out: str | os.PathLike, by: str = "sentences",
                    size: int = 800, overlap: int = 1) -> int:
    """Chunk the files, index the chunks with BM25, save index and chunks under ``out``; returns #chunks."""
    chunks = list(chunk_files(text_files(paths), by, size, overlap))
    if not chunks:
        raise DataError("the files hold no text to index", "pass non-empty files")
    InvertedIndex.build((c.id, c.text) for c in chunks).save(out)
    write_text(Path(out) / CHUNKS_FILE, "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in chunks))
    return len(chunks)


@dataclass
class Source:
    """A retrieved chunk, numbered from 1 as the prompt shows it."""

    number: int
    score: float
    chunk: Chunk


class RagIndex:
    """A saved chunk index: retrieve numbered sources for a question."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.index = InvertedIndex.load(folder)
        path = Path(folder) / CHUNKS_FILE
        if not path.is_file():
            raise InputError(f"{folder} has no {CHUNKS_FILE}", "build it with: lmlab rag index FILES --out DIR")
        self.chunks = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            c = Chunk(**json.loads(line))
            self.chunks[c.id] = c
        self.retriever = SparseRetriever(self.index)

    def retrieve(self, question: str, k: int = 5, min_score: float = 0.0) -> list[Source]:
        """The ``k`` best chunks scoring above ``min_score`` (none: the answer is not in the sources)."""
        check_number("min_score", min_score)
        hits = self.retriever.search([question], k=k)[0]
        return [Source(i, s, self.chunks[d]) for i, (d, s) in enumerate((h for h in hits if h[1] > min_score), 1)]


def build_prompt(question: str, sources: list[Source]) -> str:
    """Question plus numbered sources, asking for an answer that cites them as [n]."""
    listed = "\n\n".join(f"[{s.number}] ({Path(s.chunk.source).name}) {s.chunk.text}" for s in sources)
    return ("Answer the question using only the sources below. Cite the sources you use as [n]. "
            f"If the sources do not contain the answer, reply exactly: {NOT_FOUND}\n\n"
            f"Sources:\n{listed}\n\nQuestion: {question}\nAnswer:")


def citations(answer: str, sources: list[Source]) -> list[Source]:
    """The sources an answer cites with [n], in order of first citation (unknown numbers ignored)."""
    by_number = {s.number: s for s in sources}
    seen: dict[int, Source] = {}
    for m in CITATION.finditer(answer):
        n = int(m.group(1))
        if n in by_number and n not in seen:
            seen[n] = by_number[n]
    return list(seen.values())


def ask(rag: RagIndex, question: str, generate: Callable[[str], str] | None = None, k: int = 5,
        min_score: float = 0.0) -> dict:
    """Retrieve, prompt, generate (when a generator is given) and resolve citations to source spans."""
    sources = rag.retrieve(question, k, min_score)
    result = {"question": question, "sources": [
        {"n": s.number, "score": s.score, "source": s.chunk.source, "start": s.chunk.start, "end": s.chunk.end,
         "text": s.chunk.text} for s in sources]}
    if not sources:
        return {**result, "answer": NOT_FOUND, "found": False, "citations": []}
    prompt = build_prompt(question, sources)
    result.update(prompt=prompt, found=True)
    if generate is not None:
        answer = generate(prompt).strip()
        cited = citations(answer, sources)
        result.update(answer=answer, found=NOT_FOUND.lower().rstrip(".") not in answer.lower(),
                      citations=[{"n": s.number, "source": s.chunk.source, "start": s.chunk.start,
                                  "end": s.chunk.end} for s in cited])
    return result
