"""Constrained generation: outputs that match a regular expression, a JSON schema or a GBNF grammar.

``compile_constraint(kind, source, tokenizer)`` turns the constraint into an automaton over bytes
(``automaton``) masked against the tokenizer's real vocabulary (``tokens``), cached per
(kind, source, tokenizer) so repeated requests with one schema reuse its masks;
``constraint_processor(...)`` wraps it as the logits processor that ``DecodingSettings.constraint``
holds. See docs/structured.md.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ...core.errors import ConfigError
from .automaton import Automaton
from .json_schema import SchemaError, SchemaRules, schema_grammar
from .syntax import Grammar, parse_gbnf, parse_regex
from .tokens import CompiledConstraint, Constrain, TokenIndex, token_index

KINDS = ("regex", "json_schema", "grammar")
_CACHE: OrderedDict[tuple, CompiledConstraint] = OrderedDict()
_CACHE_SIZE = 32
_LOCK = threading.Lock()


def constraint_grammar(kind: str, source: Any) -> Grammar:
    """The grammar of a constraint: ``kind`` is regex (a pattern), json_schema (a schema object) or
    grammar (GBNF text, or a ``Grammar``)."""
    if kind == "regex":
        return parse_regex(source)
    if kind == "json_schema":
        return schema_grammar(source)
    if kind == "grammar":
        return source if isinstance(source, Grammar) else parse_gbnf(source)
    raise ConfigError(f"unknown constraint kind {kind!r}", f"use one of {', '.join(KINDS)}")


def compile_constraint(kind: str, source: Any, tokenizer: Any) -> CompiledConstraint:
    """The constraint compiled against ``tokenizer``'s vocabulary, with the masks of the states tokens
    reach precomputed (``CompiledConstraint.precompute``); cached: the last 32 are kept."""
    key_source = source if isinstance(source, str) else json.dumps(source, sort_keys=True, default=repr)
    key = (kind, key_source, id(tokenizer))
    with _LOCK:
        found = _CACHE.get(key)
        if found is not None and found.index is token_index(tokenizer):
            _CACHE.move_to_end(key)
            return found
    compiled = CompiledConstraint(Automaton(constraint_grammar(kind, source)), token_index(tokenizer),
                                  description=f"the {kind.replace('_', ' ')}")
    compiled.check_vocabulary()
    compiled.precompute()
    with _LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def constraint_processor(kind: str, source: Any, tokenizer: Any, end_ids: Sequence[int]) -> Constrain:
    """A fresh logits processor for one request (its prefix cache is per request; masks are shared)."""
    return Constrain(compile_constraint(kind, source, tokenizer), end_ids)


__all__ = ["KINDS", "Automaton", "CompiledConstraint", "Constrain", "Grammar", "SchemaError", "SchemaRules",
           "TokenIndex", "compile_constraint", "constraint_grammar", "constraint_processor", "parse_gbnf",
           "parse_regex", "schema_grammar", "token_index"]
