"""GraphRAG's index (Edge et al. 2024, §2.3-2.5): the entity graph built from chunk extractions,
hierarchical communities (Louvain, seeded), and a model-written report per community — saved as
``graph.json`` beside the RAG index so ``lmlab rag index --graph`` builds it once.

The paper uses Leiden; networkx's ``louvain_partitions`` gives the same kind of nested hierarchy
(each level merges the communities of the finer one). Level 0 is the coarsest (the paper's root C0),
the last level the finest. A report's context is the community's elements in the paper's priority
order — relations by the combined degree of their ends, each with its two entities — cut at a token
budget; when they do not fit and the community has sub-communities, their (shorter) reports come first.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import networkx as nx

from ..core.errors import ConfigError, DataError, InputError
from ..core.io import write_json
from ..core.validate import check_choice, check_number
from .graph_extract import (
    COMPLETION_DELIMITER,
    ENTITY_TYPES,
    EXTRACTION_START,
    Extraction,
    cooccurrence_extraction,
    extraction_prompt,
    normalise_name,
    parse_extraction,
)

GRAPH_FILE = "graph.json"
GRAPH_VERSION = 1
EXTRACTORS = ("model", "cooccurrence")
REPORT_PROMPT = ("Below are entities and relationships from a set of documents, most connected first.\n\n"
                 "{context}\n\nWrite a short report on this group: its first line is a title naming the main "
                 "entities, then a paragraph saying who or what they are and how they are related.")


class Chat(Protocol):
    """What GraphRAG needs of a chat model (``lmlab.retrieval.rag.ChatModel`` is one)."""

    def generate_many(self, prompts: list[str], max_new_tokens: int | None = None, stop: tuple[str, ...] = (),
                      desc: str = "generating", start: str = "") -> list[str]: ...

    def count_tokens(self, text: str) -> int: ...


@dataclass
class Community:
    """A set of entities (node keys) at one level of the hierarchy; ``parent`` is one level coarser."""

    id: str
    level: int
    entities: list[str]
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    report: str = ""


def pack(texts: Iterable[str], budget: int, count_tokens: Callable[[str], int]) -> list[str]:
    """The leading ``texts`` whose token counts sum to at most ``budget`` (stops at the first that
    does not fit, so the order given is the priority kept)."""
    out, used = [], 0
    for text in texts:
        n = count_tokens(text)
        if used + n > budget:
            break
        out.append(text)
        used += n
    return out


def build_graph(extractions: Iterable[tuple[str, Extraction]]) -> nx.Graph:
    """The entity graph of (chunk id, extraction) pairs: one node per normalised name (its first
    spelling, its commonest type, its distinct descriptions, the chunks naming it); one edge per
    related pair, weighted by the summed strengths, with its descriptions and chunks. A relation of
    an entity to itself is dropped (``graph.graph['self_relations']`` counts them)."""
    g = nx.Graph(self_relations=0)
    types: dict[str, Counter] = {}

    def node(name: str, chunk: str) -> str:
        key = normalise_name(name)
        if key not in g:
            g.add_node(key, name=name, type="", descriptions=[], chunks=[])
            types[key] = Counter()
        if chunk not in g.nodes[key]["chunks"]:
            g.nodes[key]["chunks"].append(chunk)
        return key

    for chunk, ex in extractions:
        for e in ex.entities:
            key = node(e.name, chunk)
            if e.type:
                types[key][e.type] += 1
            if e.description and e.description not in g.nodes[key]["descriptions"]:
                g.nodes[key]["descriptions"].append(e.description)
        for r in ex.relations:
            a, b = node(r.source, chunk), node(r.target, chunk)
            if a == b:
                g.graph["self_relations"] += 1
                continue
            if not g.has_edge(a, b):
                g.add_edge(a, b, weight=0.0, descriptions=[], chunks=[])
            edge = g.edges[a, b]
            edge["weight"] += r.strength
            if r.description and r.description not in edge["descriptions"]:
                edge["descriptions"].append(r.description)
            if chunk not in edge["chunks"]:
                edge["chunks"].append(chunk)
    for key, counts in types.items():
        if counts:
            g.nodes[key]["type"] = min(counts, key=lambda t: (-counts[t], t))
    return g


def hierarchical_communities(g: nx.Graph, seed: int = 0, resolution: float = 1.0) -> list[Community]:
    """Louvain communities at every level of ``louvain_partitions`` (seeded, edge weights used),
    level 0 the coarsest; within a level, largest first (ties by smallest member)."""
    check_number("resolution", resolution, low=0.0, low_inclusive=False)
    if g.number_of_nodes() == 0:
        return []
    partitions = list(nx.community.louvain_partitions(g, weight="weight", resolution=resolution, seed=seed))
    out: list[Community] = []
    owner: dict[str, str] = {}
    for level, partition in enumerate(reversed(partitions)):
        parts = sorted((sorted(p) for p in partition), key=lambda p: (-len(p), p[0]))
        here = {}
        for i, members in enumerate(parts):
            c = Community(f"{level}.{i}", level, members, parent=owner.get(members[0]))
            out.append(c)
            here.update(dict.fromkeys(members, c.id))
        owner = here
    by_id = {c.id: c for c in out}
    for c in out:
        if c.parent is not None:
            by_id[c.parent].children.append(c.id)
    return out


def entity_line(g: nx.Graph, key: str) -> str:
    """'NAME (type): description; description' — how an entity appears in a prompt."""
    n = g.nodes[key]
    kind = f" ({n['type']})" if n["type"] else ""
    return f"{n['name']}{kind}: {'; '.join(n['descriptions']) or 'no description'}"


def relation_line(g: nx.Graph, a: str, b: str) -> str:
    """'A -- B: description' — how a relation appears in a prompt."""
    e = g.edges[a, b]
    return f"{g.nodes[a]['name']} -- {g.nodes[b]['name']}: {'; '.join(e['descriptions']) or 'related'}"


def community_elements(g: nx.Graph, members: Iterable[str]) -> list[str]:
    """The community's entity and relation lines in the paper's priority order: relations by the
    combined degree of their ends (descending), each preceded by its entities not yet listed, then the
    remaining entities by degree."""
    inside = set(members)
    edges = sorted(g.subgraph(inside).edges, key=lambda e: (-(g.degree(e[0]) + g.degree(e[1])), sorted(e)))
    lines, listed = [], set()
    for a, b in edges:
        for key in (a, b):
            if key not in listed:
                lines.append(entity_line(g, key))
                listed.add(key)
        lines.append(relation_line(g, a, b))
    for key in sorted(inside - listed, key=lambda k: (-g.degree(k), k)):
        lines.append(entity_line(g, key))
    return lines


def report_context(g: nx.Graph, community: Community, by_id: dict[str, Community], budget: int,
                   count_tokens: Callable[[str], int]) -> str:
    """What a community's report is written from: its elements when they fit ``budget`` tokens; else
    its sub-communities' reports (largest first) and then as many elements as still fit."""
    elements = community_elements(g, community.entities)
    if sum(map(count_tokens, elements)) <= budget or not community.children:
        return "\n".join(pack(elements, budget, count_tokens))
    children = sorted((by_id[c] for c in community.children), key=lambda c: -len(c.entities))
    reports = pack((c.report for c in children if c.report), budget, count_tokens)
    rest = budget - sum(map(count_tokens, reports))
    return "\n\n".join([*reports, "\n".join(pack(elements, rest, count_tokens))]).strip()


