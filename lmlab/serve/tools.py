"""Function calling and structured output for the OpenAI-compatible server.

A tool call is written by the model as ``<tool_call>{"name":"NAME","arguments":{...}}</tool_call>``
(the Hermes format most open chat models were tuned on). The server never hopes the model gets
it right: ``output_grammar`` builds a grammar (``lmlab.generate.constrain``) from the request —
``tool_choice`` ``required`` or a named function force one call (or several, with
``parallel_tool_calls``) whose arguments follow each function's ``parameters`` schema; ``auto``
allows either calls or ordinary text (text that does not begin with ``<``); ``response_format``
``json_object``/``json_schema`` makes the text JSON. ``ToolCallStream`` turns the constrained text
back into OpenAI's ``tool_calls`` — whole or as streamed deltas — and ``conversation`` renders
assistant tool calls and ``tool`` results through the model's chat template.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..generate.constrain import SchemaError, SchemaRules
from ..generate.constrain.syntax import (
    ANY_CHAR,
    Chars,
    Grammar,
    Node,
    Repeat,
    Text,
    alt,
    optional,
    seq,
)

OPEN, CLOSE = "<tool_call>", "</tool_call>"
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
HEADER = re.compile(r'^<tool_call>\{"name":"([a-zA-Z0-9_-]{1,64})","arguments":')


class ToolError(ConfigError):
    """A bad ``tools``/``tool_choice``/``response_format`` field; ``param`` names it."""

    def __init__(self, param: str, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix)
        self.param = param


@dataclass
class Function:
    name: str
    description: str
    parameters: dict


def functions(tools: list[dict]) -> list[Function]:
    """The request's tools, checked: names, and parameter schemas that compile (400 naming the field)."""
    out, seen = [], set()
    for i, tool in enumerate(tools):
        spec = tool["function"]
        name = spec["name"]
        if not NAME.match(name):
            raise ToolError(f"tools[{i}].function.name", f"the function name {name!r} must be 1-64 letters, digits, "
                            "'_' or '-'")
        if name in seen:
            raise ToolError(f"tools[{i}].function.name", f"two tools are named {name!r}")
        seen.add(name)
        params = spec.get("parameters")
        params = {"type": "object", "properties": {}} if params is None else params
        if not isinstance(params, dict) or params.get("type") != "object":
            raise ToolError(f"tools[{i}].function.parameters", "a function's parameters must be a JSON schema of "
                            "type object", 'e.g. {"type": "object", "properties": {...}}')
        try:
            SchemaRules(params, Grammar(), prefix="check-").node(params, "")
        except SchemaError as exc:
            raise ToolError(f"tools[{i}].function.parameters", str(exc)) from None
        out.append(Function(name, spec.get("description") or "", params))
    return out


def output_grammar(funcs: list[Function], choice: Any, parallel: bool, response_schema: Any | None) -> Grammar | None:
    """The grammar the reply must match (None: free text). ``choice`` is "none", "auto", "required"
    or a function name; ``response_schema`` the JSON schema of a text answer (json_object/json_schema)."""
    grammar = Grammar()
    text: Node | None = None
    if response_schema is not None:
        try:
            text = SchemaRules(response_schema, grammar, prefix="text-").node(response_schema, "")
        except SchemaError as exc:
            raise ToolError("response_format", str(exc)) from None
    if not funcs or choice == "none":
        if text is None:
            return None
        grammar.rules["root"] = text
        return grammar.check()
    calls = []
    for k, f in enumerate(funcs):
        if choice not in ("auto", "required") and f.name != choice:
            continue
        args = SchemaRules(f.parameters, grammar, prefix=f"f{k}-").node(f.parameters, "")
        calls.append(seq(Text(f'{OPEN}{{"name":"{f.name}","arguments":'), args, Text("}" + CLOSE)))
    call = alt(*calls)
    many = seq(call, Repeat(seq(optional(Text("\n")), call), 0, None)) if parallel else call
    if choice == "auto":
        free = text if text is not None else optional(seq(Chars.of([(ord("<"), ord("<"))], negate=True),
                                                          Repeat(ANY_CHAR, 0, None)))
        grammar.rules["root"] = alt(many, free)
    else:
        grammar.rules["root"] = many
    return grammar.check()


