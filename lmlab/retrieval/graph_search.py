"""GraphRAG's two query modes over a ``GraphIndex`` (Edge et al. 2024, §2.6; GraphRAG's local search).

*Global search* answers questions about the whole corpus by map-reduce over community reports: each
report of one level answers the question with a helpfulness score 0-100 (map); answers scored 0 are
dropped, the rest sorted by score and packed into a token budget, and the model writes the final
answer from them (reduce). *Local search* answers questions about particular entities: entities
matched to the question by BM25 over their names and descriptions, their neighbours, their relations,
their communities' reports and the chunks naming them are packed into one prompt.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..core.validate import check_number
from .chunking import Chunk
from .graph import Chat, GraphIndex, entity_line, pack, relation_line
from .index import InvertedIndex
from .rag import NOT_FOUND, question_analyzer
from .sparse import SparseRetriever

MAP_PROMPT = ("Report:\n{report}\n\nQuestion: {question}\n"
              "First write 'Score: ' and a number from 0 to 100 saying how helpful the report is for answering "
              "the question (0 when it says nothing about it). Then, on a new line, write 'Answer: ' and "
              "answer the question in at most three sentences using only the report.")
MAP_START = "Score:"  # the map answer is begun with this, so even a small model writes its score first
REDUCE_PROMPT = ("Analysts answered the question from different parts of the documents; the most helpful "
                 "answers come first.\n\n{answers}\n\nQuestion: {question}\n"
                 "Combine the analysts' answers into one complete answer to the question. Use only what "
                 "they say.")
LOCAL_PROMPT = ("Context:\n{context}\n\nQuestion: {question}\n"
                "Answer the question in a few sentences using only the context. If the context does not "
                f"contain the answer, reply: {NOT_FOUND}")
ANSWER_LABEL = re.compile(r"^answer\s*:", re.IGNORECASE)
SCORE = re.compile(r"score\s*(?:\(0\s*-\s*100\))?\s*[:=]?\s*(\d{1,3})", re.IGNORECASE)
#: shares of the local context budget (GraphRAG's defaults: text units 0.5, community reports 0.1)
LOCAL_SHARES = {"reports": 0.1, "sources": 0.5, "entities": 0.2, "relations": 0.2}


@dataclass
class PartialAnswer:
    """One community report's answer in the map step, with the helpfulness score the model gave
    (None when it wrote none: such answers are dropped and counted)."""

    community: str
    answer: str
    score: int | None


def parse_scored_answer(text: str) -> tuple[str, int | None]:
    """(answer without its score and 'Answer:' label, the score clipped to 0-100) of a map-step output;
    the last 'Score: N' counts, and None says the model wrote no score."""
    found = list(SCORE.finditer(text))
    if not found:
        return text.strip(), None
    last = found[-1]
    answer = ANSWER_LABEL.sub("", (text[:last.start()] + text[last.end():]).strip(), count=1).strip()
    return answer, min(int(last.group(1)), 100)


def pack_by_score(partials: list[PartialAnswer], budget: int, count_tokens: Callable[[str], int]) -> list[PartialAnswer]:
    """The reduce step's context: answers with a score above 0, highest score first (ties keep the
    map order), as many as fit in ``budget`` tokens."""
    check_number("budget", budget, low=1, integer=True)
    ranked = sorted((p for p in partials if p.score), key=lambda p: -p.score)
    kept = pack((p.answer for p in ranked), budget, count_tokens)
    return ranked[:len(kept)]


def global_search(graph: GraphIndex, question: str, chat: Chat, level: int = 0, budget: int = 2000,
                  map_tokens: int = 96, answer_tokens: int = 200) -> dict:
    """Map (every community of ``level`` answers with a score) then reduce (the final answer)."""
    return global_search_many(graph, [question], chat, level, budget, map_tokens, answer_tokens)[0]


def global_search_many(graph: GraphIndex, questions: list[str], chat: Chat, level: int = 0, budget: int = 2000,
                       map_tokens: int = 96, answer_tokens: int = 200) -> list[dict]:
    """``global_search`` for many questions, every map prompt of every question in one batched call
    and every reduce prompt in another."""
    communities = [c for c in graph.at_level(level) if c.report]
    outputs = chat.generate_many([MAP_PROMPT.format(report=c.report, question=q) for q in questions for c in communities],
                                 map_tokens, desc="map: community answers", start=MAP_START)
    results, prompts = [], {}
    for i, question in enumerate(questions):
        texts = outputs[i * len(communities):(i + 1) * len(communities)]
        partials = [PartialAnswer(c.id, *parse_scored_answer(t)) for c, t in zip(communities, texts, strict=True)]
        used = pack_by_score(partials, budget, chat.count_tokens)
        results.append({"question": question, "mode": "graph", "search": "global", "level": level,
                        "partials": [asdict(p) for p in partials], "used": [p.community for p in used],
                        "unscored": sum(p.score is None for p in partials), "found": bool(used)})
        if used:
            answers = "\n\n".join(f"Analyst {n} (helpfulness {p.score}): {p.answer}" for n, p in enumerate(used, 1))
            prompts[i] = REDUCE_PROMPT.format(answers=answers, question=question)
        else:
            results[-1]["answer"] = NOT_FOUND
    finals = chat.generate_many(list(prompts.values()), answer_tokens, desc="reduce: final answers") if prompts else []
    for (i, prompt), answer in zip(prompts.items(), finals, strict=True):
        results[i].update(prompt=prompt, answer=answer.strip())
    return results


def match_entities(graph: GraphIndex, question: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` entities (node keys, BM25 score) whose names and descriptions best match the question
    — the RAG index's analyser and BM25 over one small document per entity."""
    g = graph.graph
    docs = ((key, f"{g.nodes[key]['name']} {' '.join(g.nodes[key]['descriptions'])}") for key in g.nodes)
    hits = SparseRetriever(InvertedIndex.build(docs, question_analyzer())).search([question], k=k)[0]
    return [(key, score) for key, score in hits if score > 0]