def write_reports(g: nx.Graph, communities: list[Community], chat: Chat, budget: int = 1500,
                  max_new_tokens: int = 160) -> None:
    """Each community's report, written by ``chat`` from ``report_context``; finest level first (so a
    coarse community can use its sub-communities' reports), one batch of prompts per level."""
    by_id = {c.id: c for c in communities}
    for level in sorted({c.level for c in communities}, reverse=True):
        todo = [c for c in communities if c.level == level]
        prompts = [REPORT_PROMPT.format(context=report_context(g, c, by_id, budget, chat.count_tokens)) for c in todo]
        for c, text in zip(todo, chat.generate_many(prompts, max_new_tokens, desc=f"reports, level {level}"),
                           strict=True):
            c.report = text.strip()


@dataclass
class GraphIndex:
    """The saved GraphRAG index: entity graph, communities with reports, and how it was built."""

    graph: nx.Graph
    communities: list[Community]
    meta: dict

    @property
    def levels(self) -> int:
        return 1 + max((c.level for c in self.communities), default=-1)

    def at_level(self, level: int) -> list[Community]:
        """The communities of ``level`` (0 = coarsest); refuses a level the index does not have."""
        check_number("level", level, low=0, high=max(self.levels - 1, 0), integer=True)
        return [c for c in self.communities if c.level == level]

    def save(self, folder: str | os.PathLike) -> Path:
        g = self.graph
        data = {"version": GRAPH_VERSION, "meta": self.meta,
                "entities": [{"key": k, **g.nodes[k]} for k in g.nodes],
                "relations": [{"source": a, "target": b, **g.edges[a, b]} for a, b in g.edges],
                "communities": [asdict(c) for c in self.communities]}
        path = Path(folder) / GRAPH_FILE
        write_json(path, data, indent=None)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GraphIndex:
        path = Path(folder) / GRAPH_FILE
        if not path.is_file():
            raise InputError(f"{folder} has no entity graph ({GRAPH_FILE})",
                             "rebuild the index with --graph: lmlab rag index FILES --out DIR --graph")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}", "rebuild the index with --graph") from None
        if data.get("version") != GRAPH_VERSION:
            raise DataError(f"{path} has version {data.get('version')}, this lmlab reads {GRAPH_VERSION}",
                            "rebuild the index with --graph")
        g = nx.Graph(self_relations=data["meta"].get("self_relations", 0))
        for e in data["entities"]:
            g.add_node(e.pop("key"), **e)
        for r in data["relations"]:
            g.add_edge(r.pop("source"), r.pop("target"), **r)
        return cls(g, [Community(**c) for c in data["communities"]], data["meta"])


