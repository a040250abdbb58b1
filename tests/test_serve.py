"""The OpenAI-compatible server on a tiny random model, through the official ``openai`` client and
raw HTTP: chat/completions (streamed and not), n, stop, logprobs, seeds, errors, auth, limits,
continuous batching (concurrent == one at a time), disconnects, and a mixed soak."""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from urllib.parse import urlparse

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

openai = pytest.importorskip("openai")

from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
from lmlab.models.config import TransformerConfig  # noqa: E402
from lmlab.models.transformer import TransformerLM  # noqa: E402
from lmlab.serve import Limits, create_app  # noqa: E402
from lmlab.serve.background import background  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402

TEMPLATE = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! <|>\n"
HELLO = [{"role": "user", "content": "hello"}]


def make_tiny(slow: float = 0.0):
    """A tiny random chat model (sharp logits, so greedy paths are not near-ties) and its char tokenizer."""
    tok = WordLevelTokenizer("char").train([TEXT])
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                        n_kv_heads=2, context_length=128)
    lm = TransformerLM(cfg).eval()
    with torch.no_grad():
        lm.head.weight.mul_(40)
    if slow:
        forward = lm.forward

        def slowed(*args, **kwargs):
            time.sleep(slow)
            return forward(*args, **kwargs)

        lm.forward = slowed
    return lm, tok


class Captured(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.name, self.format(record), record.exc_info is not None))


