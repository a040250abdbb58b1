"""Tools an agent can call: a name, a description, a JSON schema for the arguments and a function.

``call_tool`` is the one way a tool runs: the arguments (a JSON text or an object) are parsed and
validated against the tool's schema (``jsonschema``), then the function runs; a malformed call, a
schema violation or an exception inside the tool comes back as an error *observation* the agent
reads and can correct, never as a crash of the run. Each tool says whether it has side effects
(sending, writing, paying: the policy in ``lmlab.agents.defenses`` decides when those may run) and
whether its output is untrusted text from outside (spotlighted and checked for injected
instructions before the model reads it).

Built in: ``calculator`` (exact arithmetic, no ``eval``), ``python`` (``lmlab.eval.sandbox``),
``search`` (BM25 over an ``lmlab rag index`` folder), ``rag`` (``lmlab.retrieval.rag.ask`` with a
model), ``fetch`` (HTTP GET only to allow-listed loopback addresses) and ``send_email`` (a
side-effecting tool that writes to an outbox list, for policies and the injection suite).
"""

from __future__ import annotations

import html.parser
import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError, LmlabError, MissingDependencyError
from ..core.validate import check_number
from .calculator import calculate

OBSERVATION_LIMIT = 4_000  # characters of a tool's output the model gets to read


@dataclass
class Tool:
    """A callable the model may use (see the module docstring)."""

    name: str
    description: str
    parameters: dict
    function: Callable[..., Any]
    side_effects: bool = False
    untrusted_output: bool = False

    def openai(self) -> dict:
        """The tool as OpenAI's ``tools`` list holds it."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass
class ToolResult:
    """What a call returned (``observation``) or why it failed (``error``, also the observation)."""

    observation: str
    error: str | None = None
    seconds: float = 0.0


def parse_arguments(arguments: str | dict | None) -> dict:
    """The arguments as an object: a JSON text is parsed; anything but a JSON object is an error."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the arguments are not valid JSON ({exc.msg} at column {exc.colno})",
                              "write the arguments as one JSON object") from None
    if not isinstance(arguments, dict):
        raise ConfigError(f"the arguments must be a JSON object, got {type(arguments).__name__}",
                          'write them as {"name": value, ...}')
    return arguments


