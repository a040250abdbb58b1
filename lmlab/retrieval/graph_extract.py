"""GraphRAG's first step: entities and relations read out of text chunks (Edge et al. 2024, "From Local
to Global: A Graph RAG Approach to Query-Focused Summarization", §2.2).

A model is prompted, as in the paper, for records in a delimiter format —
``("entity"<|>NAME<|>TYPE<|>DESCRIPTION)`` and ``("relationship"<|>SOURCE<|>TARGET<|>DESCRIPTION<|>STRENGTH)``
separated by ``##`` and ended by ``<|COMPLETE|>`` — and ``parse_extraction`` reads them back, counting
every line it cannot use instead of dropping it silently. ``cooccurrence_extraction`` is a deterministic
stand-in, used only when asked for: capitalised spans are the entities and two spans in one sentence are
related. Entities are resolved across chunks by ``normalise_name``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..analysis.stopwords import NLTK_ENGLISH
from .chunking import sentence_spans

TUPLE_DELIMITER = "<|>"
RECORD_DELIMITER = "##"
COMPLETION_DELIMITER = "<|COMPLETE|>"
ENTITY_TYPES = ("organization", "person", "geo", "event")
EXTRACTION_START = '("entity"<|>'  # the answer is begun with this: a small model then keeps to the format
WORDS = re.compile(r"\w+")
CAPITALISED_SPAN = re.compile(r"[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*")

EXTRACTION_PROMPT = """-Goal-
Given a text, identify all entities of the types [{types}] in it and all relationships among them.

-Steps-
1. For each entity write ("entity"<|><entity_name><|><entity_type><|><entity_description>)
entity_name: the name, capitalized; entity_type: one of [{types}]; entity_description: its attributes and activities.
2. For each pair of clearly related entities write ("relationship"<|><source_entity><|><target_entity><|><relationship_description><|><relationship_strength>)
relationship_description: why they are related; relationship_strength: an integer from 1 to 10.
3. Write one record per line and end each line with ##.
4. When finished, write <|COMPLETE|>

-Example-
Text: Ada Lovelace worked with Charles Babbage in London on the Analytical Engine.
Output:
("entity"<|>ADA LOVELACE<|>person<|>A mathematician who worked on the Analytical Engine)##
("entity"<|>CHARLES BABBAGE<|>person<|>The inventor of the Analytical Engine)##
("entity"<|>LONDON<|>geo<|>The city where they worked)##
("relationship"<|>ADA LOVELACE<|>CHARLES BABBAGE<|>Ada Lovelace worked with Charles Babbage<|>8)##
("relationship"<|>CHARLES BABBAGE<|>LONDON<|>Babbage worked in London<|>5)##
<|COMPLETE|>

-Real Data-
Text: {text}
Output:
"""


@dataclass(frozen=True)
class Entity:
    """A named thing a chunk mentions."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class Relation:
    """A described link between two entities; ``strength`` as the extractor rated it (paper: 1-10)."""

    source: str
    target: str
    description: str
    strength: float


@dataclass
class Extraction:
    """What one chunk yielded, with the lines that could not be used and why."""

    entities: list[Entity] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # lines that are no valid record
    ungrounded: list[str] = field(default_factory=list)  # records naming an entity the chunk never mentions
    default_strength: int = 0  # relations whose strength was no number (1.0 used, as GraphRAG does)


def extraction_prompt(text: str, entity_types: tuple[str, ...] = ENTITY_TYPES) -> str:
    """The paper's extraction prompt (one worked example) for one chunk."""
    return EXTRACTION_PROMPT.format(types=", ".join(entity_types), text=text)


def normalise_name(name: str) -> str:
    """The key entities are resolved by: case-folded words joined by single spaces ('The  EIFFEL-tower'
    → 'the eiffel tower'), so the same name written differently in two chunks is one node."""
    return " ".join(WORDS.findall(name.casefold()))


def _field(text: str) -> str:
    return text.strip().strip("\"'").strip()


def parse_extraction(output: str, chunk_text: str | None = None) -> Extraction:
    """The records of a model's extraction output. Each record sits on its own line or between ``##``;
    the parentheses and quotes around it are optional; text after ``<|COMPLETE|>`` is ignored. A
    record with the wrong number of fields, an unknown kind or an empty name is kept in ``malformed``.
    With ``chunk_text``, records naming an entity the chunk does not mention (a small model repeating
    the prompt's example) go to ``ungrounded``. A relation's endpoints need not be listed as entities:
    they become entities without a type or description."""
    out = Extraction()
    body = output.split(COMPLETION_DELIMITER, 1)[0]
    grounded_in = f" {normalise_name(chunk_text)} " if chunk_text is not None else None
    names: dict[str, Entity] = {}
    for piece in (p for line in body.splitlines() for p in line.split(RECORD_DELIMITER)):
        record = piece.strip()
        if not record:
            continue
        inner = record[1:] if record.startswith("(") else record
        inner = inner[:-1] if inner.endswith(")") else inner
        fields = [_field(f) for f in inner.split(TUPLE_DELIMITER)]
        kind = fields[0].lower()
        if kind == "entity" and len(fields) == 4 and normalise_name(fields[1]):
            record_names = [fields[1]]
        elif kind == "relationship" and len(fields) == 5 and normalise_name(fields[1]) and normalise_name(fields[2]):
            record_names = [fields[1], fields[2]]
        else:
            out.malformed.append(record)
            continue
        if grounded_in is not None and any(f" {normalise_name(n)} " not in grounded_in for n in record_names):
            out.ungrounded.append(record)
            continue
        if kind == "entity":
            names.setdefault(normalise_name(fields[1]), Entity(fields[1], fields[2].lower(), fields[3]))
            continue
        try:
            strength = float(fields[4])
        except ValueError:
            strength = 1.0
            out.default_strength += 1
        out.relations.append(Relation(fields[1], fields[2], fields[3], strength))
    for r in out.relations:
        for n in (r.source, r.target):
            names.setdefault(normalise_name(n), Entity(n, "", ""))
    out.entities = list(names.values())
    return out


def cooccurrence_extraction(text: str) -> Extraction:
    """The deterministic stand-in for a model: every run of capitalised words (leading stop words such
    as 'The' dropped) is an entity described by the first sentence naming it, and two entities in one
    sentence are related (strength = sentences they share). Needs no model; finds names, not types."""
    found: dict[str, Entity] = {}
    pairs: Counter[tuple[str, str]] = Counter()
    first_sentence: dict[tuple[str, str], str] = {}
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        names = []
        for m in CAPITALISED_SPAN.finditer(sentence):
            words = m.group().split()
            while words and words[0].lower() in NLTK_ENGLISH:
                words.pop(0)
            name = " ".join(words)
            key = normalise_name(name)
            if len(key) < 2 or key in (normalise_name(n) for n in names):
                continue
            names.append(name)
            found.setdefault(key, Entity(name, "", sentence))
        keys = sorted({normalise_name(n): n for n in names}.items())
        for i, (_, a) in enumerate(keys):
            for _, b in keys[i + 1:]:
                pairs[a, b] += 1
                first_sentence.setdefault((a, b), sentence)
    relations = [Relation(a, b, first_sentence[a, b], float(n)) for (a, b), n in pairs.items()]
    return Extraction(entities=list(found.values()), relations=relations)