def tools_system_prompt(funcs: list[Function], choice: Any) -> str:
    """The instructions that tell the model which functions it has and how to call them."""
    specs = "\n".join(json.dumps({"name": f.name, "description": f.description, "parameters": f.parameters},
                                 ensure_ascii=False) for f in funcs)
    must = {"auto": "Call a function when it helps; otherwise answer normally.",
            "required": "You must call one or more of these functions."}.get(choice, f"You must call {choice}.")
    return (f"You have these functions:\n{specs}\n{must} To call a function, reply with "
            f'{OPEN}{{"name": <function-name>, "arguments": <arguments as JSON>}}{CLOSE}')


def conversation(messages: list[dict], funcs: list[Function], choice: Any) -> list[dict]:
    """Messages as the chat template reads them: tool calls of assistant turns written out in the
    tool-call format, tool results as ``tool`` turns, and the tools' instructions in the system turn."""
    out = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            content += "".join(f'{OPEN}{{"name":"{c["function"]["name"]}","arguments":{c["function"]["arguments"]}}}'
                               f"{CLOSE}" for c in m["tool_calls"])
        out.append({"role": m["role"], "content": content})
    if funcs and choice != "none":
        prompt = tools_system_prompt(funcs, choice)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


@dataclass
class ToolCallStream:
    """Reads one choice's constrained text as it arrives and says what it is: ``content`` text, or
    tool calls (an opening with id and name, then argument fragments), as OpenAI's deltas do."""

    tools: bool
    text: str = ""
    mode: str = ""  # "" undecided, "content", "calls"
    calls: list[dict] = field(default_factory=list)
    _at: int = 0  # where the unread text starts
    _args_from: int | None = None  # where the current call's arguments start

    def feed(self, piece: str) -> list[dict]:
        """Deltas for the new text: {"content": str} or {"tool_calls": [...]}."""
        self.text += piece
        if not self.mode and self.text:
            self.mode = "calls" if self.tools and self.text.startswith("<") else "content"
        if self.mode == "content":
            out, self._at = self.text[self._at:], len(self.text)
            return [{"content": out}] if out else []
        return self._calls() if self.mode == "calls" else []

    def _calls(self) -> list[dict]:
        deltas = []
        while True:
            if self._args_from is None:
                rest = self.text[self._at:].lstrip("\n")
                match = HEADER.match(rest)
                if match is None:
                    return deltas
                self._at = len(self.text) - len(rest) + match.end()
                self._args_from = self._at
                call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                        "function": {"name": match.group(1), "arguments": ""}}
                self.calls.append(call)
                deltas.append({"tool_calls": [{"index": len(self.calls) - 1, "id": call["id"], "type": "function",
                                               "function": {"name": call["function"]["name"], "arguments": ""}}]})
            args = self.text[self._args_from:]
            try:
                _, end = json.JSONDecoder().raw_decode(args)
            except json.JSONDecodeError:
                end = None
            upto = len(args) if end is None else end
            fresh = args[len(self.calls[-1]["function"]["arguments"]):upto]
            if fresh:
                self.calls[-1]["function"]["arguments"] += fresh
                deltas.append({"tool_calls": [{"index": len(self.calls) - 1, "function": {"arguments": fresh}}]})
            if end is None or not args[end:].startswith("}" + CLOSE):
                return deltas
            self._at = self._args_from + end + 1 + len(CLOSE)
            self._args_from = None

    def finished_calls(self) -> list[dict]:
        """The calls whose arguments are whole (a reply cut by max_tokens may end inside one)."""
        return self.calls if self._args_from is None else self.calls[:-1]

    def complete(self) -> bool:
        """Whether every call that began has ended (a reply cut by max_tokens has not)."""
        return self.mode == "calls" and self._args_from is None and bool(self.calls)


__all__ = ["CLOSE", "OPEN", "Function", "ToolCallStream", "ToolError", "conversation", "functions",
           "output_grammar", "tools_system_prompt"]