def extract_chunks(chunks: list, extractor: str = "model", chat: Chat | None = None,
                   entity_types: tuple[str, ...] = ENTITY_TYPES, max_new_tokens: int = 300) -> list[Extraction]:
    """Extractions of every chunk (``lmlab.retrieval.chunking.Chunk``): by ``chat`` prompted with the
    paper's format ('model'; all chunks batched through the engine), or 'cooccurrence' (no model)."""
    check_choice("extractor", extractor, EXTRACTORS)
    if extractor == "cooccurrence":
        return [cooccurrence_extraction(c.text) for c in chunks]
    if chat is None:
        raise ConfigError("the model extractor needs a chat model", "pass one, or use extractor='cooccurrence'")
    outputs = chat.generate_many([extraction_prompt(c.text, entity_types) for c in chunks], max_new_tokens,
                                 stop=(COMPLETION_DELIMITER,), desc="extracting entities", start=EXTRACTION_START)
    return [parse_extraction(text, c.text) for c, text in zip(chunks, outputs, strict=True)]


def build_graph_index(chunks: list, chat: Chat, extractor: str = "model", *,
                      entity_types: tuple[str, ...] = ENTITY_TYPES, seed: int = 0, resolution: float = 1.0,
                      report_budget: int = 1500, extract_tokens: int = 300, report_tokens: int = 160) -> GraphIndex:
    """Extract, build the graph, find communities, write their reports (the whole indexing pipeline)."""
    check_number("report_budget", report_budget, low=1, integer=True)
    t0 = time.perf_counter()
    extractions = extract_chunks(chunks, extractor, chat, entity_types, extract_tokens)
    t1 = time.perf_counter()
    g = build_graph(zip((c.id for c in chunks), extractions, strict=True))
    if g.number_of_nodes() == 0:
        raise DataError(f"the {extractor} extractor found no entities in {len(chunks)} chunks",
                        "use a stronger model, or --extractor cooccurrence")
    communities = hierarchical_communities(g, seed, resolution)
    write_reports(g, communities, chat, report_budget, report_tokens)
    t2 = time.perf_counter()
    malformed = [line for ex in extractions for line in ex.malformed]
    ungrounded = [line for ex in extractions for line in ex.ungrounded]
    meta = {"extractor": extractor, "entity_types": list(entity_types), "seed": seed, "resolution": resolution,
            "chunks": len(chunks), "entities": g.number_of_nodes(), "relations": g.number_of_edges(),
            "communities_per_level": [sum(c.level == lv for c in communities)
                                      for lv in range(1 + max(c.level for c in communities))],
            "malformed_lines": len(malformed), "ungrounded_records": len(ungrounded),
            "default_strength": sum(ex.default_strength for ex in extractions),
            "self_relations": g.graph["self_relations"],
            "malformed_examples": malformed[:10], "ungrounded_examples": ungrounded[:10],
            "extract_s": round(t1 - t0, 2), "reports_s": round(t2 - t1, 2)}
    return GraphIndex(g, communities, meta)
