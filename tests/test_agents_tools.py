"""The built-in tools with real back ends: Python through ``lmlab.eval.sandbox`` (an early exit or a
socket is an error observation, not an answer), BM25 search and RAG over an index built by
``lmlab.retrieval.rag``, fetch held to its loopback allow-list (no redirect out of it), the
side-effecting ``send_email``; and the long-term memory (nearest past turns, saved and loaded)."""

from __future__ import annotations

import http.server
import threading

import pytest

from lmlab.agents.memory import LongTermMemory
from lmlab.agents.tools import (
    call_tool,
    fetch_tool,
    page_text,
    python_tool,
    rag_tool,
    search_tool,
    send_email_tool,
)
from lmlab.core.errors import ConfigError, InputError


def test_python_tool_runs_in_the_sandbox():
    tool = python_tool(timeout=5)
    assert call_tool(tool, {"code": "print(sum(range(101)))"}).observation == "5050"
    assert "printed nothing" in call_tool(tool, {"code": "x = 1"}).observation
    early = call_tool(tool, {"code": "import os\nos._exit(0)\nprint(1)"}).observation
    assert early.startswith("error (failed)") and "exited before its end" in early
    net = call_tool(tool, {"code": "import _socket\ns = _socket.socket()\ns.connect(('1.1.1.1', 80))\nprint('up')"})
    assert net.observation.startswith("error (failed)")
    assert net.observation.endswith("PermissionError: network access is disabled in the lmlab sandbox")
    bad = call_tool(tool, {"program": "print(1)"})  # not the schema's name
    assert bad.error and "do not match its schema" in bad.error and "code" in bad.error


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from lmlab.retrieval.rag import build_rag_index

    docs = tmp_path_factory.mktemp("docs")
    (docs / "rivers.txt").write_text("The Danube flows through ten countries. It ends in the Black Sea.\n")
    (docs / "peaks.txt").write_text("Mount Elbrus is the highest mountain in Europe. It is a dormant volcano.\n")
    out = tmp_path_factory.mktemp("index")
    assert build_rag_index([docs], out) == 2
    return out


def test_search_and_rag_tools_read_the_index(index):
    found = call_tool(search_tool(str(index), k=1), {"query": "which river flows to the Black Sea"}).observation
    assert found.startswith("[1] (") and "rivers.txt" in found and "Danube" in found and "Elbrus" not in found
    assert call_tool(search_tool(str(index)), {"query": "quantum chromodynamics"}).observation == (
        "no passage matches the query")
    prompts = []

    def generate(prompt: str) -> str:
        prompts.append(prompt)
        return "Mount Elbrus [1]."

    answer = call_tool(rag_tool(str(index), generate, k=2), {"question": "What is the highest mountain in Europe?"})
    assert "Elbrus" in prompts[0] and answer.observation.startswith("Mount Elbrus [1]. (sources: ")
    assert "peaks.txt:" in answer.observation and "rivers.txt" not in answer.observation


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler's name)
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/secret")
            self.end_headers()
            return
        body = (b"<html><head><style>p{}</style><script>steal()</script></head><body><h1>Prices</h1>"
                b"<p>Tea costs   3 euros.</p><!-- hidden --></body></html>")
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_reads_only_allow_listed_local_pages(site):
    tool = fetch_tool([site])
    assert call_tool(tool, {"url": f"http://{site}/"}).observation == "Prices\nTea costs 3 euros."
    assert call_tool(tool, {"url": f"http://{site}/missing"}).observation == f"HTTP 404 from http://{site}/missing"
    assert call_tool(tool, {"url": f"http://{site}/away"}).observation == f"HTTP 302 from http://{site}/away"
    host, port = site.split(":")
    for url in (f"http://{host}:{int(port) + 1}/", f"http://localhost:{port}/", "http://10.0.0.1/"):
        refused = call_tool(tool, {"url": url})
        assert refused.error and "is not allowed" in refused.error, url
    assert "do not match its schema" in call_tool(tool, {"url": "file:///etc/passwd"}).error
    for entry in ("10.0.0.1:80", "example.com:80", "127.0.0.1"):
        with pytest.raises(ConfigError, match="not a local host:port"):
            fetch_tool([entry])
    with pytest.raises(ConfigError, match="needs an allow-list"):
        fetch_tool([])
    assert page_text("plain <b>text</b>", "text/plain") == "plain <b>text</b>"


def test_send_email_is_a_side_effecting_tool():
    outbox: list[dict] = []
    tool = send_email_tool(outbox)
    assert tool.side_effects and not tool.untrusted_output
    assert call_tool(tool, '{"to": "ann@example.org", "body": "hi"}').observation == "sent to ann@example.org"
    assert outbox == [{"to": "ann@example.org", "body": "hi"}]
    assert call_tool(tool, {"to": "not an address", "body": "hi"}).error and len(outbox) == 1


def test_long_term_memory_finds_the_nearest_turns_and_round_trips(tmp_path):
    from lmlab.retrieval.encoders import HashingEncoder

    memory = LongTermMemory(HashingEncoder())
    texts = ["Task: the capital of France\nAnswer: Paris", "Task: 12 times 12\nAnswer: 144",
             "Task: who wrote Hamlet\nAnswer: Shakespeare"]
    for i, t in enumerate(texts):
        assert memory.add(t, run=i) == str(i)
    hits = memory.search("what is the capital of France", k=3)
    assert hits[0]["text"] == texts[0] and hits[0]["run"] == 0
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True) and hits[0]["score"] > 0
    assert memory.search("zzz qqq", k=3) == []  # nothing shares a feature: no match above 0
    again = LongTermMemory.load(memory.save(tmp_path / "mem"), HashingEncoder())
    assert len(again) == 3 and again.search("who wrote Hamlet", k=1)[0]["text"] == texts[2]
    with pytest.raises(InputError, match="holds no saved memory"):
        LongTermMemory.load(tmp_path / "nothing")
