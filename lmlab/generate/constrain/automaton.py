"""A Grammar compiled to a byte-level pushdown automaton, determinised lazily into numbered states.

Each rule becomes a Thompson NFA over **bytes**: a character set becomes the UTF-8 byte sequences
that encode it (so a token that holds half of a character is matched byte by byte), a literal its
UTF-8 bytes. Rules that are not recursive are inlined into their users, so a regular expression
or a non-recursive JSON schema is one NFA and needs no stack at all; a recursive rule (a JSON
value inside a JSON array) is a call edge that pushes its return point.

A *configuration* is the set of stacks the automaton can be in (a stack is a tuple of NFA states:
return points below, the current position on top). Configurations are interned to integers and
their byte transitions are filled into a table (``next_state``) the first time they are needed —
the subset construction of a DFA done lazily, carried over to the stack — so the token masks
(``lmlab.generate.constrain.tokens``) walk every vocabulary token with array lookups. State 0 is
the dead configuration; ``start`` is the one before any byte.
"""

from __future__ import annotations

import threading

import numpy as np

from ...core.errors import ConfigError
from .syntax import Alt, Chars, Grammar, Node, Ref, Repeat, Seq, Text, refs_in

MAX_NFA_STATES = 400_000
UNKNOWN = -1
DEAD = 0


def utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """The byte-range sequences whose concatenations are exactly the UTF-8 encodings of the code
    points lo..hi (the splitting of RE2 / Rust's ``regex-syntax``)."""
    out, todo = [], [(lo, hi)]
    while todo:
        lo, hi = todo.pop()
        for boundary in (0x7F, 0x7FF, 0xFFFF):
            if lo <= boundary < hi:
                todo += [(boundary + 1, hi), (lo, boundary)]
                break
        else:
            if hi <= 0x7F:
                out.append([(lo, hi)])
                continue
            for i in range(1, 4):
                m = (1 << (6 * i)) - 1
                if lo & ~m != hi & ~m:
                    if lo & m:
                        todo += [((lo | m) + 1, hi), (lo, lo | m)]
                        break
                    if hi & m != m:
                        todo += [(hi & ~m, hi), (lo, (hi & ~m) - 1)]
                        break
            else:
                out.append(list(zip(chr(lo).encode(), chr(hi).encode(), strict=True)))
    return out