def check_arguments(tool: Tool, arguments: dict) -> None:
    """Raise ConfigError naming the first place where ``arguments`` break the tool's schema."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments), key=lambda e: e.path)
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "the arguments"
        raise ConfigError(f"arguments of {tool.name} do not match its schema at {where}: {e.message}",
                          f"follow the schema {json.dumps(tool.parameters)}")


def call_tool(tool: Tool, arguments: str | dict | None) -> ToolResult:
    """Parse, validate and run one call; every failure becomes an error observation."""
    start = time.perf_counter()
    try:
        args = parse_arguments(arguments)
        check_arguments(tool, args)
        value = tool.function(**args)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        if len(text) > OBSERVATION_LIMIT:
            text = text[:OBSERVATION_LIMIT] + f"\n[… {len(text) - OBSERVATION_LIMIT} more characters cut]"
        return ToolResult(text, None, time.perf_counter() - start)
    except LmlabError as exc:
        message = f"error: {exc}"
    except Exception as exc:  # a tool's own bug is an observation, not the end of the run
        message = f"error: {tool.name} raised {type(exc).__name__}: {exc}"
    return ToolResult(message, message, time.perf_counter() - start)


def tool_map(tools: Sequence[Tool]) -> dict[str, Tool]:
    """Tools by name; two tools with one name are refused."""
    out: dict[str, Tool] = {}
    for t in tools:
        if t.name in out:
            raise ConfigError(f"two tools are named {t.name!r}", "give every tool its own name")
        out[t.name] = t
    return out


# --- built-in tools ------------------------------------------------------------------------------------
def calculator_tool() -> Tool:
    """Exact arithmetic on numbers with + - * / ( ) (``lmlab.agents.calculator``)."""
    return Tool("calculator", "Evaluate an arithmetic expression exactly, e.g. 4827 * 356 - 12.",
                {"type": "object", "properties": {"expression": {"type": "string",
                                                                 "pattern": r"^[0-9+*/(). -]{1,80}$"}},
                 "required": ["expression"], "additionalProperties": False},
                lambda expression: calculate(expression))


def python_tool(timeout: float = 5.0, memory_mb: int = 512) -> Tool:
    """Run a Python program in ``lmlab.eval.sandbox``; the observation is what it printed."""
    from ..eval.sandbox import run_python

    def run(code: str) -> str:
        result = run_python(code, timeout=timeout, memory_mb=memory_mb)
        if result.passed:
            return result.stdout.strip() or "(the program printed nothing; print the answer)"
        return f"error ({result.status}): {(result.stderr or result.stdout).strip()[-1500:]}"

    return Tool("python", "Run a Python program and read what it prints (no network, no files outside "
                "its folder).", {"type": "object", "properties": {"code": {"type": "string"}},
                                 "required": ["code"], "additionalProperties": False},
                run, untrusted_output=True)


def search_tool(index: str | Any, k: int = 3) -> Tool:
    """BM25 search over an ``lmlab rag index`` folder (or a loaded ``RagIndex``): the ``k`` best passages."""
    from ..retrieval.rag import RagIndex

    rag = index if isinstance(index, RagIndex) else RagIndex(index)
    check_number("k", k, low=1, integer=True)

    def search(query: str) -> str:
        sources = rag.retrieve(query, k)
        if not sources:
            return "no passage matches the query"
        return "\n".join(f"[{s.number}] ({s.chunk.source}) {s.chunk.text}" for s in sources)

    return Tool("search", "Search the document index; returns the best matching passages.",
                {"type": "object", "properties": {"query": {"type": "string", "pattern": r"^[^\n]{1,200}$"}},
                 "required": ["query"], "additionalProperties": False}, search, untrusted_output=True)


def rag_tool(index: str | Any, generate: Callable[[str], str], k: int = 3) -> Tool:
    """Answer a question from the index with citations (``lmlab.retrieval.rag.ask``) using ``generate``."""
    from ..retrieval.rag import RagIndex, ask

    rag = index if isinstance(index, RagIndex) else RagIndex(index)

    def answer(question: str) -> str:
        result = ask(rag, question, generate, k=k)
        cited = ", ".join(f"{c['source']}:{c['start']}-{c['end']}" for c in result.get("citations", []))
        return result["answer"] + (f" (sources: {cited})" if cited else "")

    return Tool("rag", "Answer a question from the document index, citing the passages used.",
                {"type": "object", "properties": {"question": {"type": "string", "pattern": r"^[^\n]{1,200}$"}},
                 "required": ["question"], "additionalProperties": False}, answer, untrusted_output=True)


class _TextOf(html.parser.HTMLParser):
    """The text of an HTML page (scripts, styles and comments left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(" ".join(data.split()))


def page_text(body: str, content_type: str = "text/html") -> str:
    """Readable text of a fetched body: HTML reduced to its text, anything else as it is."""
    if "html" not in content_type:
        return body
    parser = _TextOf()
    parser.feed(body)
    return "\n".join(parser.parts)


def is_local_address(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback IP."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could leave the allow-list: it is reported, not followed


def fetch_tool(allow: Sequence[str], timeout: float = 10.0, max_bytes: int = 200_000) -> Tool:
    """HTTP GET of pages on allow-listed local addresses only (``host:port`` entries, loopback only)."""
    allowed = set()
    for entry in allow:
        host, _, port = entry.rpartition(":")
        if not port.isdigit() or not is_local_address(host):
            raise ConfigError(f"fetch allow-list entry {entry!r} is not a local host:port",
                              "allow loopback addresses only, e.g. 127.0.0.1:8000")
        allowed.add((host.strip("[]"), int(port)))
    if not allowed:
        raise ConfigError("the fetch tool needs an allow-list", "pass at least one local host:port")
    opener = urllib.request.build_opener(_NoRedirect)

    def fetch(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or (parts.hostname, parts.port or 80) not in allowed:
            raise ConfigError(f"fetching {url} is not allowed", "only http:// URLs on "
                              + ", ".join(f"{h}:{p}" for h, p in sorted(allowed)) + " may be fetched")
        try:
            with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
                body = resp.read(max_bytes).decode("utf-8", "replace")
                kind = resp.headers.get("Content-Type", "text/plain")
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} from {url}"
        except (urllib.error.URLError, OSError) as exc:
            return f"cannot fetch {url}: {getattr(exc, 'reason', exc)}"
        return page_text(body, kind)

    return Tool("fetch", "Fetch a web page from the local network and read its text.",
                {"type": "object", "properties": {"url": {"type": "string", "pattern": r"^http://[^\s]{1,200}$"}},
                 "required": ["url"], "additionalProperties": False}, fetch, untrusted_output=True)


def send_email_tool(outbox: list[dict]) -> Tool:
    """A side-effecting tool: 'sends' an email by appending it to ``outbox``."""

    def send(to: str, body: str) -> str:
        outbox.append({"to": to, "body": body})
        return f"sent to {to}"

    return Tool("send_email", "Send an email.",
                {"type": "object", "properties": {"to": {"type": "string", "pattern": r"^[^\s@]{1,40}@[^\s@]{1,40}$"},
                                                  "body": {"type": "string", "pattern": r"^[^\n]{0,300}$"}},
                 "required": ["to", "body"], "additionalProperties": False}, send, side_effects=True)


def openai_agents_tool(tool: Tool) -> Any:
    """The tool as the OpenAI Agents SDK's ``FunctionTool`` (package ``openai-agents``): the same schema,
    and every call goes through ``call_tool``, so the SDK's agent sees the same results and error
    observations as lmlab's loop — for comparing the two loops on one tool."""
    try:
        import agents as sdk
    except ImportError:
        raise MissingDependencyError("openai-agents", "the OpenAI Agents SDK tool adapter") from None

    async def invoke(context: Any, arguments: str) -> str:
        return call_tool(tool, arguments).observation

    return sdk.FunctionTool(name=tool.name, description=tool.description, params_json_schema=tool.parameters,
                            on_invoke_tool=invoke, strict_json_schema=False)


BUILTIN = ("calculator", "python", "search", "rag", "fetch", "send_email")