@pytest.fixture(scope="module")
def logs():
    handler = Captured()
    for name in ("lmlab.serve", "lmlab.serve.access", "uvicorn.error"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("lmlab.serve.access").setLevel(logging.INFO)
    yield handler
    for name in ("lmlab.serve", "lmlab.serve.access", "uvicorn.error"):
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


@pytest.fixture(scope="module")
def server(tiny, logs):
    app = create_app(*tiny, model_id="tiny", max_batch=8, limits=Limits(max_tokens=64, max_body_bytes=20_000))
    with background(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def raw(url: str, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
    """(status, parsed JSON or text) of one plain HTTP request."""
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    try:
        return response.status, json.loads(text)
    except json.JSONDecodeError:
        return response.status, text


def greedy_text(tiny, messages, max_new):
    lm, tok = tiny
    return Engine(lm, tok, greedy=True).generate([Request(chat_prompt(tok, messages), max_new_tokens=max_new)])[0]


# --- the API through the official client ----------------------------------------------------------
def test_chat_matches_the_engine_with_usage_and_finish_reason(client, tiny):
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)
    expected = greedy_text(tiny, HELLO, 12)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert r.usage.prompt_tokens == len(chat_prompt(tiny[1], HELLO))
    assert r.usage.completion_tokens == len(expected.ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_joins_to_the_same_text_and_reports_usage(client, tiny):
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy_text(tiny, HELLO, 12).text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_completions_n_seed_and_logprobs(client, tiny):
    lm, tok = tiny
    one = client.completions.create(model="tiny", prompt="the", max_tokens=8, n=2, seed=5, temperature=1.2,
                                    logprobs=2)
    again = client.completions.create(model="tiny", prompt="the", max_tokens=8, n=2, seed=5, temperature=1.2,
                                      logprobs=2)
    other = client.completions.create(model="tiny", prompt="the", max_tokens=8, n=2, seed=6, temperature=1.2)
    assert [c.index for c in one.choices] == [0, 1]
    assert [c.text for c in one.choices] == [c.text for c in again.choices]  # a seed reproduces
    assert [c.text for c in one.choices] != [c.text for c in other.choices]
    assert one.choices[1].text == other.choices[0].text  # choice i samples with seed + i
    assert one.usage.prompt_tokens == 3 and one.usage.completion_tokens == 16
    lp = one.choices[0].logprobs
    assert "".join(lp.tokens) == one.choices[0].text and len(lp.token_logprobs) == 8
    assert all(len(top) == 2 for top in lp.top_logprobs) and lp.text_offset[0] == 0
    greedy = client.completions.create(model="tiny", prompt=[tok.encode("the")], max_tokens=6, temperature=0)
    assert greedy.choices[0].text == Engine(lm, tok, greedy=True).generate(
        [Request(tok.encode("the"), max_new_tokens=6)])[0].text


def test_stop_strings_cut_the_text(client, tiny):
    free = greedy_text(tiny, HELLO, 30).text
    stop = free[4:6]
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=30, temperature=0, stop=[stop, "@@"])
    assert r.choices[0].message.content == free[:free.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_chat_logprobs_are_the_models(client, tiny):
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    expected = greedy_text(tiny, HELLO, 6)
    assert [c.token for c in content] == [tiny[1].decode([i], skip_special_tokens=True) for i in expected.ids]
    for c, want in zip(content, expected.logprobs, strict=True):
        assert c.logprob == pytest.approx(want, abs=1e-4)
        assert len(c.top_logprobs) == 3 and c.top_logprobs[0].logprob == pytest.approx(c.logprob, abs=1e-5)


def test_extensions_top_k_and_beam_search(client, tiny):
    r = client.completions.create(model="tiny", prompt="the", max_tokens=6, extra_body={"top_k": 1, "seed": 3})
    greedy = client.completions.create(model="tiny", prompt="the", max_tokens=6, temperature=0)
    assert r.choices[0].text == greedy.choices[0].text
    beams = client.completions.create(model="tiny", prompt="the", max_tokens=6, n=2,
                                      extra_body={"beam_size": 3})
    assert len(beams.choices) == 2 and beams.usage.completion_tokens > 0
    assert beams.choices[0].text != beams.choices[1].text


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    status, body = raw(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == "tiny"


def test_the_web_page_is_served(server):
    status, page = raw(server, "GET", "/")
    assert status == 200 and "<title>lmlab chat</title>" in page and "/v1/chat/completions" in page


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("temperature", -1), ("top_p", 0), ("n", 0), ("n", 99), ("max_tokens", 0), ("max_tokens", 65),
    ("presence_penalty", 2.5), ("frequency_penalty", "a lot"), ("stop", ["a", "b", "c", "d", "e"]),
    ("logit_bias", {"x": 1}), ("logit_bias", {"999999": 1}), ("messages", []), ("top_logprobs", 3),
    ("seed", "seven"), ("top_k", 0), ("stream", "maybe"), ("beam_size", 0), ("min_p", 2),
])
def test_invalid_fields_are_400_naming_the_field(client, field, value):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, extra_body={field: value})
    assert err.value.status_code == 400
    error = err.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == field and field in error["message"]


def test_error_shapes_for_model_json_size_and_context(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    status, body = raw(server, "POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = raw(server, "POST", "/v1/completions", {"model": "tiny", "prompt": "x" * 30_000})
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = raw(server, "POST", "/v1/completions", {"model": "tiny", "prompt": "the " * 30, "max_tokens": 10})
    assert status == 400 and body["error"]["param"] == "max_tokens" and "context" in body["error"]["message"]
    status, body = raw(server, "POST", "/v1/completions", {"model": "tiny", "prompt": [[1, 2], [99999]]})
    assert status == 400 and body["error"]["param"] == "prompt"
    status, body = raw(server, "POST", "/v1/messages/none", {})
    assert status == 404
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hi")
    assert "no embedding model" in err.value.body["message"]


def test_api_key_is_required_when_set(tiny):
    app = create_app(*tiny, model_id="tiny", api_key="s3cret")
    with background(app) as url:
        status, body = raw(url, "GET", "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert raw(url, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert raw(url, "GET", "/health")[0] == 200
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="a", max_tokens=2).usage.completion_tokens == 2


# --- continuous batching, disconnects, back-pressure, timeouts --------------------------------
def _stream_text(client, messages, max_tokens):
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0,
                                            stream=True)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_concurrent_streaming_clients_equal_one_at_a_time(tiny):
    lm, tok = make_tiny(slow=0.002)  # slow enough that the eight requests overlap
    app = create_app(lm, tok, model_id="tiny", max_batch=8)
    asks = [[{"role": "user", "content": "the quick brown fox"[:3 + 2 * i]}] for i in range(8)]
    lengths = [20 + 5 * i for i in range(8)]
    with background(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        alone = [_stream_text(client, m, k) for m, k in zip(asks, lengths, strict=True)]
        together = [None] * 8

        def run(i):
            together[i] = _stream_text(client, asks[i], lengths[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = raw(url, "GET", "/health")[1]["peak_batch"]
    assert together == alone
    assert peak >= 4  # the requests really shared the batch


def _open_stream(url, body):
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def _wait_for(url, check, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        health = raw(url, "GET", "/health")[1]
        if check(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"server never reached the state: {raw(url, 'GET', '/health')[1]}")


def test_a_disconnecting_client_frees_its_slot_and_full_queues_get_429(tiny):
    lm, tok = make_tiny(slow=0.02)
    app = create_app(lm, tok, model_id="tiny", max_batch=1, max_queue=1, limits=Limits(max_tokens=100))
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 100, "stream": True}
    with background(app) as url:
        conn, response = _open_stream(url, body)
        assert response.status == 200 and response.readline().startswith(b"data:")
        _wait_for(url, lambda h: h["running"] == 1)
        conn2, waiting = _open_stream(url, body)  # queued behind the first: the queue is now full
        _wait_for(url, lambda h: h["waiting"] == 1 or h["submitted"] == 2)
        status, err = raw(url, "POST", "/v1/chat/completions", {**body, "stream": False})
        assert status == 429 and err["error"]["type"] == "rate_limit_error"
        conn.close()  # the first client goes away mid-stream ...
        conn2.close()
        health = _wait_for(url, lambda h: h["running"] == 0 and h["waiting"] == 0)
        assert health["cancelled"] == 2 and health["tokens"] < 100  # ... long before its 100 tokens


def test_a_request_past_its_time_limit_is_a_504(tiny):
    lm, tok = make_tiny(slow=0.01)
    app = create_app(lm, tok, model_id="tiny", limits=Limits(max_tokens=100, timeout_s=0.2))
    with background(app) as url:
        status, body = raw(url, "POST", "/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 100})
        assert status == 504 and body["error"]["code"] == "timeout"
        assert raw(url, "POST", "/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 3})[0] == 200


# --- soak ------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def test_soak_mixed_requests_leave_the_server_healthy(server, logs):
    valid = [
        {"path": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 8}},
        {"path": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 8, "n": 2,
                                                  "temperature": 0.9, "seed": 1}},
        {"path": "/v1/completions", "body": {"model": "tiny", "prompt": ["a", "the"], "max_tokens": 6,
                                             "logprobs": 1}},
        {"path": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 8, "stream": True,
                                                  "top_p": 0.5, "stop": ["x"]}},
    ]
    invalid = [
        {"path": "/v1/chat/completions", "body": b"{not json"},
        {"path": "/v1/chat/completions", "body": {"model": "tiny", "messages": [{"role": "x", "content": 1}]}},
        {"path": "/v1/completions", "body": {"model": "tiny", "prompt": "x" * 25_000}},  # oversized
        {"path": "/v1/completions", "body": {"model": "tiny", "prompt": "a", "max_tokens": 10_000}},
        {"path": "/v1/completions", "body": {"model": "nope", "prompt": "a"}},
    ]
    rng = random.Random(0)
    plan = [rng.choice(["valid", "invalid", "cancel"]) for _ in range(200)]
    failures, lock = [], threading.Lock()
    logs.lines.clear()
    raw(server, "GET", "/health")
    start_rss = _rss_mb()

    def worker(items):
        for kind in items:
            if kind == "cancel":
                conn, response = _open_stream(server, {"model": "tiny", "messages": HELLO, "max_tokens": 40,
                                                       "stream": True})
                response.readline()
                conn.close()
                continue
            case = rng.choice(valid if kind == "valid" else invalid)
            status, body = raw(server, "POST", case["path"], case["body"])
            ok = status == 200 if kind == "valid" else status in (400, 404, 413)
            if not ok or (kind == "invalid" and "error" not in body):
                with lock:
                    failures.append((kind, case["path"], status, body))

    threads = [threading.Thread(target=worker, args=(plan[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    health = _wait_for(server, lambda h: h["running"] == 0 and h["waiting"] == 0)
    assert health["status"] == "ok" and health["failed"] == 0
    assert _rss_mb() - start_rss < 150
    access = [json.loads(line) for name, line, _ in logs.lines if name == "lmlab.serve.access"]
    assert len(access) >= 200 and all({"status", "path", "ms", "request_id"} <= set(a) for a in access)
    assert not [line for _, line, exc in logs.lines if exc or "Traceback" in line]


def test_max_completion_tokens_echo_and_user_are_honoured(client, logs):
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_completion_tokens=3, temperature=0,
                                       user="alice")
    assert r.usage.completion_tokens == 3
    echoed = client.completions.create(model="tiny", prompt="the", max_tokens=4, temperature=0, echo=True)
    plain = client.completions.create(model="tiny", prompt="the", max_tokens=4, temperature=0)
    assert echoed.choices[0].text == "the" + plain.choices[0].text
    access = [json.loads(line) for name, line, _ in logs.lines if name == "lmlab.serve.access"]
    assert any(a.get("user") == "alice" and a["completion_tokens"] == 3 for a in access)


class HashEncoder:
    """A stand-in sentence encoder (the server's wiring is under test here, MiniLM in test_serve_real)."""

    def __init__(self, tok):
        self.tokenizer = tok

    def __call__(self, texts):
        import numpy as np

        return np.array([[len(t), t.count("a"), 1.5] for t in texts], dtype=np.float32)


def test_embeddings_float_and_base64(tiny):
    import base64

    import numpy as np

    app = create_app(*tiny, model_id="tiny", encoder=HashEncoder(tiny[1]), encoder_id="hash")
    with background(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "hash"]
        r = client.embeddings.create(model="hash", input=["a cat", "banana"])
        assert [d.embedding for d in r.data] == [[5.0, 2.0, 1.5], [6.0, 3.0, 1.5]]
        assert r.usage.prompt_tokens == sum(len(tiny[1].encode(t, add_special_tokens=True)) for t in ["a cat", "banana"])
        assert [d.index for d in r.data] == [0, 1]
        status, body = raw(url, "POST", "/v1/embeddings", {"model": "hash", "input": "aa", "encoding_format": "base64"})
        assert status == 200
        assert np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), "<f4").tolist() == [2.0, 2.0, 1.5]
        assert raw(url, "POST", "/v1/embeddings", {"model": "hash", "input": ""})[1]["error"]["param"] == "input"


def test_streamed_choices_equal_the_whole_answer(client):
    args = dict(model="tiny", prompt="the", max_tokens=10, n=2, seed=11, temperature=1.0)
    whole = client.completions.create(**args)
    texts = ["", ""]
    finishes = {}
    for chunk in client.completions.create(stream=True, **args):
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert texts == [c.text for c in whole.choices]
    assert finishes == {c.index: c.finish_reason for c in whole.choices}


# --- the one decoding loop behind the server ------------------------------------------------------
def _completions_concurrently(url, prompts, **fields):
    """Texts of one completion per prompt, requested by as many threads at once."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    texts = [None] * len(prompts)

    def run(i):
        texts[i] = client.completions.create(model="m", prompt=prompts[i], **fields).choices[0].text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return texts, client


@pytest.mark.parametrize("kind", ["ngram", "lstm"])
def test_ngram_and_lstm_models_are_batched_like_transformers(kind):
    from lmlab.models.recurrent import RecurrentLM
    from lmlab.ngram import NgramLM

    corpus = [TEXT, "the lazy dog jumps over the quick fox .", "pack my box with the fox"]
    if kind == "ngram":
        tok = WordLevelTokenizer("word").train(corpus)
        lm = NgramLM.fit_corpus(corpus, tok, order=3, smoothing="kn")
    else:
        tok = WordLevelTokenizer("char").train(corpus)
        torch.manual_seed(0)
        lm = RecurrentLM(tok.vocab_size, d_embed=16, d_hidden=16).eval()
    prompts = ["the quick", "the lazy dog", "pack my", "the", "fox jumps over", "the box"]
    fields = dict(max_tokens=6, temperature=0.8, seed=3)
    with background(create_app(lm, tok, model_id="m", max_batch=8)) as url:
        together, client = _completions_concurrently(url, prompts, **fields)
        alone = [client.completions.create(model="m", prompt=p, **fields).choices[0].text for p in prompts]
        peak = raw(url, "GET", "/health")[1]["peak_batch"]
    assert together == alone and peak >= 2


def test_beam_requests_share_the_queue_limit_and_the_time_limit(tiny):
    lm, tok = make_tiny(slow=0.02)
    app = create_app(lm, tok, model_id="tiny", max_batch=4, max_queue=0, limits=Limits(max_tokens=100, timeout_s=5))
    beam = {"model": "tiny", "prompt": "the", "max_tokens": 60, "beam_size": 4}
    with background(app) as url:
        conn, response = _open_stream(url, {"model": "tiny", "messages": HELLO, "max_tokens": 100, "stream": True})
        _wait_for(url, lambda h: h["running"] == 1)
        status, body = raw(url, "POST", "/v1/completions", beam)  # 4 rows do not fit beside the running one
        assert status == 429 and body["error"]["type"] == "rate_limit_error"
        conn.close()
        _wait_for(url, lambda h: h["running"] == 0)
    app = create_app(lm, tok, model_id="tiny", limits=Limits(max_tokens=100, timeout_s=0.2))
    with background(app) as url:
        status, body = raw(url, "POST", "/v1/completions", beam)
        assert status == 504 and body["error"]["code"] == "timeout"


@pytest.mark.parametrize("field, flag, value", [
    ("top_p", "--top-p", 1.5), ("temperature", "--temperature", -1), ("top_k", "--top-k", 0),
    ("min_p", "--min-p", 2), ("repetition_penalty", "--repetition-penalty", 0), ("beam_size", "--beam-size", 0),
    ("frequency_penalty", "--frequency-penalty", 3), ("presence_penalty", "--presence-penalty", -3),
])
def test_a_bad_setting_gets_the_same_message_from_the_cli_and_the_server(client, tiny, tmp_path, capsys, field,
                                                                          flag, value):
    from lmlab.cli import main
    from lmlab.models import save_model_dir

    save_model_dir(tmp_path / "m", *tiny[0].to_state(), tokenizer=tiny[1])
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompt", "the", flag, str(value)]) != 0
    cli_message = capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="the", max_tokens=4, extra_body={field: value})
    assert err.value.body["param"] == field
    # one validator: the same message, each surface naming the setting as its users write it
    assert err.value.body["message"].replace(field, flag) in cli_message and flag in cli_message