class _NFA:
    """Byte edges, ε edges and call edges of every rule's Thompson NFA, in flat lists."""

    def __init__(self) -> None:
        self.bytes: list[list[tuple[int, int, int]]] = []
        self.eps: list[list[int]] = []
        self.calls: list[list[tuple[int, int]]] = []  # (rule, return state)

    def new(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise ConfigError(f"the constraint compiles to more than {MAX_NFA_STATES} automaton states",
                              "use smaller repetition bounds or fewer alternatives")
        self.bytes.append([])
        self.eps.append([])
        self.calls.append([])
        return len(self.eps) - 1


def recursive_rules(grammar: Grammar) -> set[str]:
    """Rules that can reach themselves through references."""
    uses = {name: refs_in(body) for name, body in grammar.rules.items()}
    out = set()
    for name in uses:
        seen, todo = set(), list(uses[name])
        while todo:
            r = todo.pop()
            if r == name:
                out.add(name)
                break
            if r not in seen:
                seen.add(r)
                todo += uses[r]
    return out


class Automaton:
    """The pushdown automaton of a grammar over bytes, with lazily numbered configurations."""

    def __init__(self, grammar: Grammar) -> None:
        grammar.check()
        self.grammar = grammar
        kept = [grammar.root] + sorted(recursive_rules(grammar) - {grammar.root})
        self.rule_index = {name: i for i, name in enumerate(kept)}
        nfa = self.nfa = _NFA()
        self.starts, self.finals = [], []
        for name in kept:
            start = nfa.new()
            self.starts.append(start)
            self.finals.append(self._build(grammar.rules[name], start, (name,)))
        self.final_rule = [-1] * len(nfa.eps)  # the rule a state ends, if it is its final state
        for r, f in enumerate(self.finals):
            self.final_rule[f] = r
        self._check_left_recursion(kept)
        self.live = self._live_states()
        if not self.live[self.starts[0]]:
            raise ConfigError("the grammar matches no string at all", "check its rules for endless recursion")
        self._closures: dict[int, tuple[int, ...]] = {}
        self._edges: dict[int, list[tuple[int, int, tuple]]] = {}
        self.configs: list[frozenset] = [frozenset()]
        self.ids: dict[frozenset, int] = {frozenset(): DEAD}
        self.accepting: list[bool] = [False]
        self.table = np.zeros((64, 256), dtype=np.int32)
        self.table[1:] = UNKNOWN
        self.lock = threading.RLock()
        self.start = self.intern(frozenset({(self.starts[0],)}))

    # --- building ---------------------------------------------------------------------------------
    def _build(self, node: Node, s: int, inlining: tuple[str, ...]) -> int:
        nfa = self.nfa
        if isinstance(node, Text):
            for b in node.text.encode("utf-8"):
                t = nfa.new()
                nfa.bytes[s].append((b, b, t))
                s = t
            return s
        if isinstance(node, Chars):
            end = nfa.new()
            shared: dict[tuple, int] = {}
            for lo, hi in node.ranges:
                for sequence in utf8_sequences(lo, hi):
                    cur = s
                    for k, (a, b) in enumerate(sequence[:-1]):
                        key = tuple(sequence[:k + 1])
                        if key not in shared:
                            shared[key] = nfa.new()
                            nfa.bytes[cur].append((a, b, shared[key]))
                        cur = shared[key]
                    a, b = sequence[-1]
                    nfa.bytes[cur].append((a, b, end))
            return end
        if isinstance(node, Seq):
            for item in node.items:
                s = self._build(item, s, inlining)
            return s
        if isinstance(node, Alt):
            end = nfa.new()
            for option in node.options:
                t = nfa.new()
                nfa.eps[s].append(t)
                nfa.eps[self._build(option, t, inlining)].append(end)
            return end
        if isinstance(node, Repeat):
            for _ in range(node.low):
                s = self._build(node.item, s, inlining)
            end = nfa.new()
            nfa.eps[s].append(end)
            if node.high is None:
                loop = nfa.new()
                nfa.eps[s].append(loop)
                back = self._build(node.item, loop, inlining)
                nfa.eps[back].append(loop)
                nfa.eps[back].append(end)
            else:
                for _ in range(node.high - node.low):
                    s = self._build(node.item, s, inlining)
                    nfa.eps[s].append(end)
            return end
        if isinstance(node, Ref):
            if node.name in self.rule_index:
                t = nfa.new()
                nfa.calls[s].append((self.rule_index[node.name], t))
                return t
            if len(inlining) > 200:
                raise ConfigError(f"rules nest more than 200 deep at '{node.name}'")
            return self._build(self.grammar.rules[node.name], s, (*inlining, node.name))
        raise TypeError(f"not a grammar node: {node!r}")

    def _reach(self, s: int, follow_call) -> tuple[set[int], set[int]]:
        """States reachable from s without consuming a byte, and the rules called on the way
        (calls are stepped over when ``follow_call(rule)`` says the rule can match nothing)."""
        seen, called, todo = {s}, set(), [s]
        while todo:
            u = todo.pop()
            nxt = list(self.nfa.eps[u])
            for rule, t in self.nfa.calls[u]:
                called.add(rule)
                if follow_call(rule):
                    nxt.append(t)
            for t in nxt:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen, called

    def _check_left_recursion(self, kept: list[str]) -> None:
        nullable = [False] * len(kept)
        changed = True
        while changed:
            changed = False
            for r in range(len(kept)):
                if not nullable[r] and self.finals[r] in self._reach(self.starts[r], lambda q: nullable[q])[0]:
                    nullable[r] = changed = True
        first = [self._reach(self.starts[r], lambda q: nullable[q])[1] for r in range(len(kept))]
        for r in range(len(kept)):
            seen, todo = set(), list(first[r])
            while todo:
                q = todo.pop()
                if q == r:
                    raise ConfigError(f"the rule '{kept[r]}' is left-recursive (it can call itself before "
                                      "matching any character)", "rewrite it with repetition, e.g. a ::= b (\"x\" b)*")
                if q not in seen:
                    seen.add(q)
                    todo += first[q]

    def _live_states(self) -> list[bool]:
        """States from which the end of their rule can be reached (through rules that match something)."""
        nfa, n = self.nfa, len(self.nfa.eps)
        back: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # (from, rule needed or -1)
        for u in range(n):
            for _, _, t in nfa.bytes[u]:
                back[t].append((u, -1))
            for t in nfa.eps[u]:
                back[t].append((u, -1))
            for rule, t in nfa.calls[u]:
                back[t].append((u, rule))
        productive = [False] * len(self.starts)
        while True:
            live = [False] * n
            todo = list(self.finals)
            for f in todo:
                live[f] = True
            while todo:
                t = todo.pop()
                for u, rule in back[t]:
                    if not live[u] and (rule < 0 or productive[rule]):
                        live[u] = True
                        todo.append(u)
            now = [live[s] for s in self.starts]
            if now == productive:
                return live
            productive = now

    # --- configurations ---------------------------------------------------------------------------
    def closure(self, s: int) -> tuple[int, ...]:
        """Live states reachable from s by ε edges (s included)."""
        found = self._closures.get(s)
        if found is None:
            seen, todo = {s}, [s]
            while todo:
                for t in self.nfa.eps[todo.pop()]:
                    if t not in seen and self.live[t]:
                        seen.add(t)
                        todo.append(t)
            found = self._closures[s] = tuple(sorted(seen))
        return found

    def _frontier(self, stack: tuple[int, ...], out: list, accept: list[bool], seen: set) -> None:
        """The byte edges a stack can take next (calling and returning from rules as needed)."""
        if stack in seen:
            return
        seen.add(stack)
        below = stack[:-1]
        for s in self.closure(stack[-1]):
            for lo, hi, t in self.nfa.bytes[s]:
                if self.live[t]:
                    out.append((lo, hi, (*below, t)))
            for rule, t in self.nfa.calls[s]:
                if self.live[t]:
                    self._frontier((*below, t, self.starts[rule]), out, accept, seen)
            if self.final_rule[s] >= 0:
                if below:
                    self._frontier(below, out, accept, seen)
                else:
                    accept[0] = True

    def intern(self, config: frozenset) -> int:
        found = self.ids.get(config)
        if found is not None:
            return found
        c = len(self.configs)
        self.configs.append(config)
        self.ids[config] = c
        if c >= self.table.shape[0]:
            grown = np.full((2 * self.table.shape[0], 256), UNKNOWN, dtype=np.int32)
            grown[:c] = self.table
            self.table = grown
        edges: list = []
        accept = [False]
        seen: set = set()
        for stack in config:
            self._frontier(stack, edges, accept, seen)
        self._edges[c] = edges
        self.accepting.append(accept[0])
        return c

    def fill(self, config: int, byte: int) -> int:
        """The configuration after ``byte`` (its whole row of ``table`` is computed if not known yet)."""
        with self.lock:
            if int(self.table[config, byte]) == UNKNOWN:
                self.fill_row(config)
            return int(self.table[config, byte])

    def fill_rows(self, configs) -> None:
        """Compute the table rows of these configurations (every byte at once)."""
        with self.lock:
            for c in configs:
                if int(self.table[c, 0]) == UNKNOWN:
                    self.fill_row(int(c))

    def fill_row(self, config: int) -> None:
        """Every byte's next configuration from ``config``: the bytes split into runs on which the same
        edges apply, one interned configuration per run."""
        edges = self._edges[config]
        cuts = sorted({0, 256, *(lo for lo, _, _ in edges), *(hi + 1 for _, hi, _ in edges)})
        row = np.empty(256, dtype=np.int32)
        for a, b in zip(cuts, cuts[1:], strict=False):
            row[a:b] = self.intern(frozenset(stack for lo, hi, stack in edges if lo <= a and b - 1 <= hi))
        self.table[config] = row

    def walk(self, config: int, data: bytes) -> int:
        """The configuration after ``data`` (0 once it is dead)."""
        for b in data:
            if config == DEAD:
                return DEAD
            nxt = int(self.table[config, b])
            config = nxt if nxt != UNKNOWN else self.fill(config, b)
        return config

    def matches(self, text: str | bytes) -> bool:
        """Whether the whole of ``text`` is in the grammar's language (a check, not a decoder)."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return self.accepting[self.walk(self.start, data)]


__all__ = ["DEAD", "UNKNOWN", "Automaton", "recursive_rules", "utf8_sequences"]
