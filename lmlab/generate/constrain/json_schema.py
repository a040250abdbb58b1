"""JSON Schema → Grammar: every string the grammar matches is JSON that validates against the schema.

Supported: ``type`` (one or a list), ``enum``, ``const``, ``anyOf``, ``allOf`` of one schema,
``$ref`` to ``#``, ``#/$defs/…`` or ``#/definitions/…`` (recursive schemas too); objects with
``properties``, ``required`` and ``additionalProperties`` (false, true or a schema); arrays with
``items``, ``prefixItems``, ``minItems``, ``maxItems``; strings with ``minLength``, ``maxLength``,
``pattern`` (unanchored unless ``^``/``$``, as JSON Schema reads it) and ``format`` (date, time,
date-time, uuid, email, ipv4); integers with ``minimum``/``maximum``/``exclusiveMinimum``/
``exclusiveMaximum``; numbers with integer ``minimum``/``maximum``. Annotations (title,
description, default, examples, …) are ignored. Anything else is refused by name: a keyword we
cannot guarantee (``oneOf``, ``uniqueItems``, ``multipleOf``, …) must not be silently dropped.

The text is compact JSON (``json.dumps(..., separators=(",", ":"))``) with an optional single
space after ``:`` and ``,``; properties come in the schema's order (optional ones may be left
out). Numbers have at most 15 integer digits and 15 fraction digits, so they stay exact in
float64. Generation only needs every produced string to be valid, so each choice here narrows
the language where needed and never widens it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ...core.errors import ConfigError
from .syntax import (
    ANY_CHAR,
    EMPTY,
    Alt,
    Chars,
    Grammar,
    Node,
    Ref,
    Repeat,
    Text,
    alt,
    optional,
    regex_node,
    seq,
)

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "$defs", "definitions", "strict", "name", "discriminator"}
KEYWORDS = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"minLength", "maxLength", "pattern", "format"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"minimum", "maximum"},
    "boolean": set(),
    "null": set(),
}
GENERAL = {"type", "enum", "const", "anyOf", "allOf", "$ref"}
MAX_DIGITS = 15
DIGIT = Chars.of([(48, 57)])
NONZERO = Chars.of([(49, 57)])
WS = optional(Text(" "))
UNSAFE = Chars.of([(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])  # what a JSON string must escape
SAFE_CHAR = ANY_CHAR.minus(UNSAFE)
HEX = Chars.of([(48, 57), (65, 70), (97, 102)])
STRING_CHAR = alt(SAFE_CHAR, seq(Text("\\"), alt(Chars.of([(34, 34), (47, 47), (92, 92), (98, 98), (102, 102),
                                                            (110, 110), (114, 114), (116, 116)]),
                                                   seq(Text("u"), Repeat(HEX, 4, 4)))))
FORMATS = {
    "date": r"[0-9]{4}-(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|[0-9]{4}-(0[469]|11)-(0[1-9]|[12][0-9]|30)"
            r"|[0-9]{4}-02-(0[1-9]|1[0-9]|2[0-8])",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "email": r"[a-zA-Z0-9._%+-]{1,64}@[a-zA-Z0-9-]{1,63}(\.[a-zA-Z0-9-]{1,63}){1,3}",
    "ipv4": r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
}
FORMATS["date-time"] = f"({FORMATS['date']})T{FORMATS['time']}"


class SchemaError(ConfigError):
    """A schema that is invalid or uses a feature that cannot be guaranteed; ``path`` says where."""

    def __init__(self, path: str, problem: str, fix: str | None = None) -> None:
        super().__init__(f"JSON schema at {path or '(root)'}: {problem}", fix)
        self.path = path


def schema_grammar(schema: Any) -> Grammar:
    """The grammar of JSON texts valid under ``schema`` (a dict, or true/false)."""
    grammar = Grammar()
    builder = SchemaRules(schema, grammar)
    grammar.rules["root"] = builder.node(schema, "")
    return grammar.check()


class SchemaRules:
    """Turns (sub)schemas into grammar nodes, adding a rule per ``$ref`` target (refs may recurse)."""

    def __init__(self, root: Any, grammar: Grammar, prefix: str = "") -> None:
        self.root, self.grammar, self.prefix = root, grammar, prefix

    # --- dispatch -----------------------------------------------------------------------------------
    def node(self, schema: Any, path: str) -> Node:
        if schema is True or schema == {}:
            return self.any_value()
        if schema is False:
            raise SchemaError(path, "the schema 'false' accepts nothing", "remove it")
        if not isinstance(schema, Mapping):
            raise SchemaError(path, f"a schema must be an object or a boolean, got {type(schema).__name__}")
        known = GENERAL | ANNOTATIONS | set().union(*KEYWORDS.values())
        unknown = sorted(set(schema) - known)
        if unknown:
            raise SchemaError(path, f"'{unknown[0]}' is not supported", _hint(unknown[0]))
        if "$ref" in schema:
            others = set(schema) - ANNOTATIONS - {"$ref"}
            if others:
                raise SchemaError(path, f"'$ref' beside '{sorted(others)[0]}' is not supported",
                                  "put the other keywords in the referenced schema")
            return self.ref(schema["$ref"], path)
        if "allOf" in schema:
            parts = schema["allOf"]
            if not isinstance(parts, list) or len(parts) != 1 or set(schema) - ANNOTATIONS - {"allOf"}:
                raise SchemaError(path, "'allOf' is supported with exactly one schema and nothing beside it",
                                  "merge the schemas into one")
            return self.node(parts[0], f"{path}/allOf/0")
        if "anyOf" in schema:
            options = schema["anyOf"]
            if not isinstance(options, list) or not options:
                raise SchemaError(path, "'anyOf' must be a non-empty list of schemas")
            rest = {k: v for k, v in schema.items() if k != "anyOf" and k not in ANNOTATIONS}
            if rest:
                raise SchemaError(path, f"'anyOf' beside '{sorted(rest)[0]}' is not supported",
                                  "move the keyword into each anyOf branch")
            return alt(*(self.node(o, f"{path}/anyOf/{i}") for i, o in enumerate(options)))
        if "const" in schema:
            return Text(_dump(schema["const"], path))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(path, "'enum' must be a non-empty list")
            types = _types(schema, path) if "type" in schema else None
            kept = [v for v in values if types is None or _json_type(v) in types
                    or (_json_type(v) == "integer" and "number" in types)]
            if not kept:
                raise SchemaError(path, "no 'enum' value has the schema's 'type'")
            return alt(*(Text(_dump(v, path)) for v in kept))
        types = _types(schema, path) if "type" in schema else sorted(KEYWORDS)
        if "type" not in schema:
            used = [t for t in types if KEYWORDS[t] & set(schema)]
            types = used or types
            if not used:
                return self.any_value()
        for key in set(schema) - GENERAL - ANNOTATIONS:
            if not any(key in KEYWORDS[t] for t in types):
                raise SchemaError(path, f"'{key}' does not apply to type {'/'.join(types)}",
                                  "remove it or fix 'type'")
        return alt(*(getattr(self, f"of_{t}")(schema, path) for t in types))

    def ref(self, ref: Any, path: str) -> Node:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise SchemaError(path, f"'$ref' {ref!r} is not supported", "only local references (#/$defs/Name)")
        name = "".join(c if c.isalnum() else "-" for c in f"{self.prefix}ref{ref[1:]}")
        if name not in self.grammar.rules:
            target: Any = self.root
            for part in ref[2:].split("/") if ref != "#" else []:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    raise SchemaError(path, f"'$ref' {ref} points at nothing", "check the name under $defs")
                target = target[part]
            self.grammar.rules[name] = EMPTY  # placeholder: a recursive reference sees the rule exists
            self.grammar.rules[name] = self.node(target, ref[1:] or "/")
        return Ref(name)

    # --- values -------------------------------------------------------------------------------------
    def any_value(self) -> Node:
        """Any JSON value (a recursive rule shared by every schema that allows anything)."""
        name = self.prefix + "json-value"
        if name not in self.grammar.rules:
            value = Ref(name)
            member = seq(self.string_of(Repeat(STRING_CHAR, 0, None)), Text(":"), WS, value)
            self.grammar.rules[name] = alt(
                seq(Text("{"), optional(seq(member, Repeat(seq(Text(","), WS, member), 0, None))), Text("}")),
                seq(Text("["), optional(seq(value, Repeat(seq(Text(","), WS, value), 0, None))), Text("]")),
                self.string_of(Repeat(STRING_CHAR, 0, None)), _number(None, None),
                Text("true"), Text("false"), Text("null"))
        return Ref(name)

    @staticmethod
    def string_of(content: Node) -> Node:
        return seq(Text('"'), content, Text('"'))

    def of_null(self, schema: Mapping, path: str) -> Node:
        return Text("null")

    def of_boolean(self, schema: Mapping, path: str) -> Node:
        return alt(Text("true"), Text("false"))

    def of_integer(self, schema: Mapping, path: str) -> Node:
        low, high = _bound(schema, "minimum", path, ceil=True), _bound(schema, "maximum", path, ceil=False)
        if "exclusiveMinimum" in schema:
            value = _bound(schema, "exclusiveMinimum", path, ceil=False)
            low = value + 1 if low is None else max(low, value + 1)
        if "exclusiveMaximum" in schema:
            value = _bound(schema, "exclusiveMaximum", path, ceil=True)
            high = value - 1 if high is None else min(high, value - 1)
        if low is not None and high is not None and low > high:
            raise SchemaError(path, f"no integer lies between the bounds {low} and {high}")
        return _integer(low, high)

    def of_number(self, schema: Mapping, path: str) -> Node:
        bounds = []
        for key in ("minimum", "maximum"):
            value = schema.get(key)
            if value is not None and (not _is_number(value) or value != int(value)):
                raise SchemaError(path, f"'{key}' {value!r} on a number is not supported (only whole-number bounds)",
                                  "use an integer bound, or type integer")
            bounds.append(None if value is None else int(value))
        if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
            raise SchemaError(path, f"minimum {bounds[0]} exceeds maximum {bounds[1]}")
        return _number(*bounds)

    def of_string(self, schema: Mapping, path: str) -> Node:
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        for key, value in (("minLength", low), ("maxLength", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise SchemaError(path, f"'{key}' must be a non-negative integer, got {value!r}")
        if high is not None and high < low:
            raise SchemaError(path, f"maxLength {high} is below minLength {low}")
        if "pattern" in schema or "format" in schema:
            if "pattern" in schema and "format" in schema:
                raise SchemaError(path, "'pattern' together with 'format' is not supported", "keep one of them")
            if "minLength" in schema or "maxLength" in schema:
                raise SchemaError(path, "'minLength'/'maxLength' together with a pattern or format is not supported",
                                  "put the length into the pattern, e.g. ^[a-z]{2,8}$")
            if "format" in schema:
                fmt = schema["format"]
                if fmt not in FORMATS:
                    raise SchemaError(path, f"the string format {fmt!r} is not supported",
                                      f"supported: {', '.join(sorted(FORMATS))}; or give a pattern")
                inner = regex_node(FORMATS[fmt])
            else:
                try:
                    inner = regex_node(schema["pattern"], allow_unanchored=True)
                except ConfigError as exc:
                    raise SchemaError(f"{path}/pattern", exc.problem, exc.fix) from None
            return self.string_of(json_escaped(inner))
        return self.string_of(Repeat(STRING_CHAR, low, high))

    def of_array(self, schema: Mapping, path: str) -> Node:
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        for key, value in (("minItems", low), ("maxItems", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise SchemaError(path, f"'{key}' must be a non-negative integer, got {value!r}")
        prefix = schema.get("prefixItems", [])
        if not isinstance(prefix, list):
            raise SchemaError(path, "'prefixItems' must be a list of schemas")
        items = schema.get("items", True)
        if isinstance(items, list):
            raise SchemaError(path, "'items' as a list is the old tuple form", "use 'prefixItems'")
        if high is not None and high < low:
            raise SchemaError(path, f"maxItems {high} is below minItems {low}")
        elements = [self.node(s, f"{path}/prefixItems/{i}") for i, s in enumerate(prefix)]
        rest_low = max(0, low - len(elements))
        rest_high = None if high is None else high - len(elements)
        if rest_high is not None and rest_high < 0:
            elements, rest_high = elements[:high], 0
        if items is False:
            if low > len(elements):
                raise SchemaError(path, f"minItems {low} needs more items than prefixItems gives and items is false")
            rest_high = 0
        rest = self.node(items, f"{path}/items") if rest_high != 0 else None
        # the first element takes no comma: fixed elements, then up to rest_high more
        sep = seq(Text(","), WS)
        parts: list[Node] = []
        for i, e in enumerate(elements):
            parts.append(e if i == 0 else seq(sep, e))
        if rest is not None:
            more = seq(sep, rest)
            if elements:
                tail = seq(Repeat(more, rest_low, rest_high))
            elif rest_low:
                tail = seq(rest, Repeat(more, rest_low - 1, None if rest_high is None else rest_high - 1))
            else:
                tail = optional(seq(rest, Repeat(more, 0, None if rest_high is None else rest_high - 1))) \
                    if rest_high != 0 else EMPTY
            parts.append(tail)
        return seq(Text("["), *parts, Text("]"))

    def of_object(self, schema: Mapping, path: str) -> Node:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties", True)
        if not isinstance(props, Mapping):
            raise SchemaError(path, "'properties' must be an object")
        if not isinstance(required, list) or any(not isinstance(r, str) for r in required):
            raise SchemaError(path, "'required' must be a list of property names")
        missing = [r for r in required if r not in props]
        if missing:
            raise SchemaError(path, f"required property '{missing[0]}' has no schema in 'properties'",
                              "describe it under properties")
        if not props:
            value = self.node(extra, f"{path}/additionalProperties") if extra is not False else None
            if value is None:
                return Text("{}")
            member = seq(self.string_of(Repeat(STRING_CHAR, 0, None)), Text(":"), WS, value)
            return seq(Text("{"), optional(seq(member, Repeat(seq(Text(","), WS, member), 0, None))), Text("}"))
        members = [(name in required, seq(Text(_dump(name, path) + ":"), WS,
                                          self.node(sub, f"{path}/properties/{name}")))
                   for name, sub in props.items()]
        return seq(Text("{"), _members(members), Text("}"))


def _members(members: list[tuple[bool, Node]]) -> Node:
    """Properties in order, required ones always, optional ones maybe, with commas between."""
    sep = seq(Text(","), WS)
    first_required = next((i for i, (req, _) in enumerate(members) if req), None)
    if first_required is not None:  # optional ones before it carry a trailing comma, later ones a leading one
        parts = [optional(seq(m, sep)) for _, m in members[:first_required]]
        parts.append(members[first_required][1])
        parts += [seq(sep, m) if req else optional(seq(sep, m)) for req, m in members[first_required + 1:]]
        return seq(*parts)
    # all optional: empty, or the first one present is i, followed by any of the later ones
    options = [EMPTY]
    for i, (_, m) in enumerate(members):
        options.append(seq(m, *(optional(seq(sep, later)) for _, later in members[i + 1:])))
    return Alt(tuple(options))


def json_escaped(node: Node) -> Node:
    """The pattern ``node`` (over characters of the string's value) as the JSON text of such strings:
    characters that JSON must escape are written as escapes."""
    if isinstance(node, Text):
        return seq(*(Text(json.dumps(c)[1:-1]) for c in node.text)) if node.text else node
    if isinstance(node, Chars):
        safe = node.minus(UNSAFE)
        unsafe = node.minus(safe)
        escapes = [Text(json.dumps(chr(c))[1:-1]) for lo, hi in unsafe.ranges for c in range(lo, hi + 1)]
        return alt(*([safe] if safe.ranges else []), *escapes) if escapes or safe.ranges else safe
    if isinstance(node, Alt):
        return Alt(tuple(json_escaped(o) for o in node.options))
    if isinstance(node, Repeat):
        return Repeat(json_escaped(node.item), node.low, node.high)
    if hasattr(node, "items"):
        return seq(*(json_escaped(i) for i in node.items)) if node.items else node
    return node


def _digits(low: int, high: int | None) -> Node:
    return Repeat(DIGIT, low, high)


def _same_length(lo: str, hi: str) -> Node:
    """Digit strings of one length between lo and hi (inclusive)."""
    if lo == hi:
        return Text(lo)
    if lo == "0" * len(lo) and hi == "9" * len(hi):
        return _digits(len(lo), len(lo))
    if len(lo) == 1:
        return Chars.of([(ord(lo), ord(hi))])
    if lo[0] == hi[0]:
        return seq(Text(lo[0]), _same_length(lo[1:], hi[1:]))
    rest = len(lo) - 1
    options = [seq(Text(lo[0]), _same_length(lo[1:], "9" * rest))]
    if int(lo[0]) + 1 <= int(hi[0]) - 1:
        options.append(seq(Chars.of([(ord(lo[0]) + 1, ord(hi[0]) - 1)]), _digits(rest, rest)))
    options.append(seq(Text(hi[0]), _same_length("0" * rest, hi[1:])))
    return alt(*options)


def _natural(low: int, high: int | None) -> Node:
    """Decimal naturals (no leading zeros) in [low, high]; high None: up to MAX_DIGITS digits."""
    if low == 0 and high is None:
        return alt(Text("0"), seq(NONZERO, _digits(0, MAX_DIGITS - 1)))
    top = 10 ** MAX_DIGITS - 1 if high is None else min(high, 10 ** MAX_DIGITS - 1)
    options = []
    for n in range(len(str(low)), len(str(top)) + 1):
        lo, hi = max(low, 10 ** (n - 1) if n > 1 else 0), min(top, 10 ** n - 1)
        if lo <= hi:
            options.append(_same_length(str(lo), str(hi)))
    return alt(*options)


def _integer(low: int | None, high: int | None) -> Node:
    """Integers in [low, high] (None: unbounded on that side, up to MAX_DIGITS digits)."""
    options = []
    if high is None or high >= 0:
        options.append(_natural(max(low or 0, 0) if low is not None else 0, high))
    if low is None or low < 0:
        lo_mag = 1 if high is None or high >= 0 else -high
        options.append(seq(Text("-"), _natural(lo_mag, None if low is None else -low)))
    return alt(*options)


def _number(low: int | None, high: int | None) -> Node:
    """JSON numbers in [low, high] (whole-number bounds); unbounded numbers may have an exponent."""
    fraction = seq(Text("."), _digits(1, MAX_DIGITS))
    if low is None and high is None:
        exponent = seq(Chars.of([(69, 69), (101, 101)]), optional(Chars.of([(43, 43), (45, 45)])),
                       Chars.of([(49, 57)]), _digits(0, 1))
        return seq(optional(Text("-")), _natural(0, None), optional(fraction), optional(exponent))
    zeros = seq(Text("."), Repeat(Text("0"), 1, MAX_DIGITS))

    def magnitude(a: int, b: int | None) -> Node:
        """Non-negative decimals in [a, b]: any fraction below b, only zeros at b."""
        options = []
        if b is None or b - 1 >= a:
            options.append(seq(_natural(a, None if b is None else b - 1), optional(fraction)))
        if b is not None:
            options.append(seq(Text(str(b)), optional(zeros)))
        return alt(*options)

    options = []
    if high is None or high >= 0:
        options.append(magnitude(max(low, 0) if low is not None else 0, high))
    if low is None or low < 0:
        options.append(seq(Text("-"), magnitude(0 if high is None or high >= 0 else -high,
                                                None if low is None else -low)))
    return alt(*options)


def _bound(schema: Mapping, key: str, path: str, *, ceil: bool) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise SchemaError(path, f"'{key}' must be a number, got {value!r}")
    return math.ceil(value) if ceil else math.floor(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _types(schema: Mapping, path: str) -> list[str]:
    t = schema["type"]
    types = [t] if isinstance(t, str) else t
    if not isinstance(types, list) or not types or any(x not in KEYWORDS for x in types):
        raise SchemaError(path, f"'type' {t!r} is not a JSON Schema type", f"use one of {', '.join(KEYWORDS)}")
    return list(dict.fromkeys(types))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "?")


def _dump(value: Any, path: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(path, f"{value!r} is not a JSON value ({exc})") from None


def _hint(keyword: str) -> str:
    if keyword == "oneOf":
        return "use anyOf (lmlab cannot guarantee that exactly one branch matches)"
    if keyword in ("uniqueItems", "multipleOf", "contains", "not", "if", "patternProperties",
                   "dependentRequired", "minProperties", "maxProperties", "propertyNames"):
        return "lmlab cannot guarantee it while generating; remove it and check the result afterwards"
    return "see docs/structured.md for the supported keywords"


__all__ = ["SchemaError", "SchemaRules", "json_escaped", "schema_grammar"]