def local_context(graph: GraphIndex, chunks: dict[str, Chunk], question: str, count_tokens: Callable[[str], int],
                  k: int = 5, level: int | None = None, budget: int = 2000) -> dict:
    """The local-search context: matched entities and their neighbours, relations touching the matched
    entities (both ends matched first, then by weight), reports of the communities (at ``level``, the
    finest by default) holding matched entities, and the chunks naming the most matched entities —
    each section packed into its share of ``budget`` (``LOCAL_SHARES``)."""
    check_number("budget", budget, low=1, integer=True)
    g = graph.graph
    matched = [key for key, _ in match_entities(graph, question, k)]
    chosen = set(matched)
    neighbours = []
    for key in matched:
        for other in sorted(g.neighbors(key), key=lambda n: (-g.edges[key, n]["weight"], n)):
            if other not in chosen:
                chosen.add(other)
                neighbours.append(other)
    edges, seen = [], set()
    for a in matched:  # each relation once, written from its (first) matched end
        for b in g.neighbors(a):
            if frozenset((a, b)) not in seen:
                seen.add(frozenset((a, b)))
                edges.append((a, b))
    edges_ranked = sorted(edges, key=lambda e: (-(e[1] in matched), -g.edges[e]["weight"], e))
    level = graph.levels - 1 if level is None else level
    holding = [(sum(key in matched for key in c.entities), c.report) for c in graph.at_level(level)]
    reports = [report for n, report in sorted(holding, key=lambda h: -h[0]) if n and report]
    naming = Counter(ch for key in matched for ch in g.nodes[key]["chunks"])
    sources = [chunks[ch].text for ch, _ in sorted(naming.items(), key=lambda kv: -kv[1]) if ch in chunks]
    shares = {name: int(budget * share) for name, share in LOCAL_SHARES.items()}
    sections = {"entities": pack((entity_line(g, key) for key in [*matched, *neighbours]), shares["entities"], count_tokens),
                "relations": pack((relation_line(g, a, b) for a, b in edges_ranked), shares["relations"], count_tokens),
                "reports": pack(reports, shares["reports"], count_tokens),
                "sources": pack(sources, shares["sources"], count_tokens)}
    return {"matched": [g.nodes[key]["name"] for key in matched],
            "neighbours": [g.nodes[key]["name"] for key in neighbours], "sections": sections}


def local_prompt(question: str, context: dict) -> str:
    """The local-search prompt: the context's sections under headings, then the question."""
    s = context["sections"]
    text = "\n\n".join(f"{title}:\n" + "\n".join(lines) for title, lines in
                       (("Entities", s["entities"]), ("Relationships", s["relations"]),
                        ("Reports", s["reports"]), ("Sources", s["sources"])) if lines)
    return LOCAL_PROMPT.format(context=text, question=question)


def local_search(graph: GraphIndex, chunks: dict[str, Chunk], question: str, chat: Chat | None, k: int = 5,
                 level: int | None = None, budget: int = 2000, answer_tokens: int = 200,
                 count_tokens: Callable[[str], int] | None = None) -> dict:
    """Local search: the context of ``local_context`` answered by ``chat`` (without one, the prompt only)."""
    counter = count_tokens or chat.count_tokens
    context = local_context(graph, chunks, question, counter, k, level, budget)
    result = {"question": question, "mode": "graph", "search": "local", **context}
    if not context["matched"]:
        return {**result, "answer": NOT_FOUND, "found": False}
    prompt = local_prompt(question, context)
    result.update(prompt=prompt, found=True)
    if chat is not None:
        result["answer"] = chat.generate_many([prompt], answer_tokens, desc="answering")[0].strip()
    return result
