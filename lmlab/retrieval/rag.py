"""Retrieval-augmented generation, retrieval side: index chunked files, fetch numbered sources for a
question, build a prompt that asks for [n] citations, and map an answer's citations back to spans.

Generation is any callable ``prompt → text`` (the chat model plugs in here); without one, ``ask``
returns the sources and the prompt. Low retrieval scores give the answer "not found in the sources".
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..analysis.analyzer import Analyzer
from ..core.errors import DataError, InputError
from ..core.io import write_text
from ..core.validate import check_choice, check_number
from .chunking import Chunk, chunk_by_sentences, chunk_by_tokens
from .index import InvertedIndex
from .sparse import SparseRetriever
from .weighting import bm25_idf

CHUNKS_FILE = "chunks.jsonl"
NOT_FOUND = "Not found in the sources."
MIN_COVERAGE = 0.4  # when no source holds this share of the question's idf mass: not found
CITATION = re.compile(r"\[(\d+)\]")
ANSWER_WORDS = re.compile(r"[a-z0-9]{3,}")  # words long enough to mean something in an overlap


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
    InvertedIndex.build(((c.id, c.text) for c in chunks), question_analyzer()).save(out)
    write_text(Path(out) / CHUNKS_FILE, "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in chunks))
    return len(chunks)


def question_analyzer() -> Analyzer:
    """How RAG indexes analyse text: NLTK's 179 stop words (questions are full of 'which', 'how',
    'many') and Porter stemming ('flow' finds 'flows'), so coverage counts the words that matter."""
    return Analyzer(stopwords="nltk", stemmer="porter")


@dataclass
class Source:
    """A retrieved chunk, numbered from 1 as the prompt shows it."""

    number: int
    score: float
    chunk: Chunk
    coverage: float = 1.0  # share of the question's idf mass found in the chunk (query_coverage)


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

    def retrieve(self, question: str, k: int = 5, min_score: float = 0.0, min_coverage: float = 0.0) -> list[Source]:
        """The ``k`` best chunks scoring above ``min_score``, or none (the answer is not in the sources)
        when even the best-covering one holds less than ``min_coverage`` of the question."""
        check_number("min_score", min_score)
        check_number("min_coverage", min_coverage, low=0.0, high=1.0)
        hits = [h for h in self.retriever.search([question], k=k)[0] if h[1] > min_score]
        coverages = query_coverage(self.index, question, [self.chunks[d].text for d, _ in hits])
        if not hits or max(coverages) < min_coverage:
            return []
        return [Source(i, score, self.chunks[doc], coverage)
                for i, ((doc, score), coverage) in enumerate(zip(hits, coverages, strict=True), 1)]


def query_coverage(index: InvertedIndex, question: str, texts: list[str]) -> list[float]:
    """Per text, the share of the question's idf mass (Lucene BM25 idf; terms the index never saw
    weigh the most) whose terms it contains: near 1 when a passage names everything the question asks
    about, low when it shares only common words — comparable across questions, unlike raw BM25."""
    terms = sorted(set(index.analyzer(question)))
    known = [t for t in terms if t in index.vocab]
    n = index.num_docs
    idf = bm25_idf(index.document_frequency()[[index.vocab[t] for t in known]], n, "lucene")
    total = float(idf.sum()) + (len(terms) - len(known)) * math.log1p((n + 0.5) / 0.5)
    if total <= 0:
        return [0.0] * len(texts)
    out = []
    for text in texts:
        present = set(index.analyzer(text))
        out.append(sum(float(w) for t, w in zip(known, idf, strict=True) if t in present) / total)
    return out


def build_prompt(question: str, sources: list[Source]) -> str:
    """Question plus numbered sources, asking for a short answer that cites them as [n].

    Small chat models follow a rigid format best: the instruction comes once, the sources are
    short, and the answer is asked for as one sentence ending in its citation.
    """
    listed = "\n".join(f"[{s.number}] {s.chunk.text}" for s in sources)
    return (f"Sources:\n{listed}\n\nQuestion: {question}\n"
            "Answer the question in one short sentence using only the sources, and end the sentence with the "
            f"number of the source you used, like [1]. If the sources do not contain the answer, reply: {NOT_FOUND}")


def citations(answer: str, sources: list[Source]) -> list[Source]:
    """The sources an answer cites with [n], in order of first citation (unknown numbers ignored)."""
    by_number = {s.number: s for s in sources}
    seen: dict[int, Source] = {}
    for m in CITATION.finditer(answer):
        n = int(m.group(1))
        if n in by_number and n not in seen:
            seen[n] = by_number[n]
    return list(seen.values())


def overlap_citation(answer: str, sources: list[Source]) -> Source | None:
    """The source sharing the most words with the answer (ties: the better retrieved), or None when
    the answer shares no word with any source — the fallback when a model cites nothing valid."""
    words = set(ANSWER_WORDS.findall(CITATION.sub(" ", answer).lower()))
    best, best_overlap = None, 0
    for s in sources:
        overlap = len(words & set(ANSWER_WORDS.findall(s.chunk.text.lower())))
        if overlap > best_overlap:
            best, best_overlap = s, overlap
    return best


def _span(s: Source) -> dict:
    return {"n": s.number, "source": s.chunk.source, "start": s.chunk.start, "end": s.chunk.end}


def ask(rag: RagIndex, question: str, generate: Callable[[str], str] | None = None, k: int = 5,
        min_score: float = 0.0, min_coverage: float = MIN_COVERAGE,
        cite: Callable[[str, str, list[int]], int] | None = None) -> dict:
    """Retrieve, prompt, generate (when a generator is given) and resolve citations to source spans.

    ``citations`` are the sources the answer cites as [n] (``cited_by`` 'model'). When it cites none
    that exists, ``cite(prompt, answer, numbers)`` — the model choosing the number after "answer [" —
    picks one ('model-constrained'); without it, the source overlapping the answer most ('overlap').
    """
    sources = rag.retrieve(question, k, min_score, min_coverage)
    result = {"question": question, "sources": [
        {**_span(s), "score": s.score, "coverage": round(s.coverage, 4), "text": s.chunk.text} for s in sources]}
    if not sources:
        return {**result, "answer": NOT_FOUND, "found": False, "citations": [], "cited_by": None}
    prompt = build_prompt(question, sources)
    result.update(prompt=prompt, found=True)
    if generate is not None:
        answer = generate(prompt).strip()
        found = not answer.lower().startswith(NOT_FOUND.lower().rstrip("."))
        cited, cited_by = citations(answer, sources), "model"
        if found and not cited:
            if cite is not None:
                n = cite(prompt, answer, [s.number for s in sources])
                cited, cited_by = [s for s in sources if s.number == n], "model-constrained"
            else:
                fallback = overlap_citation(answer, sources)
                cited, cited_by = ([fallback], "overlap") if fallback else ([], None)
        result.update(answer=answer, found=found, citations=[_span(s) for s in cited],
                      cited_by=cited_by if cited else None)
    return result


class ChatModel:
    """A chat model answering RAG prompts: its chat template, greedy decoding through the engine,
    and ``cite`` — the source number it finds most likely after its answer and " [" ."""

    def __init__(self, model: str = "smollm2-135m-instruct", max_new_tokens: int = 64, batch_size: int = 16) -> None:
        from ..generate.engine import Engine
        from ..models import load_model

        self.lm, self.tokenizer = load_model(model)
        if self.tokenizer is None:
            raise InputError(f"{model} has no tokenizer", "use a chat model directory with a tokenizer.json")
        self.engine = Engine(self.lm, self.tokenizer, greedy=True, on_overflow="truncate")
        self.max_new_tokens = int(check_number("max_new_tokens", max_new_tokens, low=1, integer=True))
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))

    def _prompt_ids(self, prompt: str) -> list[int]:
        from ..generate.chat_template import chat_prompt

        return chat_prompt(self.tokenizer, [{"role": "user", "content": prompt}])

    def generate(self, prompt: str) -> str:
        return self.generate_many([prompt], desc="answering")[0]

    def generate_many(self, prompts: list[str], max_new_tokens: int | None = None, stop: tuple[str, ...] = (),
                      desc: str = "generating", start: str = "") -> list[str]:
        """Greedy answers to many prompts, ``batch_size`` rows per ``Engine.generate`` call (prompts of
        similar length batched together, so little padding); answers come back in the prompts' order.
        ``start`` is text the answer begins with: written after the assistant turn opens (a small model
        then keeps to a format it would not begin by itself) and put back in front of each answer."""
        from ..core.progress import progress
        from ..generate.engine import Request

        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        head = self.tokenizer.encode(start) if start else []
        ids = [self._prompt_ids(p) + head for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [""] * len(ids)
        firsts = range(0, len(order), self.batch_size)
        for first in progress(firsts, desc=desc, unit="batch"):
            rows = order[first:first + self.batch_size]
            done = self.engine.generate([Request(ids[i], max_new_tokens=limit, stop=stop) for i in rows])
            for i, completion in zip(rows, done, strict=True):
                out[i] = start + completion.text
        return out

    def count_tokens(self, text: str) -> int:
        """How many tokens the model's tokenizer makes of ``text`` (for context budgets)."""
        return len(self.tokenizer.encode(text))

    def cite(self, prompt: str, answer: str, numbers: list[int]) -> int:
        """The number among ``numbers`` whose first token is likeliest right after ``answer [``."""
        import torch

        ids = self._prompt_ids(prompt) + self.tokenizer.encode(answer.rstrip() + " [")
        with torch.no_grad():
            logprobs, _ = self.lm.next_logprobs(torch.tensor([ids]), self.lm.initial_state(1))
        first = [self.tokenizer.encode(str(n))[0] for n in numbers]
        return numbers[int(torch.argmax(logprobs[0, first]))]
