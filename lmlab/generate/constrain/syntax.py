"""The constraint language: a grammar of rules over characters, parsed from a regular expression or
from GBNF (the grammar format of llama.cpp, also read by xgrammar and llguidance).

A ``Grammar`` maps rule names to expressions built from five node kinds — ``Text`` (a literal),
``Chars`` (a set of code points), ``Seq``, ``Alt``, ``Repeat`` — and ``Ref`` (a rule by name).
Regular expressions, GBNF files and JSON schemas (``json_schema``) all become a Grammar, and one
compiler (``automaton``) turns any Grammar into the byte-level automaton that masks tokens.

GBNF rather than Lark: GBNF is character-level — a rule matches characters directly, with no
separate lexer — so a token that spans what a lexer would call two terminals needs no special
handling, and the same file runs unchanged in llama.cpp and xgrammar (the peers we measure
against). Errors name the position (``line:column`` for GBNF, the character offset for a regex).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...core.errors import ConfigError

MAX_CODEPOINT = 0x10FFFF


@dataclass(frozen=True)
class Text:
    """A literal string."""

    text: str


@dataclass(frozen=True)
class Chars:
    """One character from a set of code-point ranges (inclusive, sorted, disjoint)."""

    ranges: tuple[tuple[int, int], ...]

    @staticmethod
    def of(ranges: Sequence[tuple[int, int]], negate: bool = False) -> Chars:
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        if negate:
            gaps, at = [], 0
            for lo, hi in merged:
                if lo > at:
                    gaps.append([at, lo - 1])
                at = hi + 1
            if at <= MAX_CODEPOINT:
                gaps.append([at, MAX_CODEPOINT])
            merged = gaps
        # surrogates are not characters: no UTF-8 encodes them
        out = []
        for lo, hi in merged:
            for a, b in ((lo, min(hi, 0xD7FF)), (max(lo, 0xE000), hi)):
                if a <= b:
                    out.append((a, b))
        return Chars(tuple(out))

    def minus(self, other: Chars) -> Chars:
        """The characters of this set that are not in ``other``."""
        keep = Chars.of(other.ranges, negate=True)
        out = []
        for lo, hi in self.ranges:
            for a, b in keep.ranges:
                if max(lo, a) <= min(hi, b):
                    out.append((max(lo, a), min(hi, b)))
        return Chars.of(out)


@dataclass(frozen=True)
class Seq:
    items: tuple


@dataclass(frozen=True)
class Alt:
    options: tuple


@dataclass(frozen=True)
class Repeat:
    """``item`` repeated ``low`` to ``high`` times (``high`` None: no bound)."""

    item: object
    low: int
    high: int | None


@dataclass(frozen=True)
class Ref:
    name: str


Node = Text | Chars | Seq | Alt | Repeat | Ref
ANY_CHAR = Chars.of([(0, MAX_CODEPOINT)])
EMPTY = Seq(())


@dataclass
class Grammar:
    """Named rules and the rule a whole output must match (``root``)."""

    rules: dict[str, Node] = field(default_factory=dict)
    root: str = "root"

    def check(self) -> Grammar:
        if self.root not in self.rules:
            raise ConfigError(f"the grammar has no '{self.root}' rule", f"add a rule '{self.root} ::= ...'")
        for name, body in self.rules.items():
            for ref in refs_in(body):
                if ref not in self.rules:
                    raise ConfigError(f"rule '{name}' uses the undefined rule '{ref}'", f"define '{ref} ::= ...'")
        return self


def refs_in(node: Node) -> set[str]:
    """The rule names an expression refers to."""
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, (Seq, Alt)):
        return set().union(*(refs_in(n) for n in (node.items if isinstance(node, Seq) else node.options)))
    if isinstance(node, Repeat):
        return refs_in(node.item)
    return set()


def seq(*items: Node) -> Node:
    flat = [i for item in items for i in (item.items if isinstance(item, Seq) else (item,))]
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(*options: Node) -> Node:
    return options[0] if len(options) == 1 else Alt(tuple(options))


def optional(item: Node) -> Node:
    return Repeat(item, 0, 1)


# --- a shared scanner for both syntaxes ---------------------------------------------------------
class _Scanner:
    def __init__(self, source: str, what: str) -> None:
        self.s, self.i, self.what = source, 0, what

    def where(self, at: int | None = None) -> str:
        at = self.i if at is None else at
        if self.what == "regex":
            return f"at position {at}"
        line = self.s.count("\n", 0, at) + 1
        col = at - (self.s.rfind("\n", 0, at) + 1) + 1
        return f"at line {line}, column {col}"

    def fail(self, problem: str, fix: str | None = None, at: int | None = None) -> ConfigError:
        return ConfigError(f"invalid {self.what} {self.where(at)}: {problem}", fix)

    def peek(self, k: int = 0) -> str:
        return self.s[self.i + k] if self.i + k < len(self.s) else ""

    def take(self) -> str:
        if self.i >= len(self.s):
            raise self.fail("unexpected end")
        c = self.s[self.i]
        self.i += 1
        return c

    def hex(self, digits: int) -> int:
        start = self.i
        text = self.s[self.i:self.i + digits]
        if len(text) != digits or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise self.fail(f"expected {digits} hex digits", at=start)
        self.i += digits
        return int(text, 16)

    def escape(self, in_class: bool) -> int | Chars:
        """The character (or class, for \\d \\w \\s ...) after a backslash."""
        start = self.i - 1
        c = self.take()
        simple = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0", "a": "\a"}
        if c in simple:
            return ord(simple[c])
        if c == "x":
            return self.hex(2)
        if c == "u":
            return self.hex(4)
        if c == "U":
            return self.hex(8)
        if c in CLASS_ESCAPES:
            return CLASS_ESCAPES[c]
        if c == "b" and in_class:
            return 8
        if c.isalnum():
            raise self.fail(f"the escape '\\{c}' is not supported", "escape only punctuation, or use \\d \\w \\s \\xHH",
                            at=start)
        return ord(c)


CLASS_ESCAPES = {
    "d": Chars.of([(48, 57)]),
    "D": Chars.of([(48, 57)], negate=True),
    "w": Chars.of([(48, 57), (65, 90), (95, 95), (97, 122)]),
    "W": Chars.of([(48, 57), (65, 90), (95, 95), (97, 122)], negate=True),
    "s": Chars.of([(9, 13), (32, 32)]),
    "S": Chars.of([(9, 13), (32, 32)], negate=True),
}


def _char_class(sc: _Scanner) -> Chars:
    """``[...]`` after its opening bracket."""
    start = sc.i - 1
    negate = sc.peek() == "^"
    if negate:
        sc.i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while True:
        if sc.i >= len(sc.s):
            raise sc.fail("the character class is not closed", "add ']'", at=start)
        c = sc.take()
        if c == "]" and not first:
            break
        first = False
        lo: int | Chars = sc.escape(True) if c == "\\" else ord(c)
        if isinstance(lo, Chars):
            ranges += lo.ranges
            continue
        if sc.peek() == "-" and sc.peek(1) not in ("]", ""):
            sc.i += 1
            c2 = sc.take()
            hi = sc.escape(True) if c2 == "\\" else ord(c2)
            if isinstance(hi, Chars) or hi < lo:
                raise sc.fail("bad range in character class", at=sc.i - 1)
            ranges.append((lo, hi))
        else:
            ranges.append((lo, lo))
    return Chars.of(ranges, negate)


def _repeat_bounds(sc: _Scanner) -> tuple[int, int | None] | None:
    """``{m}``, ``{m,}``, ``{m,n}``, ``{,n}`` after the brace (None if the brace is not a quantifier)."""
    start = sc.i
    end = sc.s.find("}", sc.i)
    match = _BOUNDS.fullmatch(sc.s[sc.i:end]) if end >= 0 else None
    if match is None or not (match.group(1) or match.group(3)):
        return None
    sc.i = end + 1
    low = int(match.group(1) or 0)
    high = low if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
    if high is not None and high < low:
        raise sc.fail(f"repetition {{{sc.s[start:end]}}} has its maximum below its minimum", at=start - 1)
    return low, high


_BOUNDS = re.compile(r"\s*(\d*)\s*(,\s*(\d*)\s*)?")


def _postfix(sc: _Scanner, item: Node, start: int) -> Node:
    while True:
        c = sc.peek()
        if c in ("*", "+", "?"):
            sc.i += 1
            item = Repeat(item, {"*": 0, "+": 1, "?": 0}[c], 1 if c == "?" else None)
        elif c == "{":
            sc.i += 1
            bounds = _repeat_bounds(sc)
            if bounds is None and sc.what == "regex":  # a literal '{', as Python's re reads it
                sc.i -= 1
                return item
            if bounds is None:
                raise sc.fail("'{' must start a repetition like {2}, {2,} or {2,5}", "escape it as \\{", at=sc.i - 1)
            item = Repeat(item, *bounds)
        else:
            return item
        if sc.what == "regex" and sc.peek() in ("?", "+"):  # lazy/possessive: same language
            sc.i += 1


# --- regular expressions ------------------------------------------------------------------------
def parse_regex(pattern: str) -> Grammar:
    """A grammar whose root matches exactly the strings ``pattern`` matches in full.

    Python ``re`` syntax: literals and escapes, ``.`` (any character but newline), classes with
    ranges and negation, ``\\d \\w \\s`` and their negations (ASCII classes, as in ECMA-262 and so
    in JSON Schema patterns), groups ``( )`` and ``(?: )`` (named
    groups too), ``|``, and the quantifiers ``* + ? {m} {m,} {m,n}`` (lazy forms allowed). ``^``
    and ``$`` may only stand at the two ends (the whole output is matched anyway); lookarounds
    and back-references are refused — no finite automaton has them.
    """
    return Grammar({"root": regex_node(pattern)})


def regex_node(pattern: str, *, allow_unanchored: bool = False) -> Node:
    """The expression of ``pattern`` (``allow_unanchored``: a JSON-schema pattern, which matches
    anywhere in the string unless anchored, so missing ``^``/``$`` become any-text)."""
    if not isinstance(pattern, str):
        raise ConfigError(f"a regular expression must be a string, got {type(pattern).__name__}")
    sc = _Scanner(pattern, "regex")
    anchored_start = sc.peek() == "^"
    if anchored_start:
        sc.i += 1
    node = _regex_alt(sc, 0)
    anchored_end = False
    if sc.peek() == "$":
        sc.i += 1
        anchored_end = True
    if sc.i < len(sc.s):
        c = sc.peek()
        raise sc.fail(f"unexpected '{c}'", "close groups with ')' and put '$' only at the end" if c in ")$" else None)
    if allow_unanchored:
        anything = Repeat(ANY_CHAR, 0, None)
        node = seq(*(() if anchored_start else (anything,)), node, *(() if anchored_end else (anything,)))
    return node


def _regex_alt(sc: _Scanner, depth: int) -> Node:
    options = [_regex_seq(sc, depth)]
    while sc.peek() == "|":
        sc.i += 1
        options.append(_regex_seq(sc, depth))
    return alt(*options)


def _regex_seq(sc: _Scanner, depth: int) -> Node:
    items: list[Node] = []
    while sc.i < len(sc.s) and sc.peek() != "|" and not (sc.peek() == ")" and depth):
        if sc.peek() == "$" and sc.i == len(sc.s) - 1:
            break
        start = sc.i
        c = sc.take()
        if c == "(":
            if sc.peek() == "?":
                kind = sc.s[sc.i:sc.i + 2]
                if kind == "?:":
                    sc.i += 2
                elif kind == "?P" and sc.peek(2) == "<":
                    sc.i = sc.s.index(">", sc.i) + 1
                elif sc.peek(1) == "<" and sc.peek(2) not in ("=", "!"):
                    sc.i = sc.s.index(">", sc.i) + 1
                else:
                    raise sc.fail("lookarounds, flags and conditionals are not supported",
                                  "a finite automaton has no lookaround: rewrite without it", at=start)
            inner = _regex_alt(sc, depth + 1)
            if sc.peek() != ")":
                raise sc.fail("the group is not closed", "add ')'", at=start)
            sc.i += 1
            item: Node = inner
        elif c == ")":
            raise sc.fail("unbalanced ')'", at=start)
        elif c == "[":
            item = _char_class(sc)
        elif c == ".":
            item = Chars.of([(10, 10)], negate=True)
        elif c == "\\":
            if sc.peek().isdigit() and sc.peek() != "0":
                raise sc.fail("back-references are not supported", "no finite automaton has them", at=start)
            if sc.peek() in ("b", "B", "A", "Z", "z"):
                raise sc.fail(f"the anchor '\\{sc.peek()}' is not supported", at=start)
            e = sc.escape(False)
            item = e if isinstance(e, Chars) else Text(chr(e))
        elif c in "*+?":
            raise sc.fail(f"'{c}' has nothing to repeat", f"escape it as \\{c}", at=start)
        elif c == "{" and _repeat_bounds(sc) is not None:
            raise sc.fail("a repetition has nothing to repeat", "escape '{' as \\{", at=start)
        elif c in "^$":
            raise sc.fail(f"'{c}' is only supported at the start/end of the pattern", at=start)
        else:
            item = Text(c)
        items.append(_postfix(sc, item, start))
    return seq(*items) if items else EMPTY


# --- GBNF ---------------------------------------------------------------------------------------
def parse_gbnf(source: str) -> Grammar:
    """A grammar from GBNF text (llama.cpp's ``grammars/README.md``): rules ``name ::= expression``,
    string literals with escapes, character classes (``[a-z]``, ``[^"]``), ``.``, groups,
    ``|``, ``* + ? {m} {m,} {m,n}``, ``#`` comments; a rule continues until the next ``name ::=``.
    The whole output must match ``root``. Token references (``<...>``) are refused."""
    sc = _Scanner(source, "grammar")
    grammar = Grammar()
    _gbnf_space(sc)
    while sc.i < len(sc.s):
        start = sc.i
        name = _gbnf_name(sc)
        if not name:
            raise sc.fail(f"expected a rule name, found {sc.peek()!r}")
        _gbnf_space(sc)
        if sc.s[sc.i:sc.i + 3] != "::=":
            raise sc.fail(f"expected '::=' after the rule name '{name}'")
        sc.i += 3
        if name in grammar.rules:
            raise sc.fail(f"the rule '{name}' is defined twice", at=start)
        grammar.rules[name] = _gbnf_alt(sc, 0)
        _gbnf_space(sc)
    return grammar.check()


def _gbnf_space(sc: _Scanner) -> None:
    while sc.i < len(sc.s):
        c = sc.peek()
        if c == "#":
            end = sc.s.find("\n", sc.i)
            sc.i = len(sc.s) if end < 0 else end
        elif c.isspace():
            sc.i += 1
        else:
            return


def _gbnf_name(sc: _Scanner) -> str:
    start = sc.i
    while sc.i < len(sc.s) and (sc.s[sc.i].isalnum() or sc.s[sc.i] in "-_"):
        sc.i += 1
    return sc.s[start:sc.i]


def _at_rule_start(sc: _Scanner) -> bool:
    """Whether the text at the cursor begins a new rule (``name ::=``)."""
    save = sc.i
    name = _gbnf_name(sc)
    _gbnf_space(sc)
    found = bool(name) and sc.s[sc.i:sc.i + 3] == "::="
    sc.i = save
    return found


def _gbnf_alt(sc: _Scanner, depth: int) -> Node:
    options = [_gbnf_seq(sc, depth)]
    while sc.peek() == "|":
        sc.i += 1
        options.append(_gbnf_seq(sc, depth))
    return alt(*options)


def _gbnf_seq(sc: _Scanner, depth: int) -> Node:
    items: list[Node] = []
    while True:
        _gbnf_space(sc)
        if sc.i >= len(sc.s) or sc.peek() == "|" or (sc.peek() == ")" and depth) or _at_rule_start(sc):
            break
        start = sc.i
        c = sc.take()
        if c == '"':
            chars = []
            while True:
                if sc.i >= len(sc.s):
                    raise sc.fail("the string literal is not closed", "add '\"'", at=start)
                d = sc.take()
                if d == '"':
                    break
                if d == "\\":
                    e = sc.escape(True)
                    if isinstance(e, Chars):
                        raise sc.fail("a class escape cannot stand in a string literal", at=sc.i - 2)
                    chars.append(chr(e))
                else:
                    chars.append(d)
            item: Node = Text("".join(chars))
        elif c == "[":
            item = _char_class(sc)
        elif c == ".":
            item = ANY_CHAR
        elif c == "(":
            item = _gbnf_alt(sc, depth + 1)
            _gbnf_space(sc)
            if sc.peek() != ")":
                raise sc.fail("the group is not closed", "add ')'", at=start)
            sc.i += 1
        elif c == "<":
            raise sc.fail("token references (<...>) are not supported", "write the text the token stands for",
                          at=start)
        elif c.isalnum() or c in "-_":
            sc.i -= 1
            item = Ref(_gbnf_name(sc))
        else:
            raise sc.fail(f"unexpected {c!r}", at=start)
        items.append(_postfix(sc, item, start))
    return seq(*items) if items else EMPTY


__all__ = ["ANY_CHAR", "EMPTY", "Alt", "Chars", "Grammar", "Node", "Ref", "Repeat", "Seq", "Text", "alt",
           "optional", "parse_gbnf", "parse_regex", "refs_in", "regex_node", "seq"]
