"""The server's structured output and tools, through the official ``openai`` client and raw HTTP:
response_format (json_object, json_schema strict, the client's ``parse()``), tools with every
tool_choice, parallel calls, streamed tool-call deltas, the tool-result turn through the chat template;
echo with prompt log-probabilities, max_tokens 0; /tokenize, /detokenize, /tokenizer_info,
GET /v1/models/{id}; unknown fields and bad tools refused with a 400 naming the field; the
published OpenAPI document."""

from __future__ import annotations

import json

import pytest
import torch
from structured_tiny import make_tiny
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
httpx = pytest.importorskip("httpx")

from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.serve import Limits, create_app  # noqa: E402
from lmlab.serve.background import background  # noqa: E402
from lmlab.serve.tools import conversation, functions  # noqa: E402

CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Arithmetic on two numbers",
    "parameters": {"type": "object", "properties": {"op": {"enum": ["add", "sub", "mul", "div"]},
                                                    "a": {"type": "integer", "minimum": -99, "maximum": 99},
                                                    "b": {"type": "integer", "minimum": -99, "maximum": 99}},
                   "required": ["op", "a", "b"], "additionalProperties": False}}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                                          "required": ["city"]}}}
HELLO = [{"role": "user", "content": "what is 2 + 3?"}]


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


@pytest.fixture(scope="module")
def server(tiny):
    app = create_app(*tiny, model_id="tiny", max_batch=8, limits=Limits(max_tokens=300))
    with background(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def post(server, path, body):
    return httpx.post(server + path, json=body, timeout=60)


def valid_arguments(call, tools=(CALCULATOR, WEATHER)):
    schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_json_object_and_strict_json_schema(client):
    out = client.chat.completions.create(model="tiny", messages=HELLO, response_format={"type": "json_object"},
                                         seed=1, max_tokens=200)
    assert isinstance(json.loads(out.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}, "unit": {"enum": ["m", "s"]}},
              "required": ["answer", "unit"], "additionalProperties": False}
    for seed in range(3):
        out = client.chat.completions.create(
            model="tiny", messages=HELLO, seed=seed, max_tokens=200,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}})
        jsonschema.validate(json.loads(out.choices[0].message.content), schema)
        assert out.choices[0].finish_reason == "stop"


def test_the_clients_parse_helper_returns_the_model(client):
    from pydantic import BaseModel

    class Answer(BaseModel):
        value: int
        explanation: str

    out = client.chat.completions.parse(model="tiny", messages=HELLO, response_format=Answer, max_tokens=200, seed=3)
    parsed = out.choices[0].message.parsed
    assert isinstance(parsed, Answer) and isinstance(parsed.value, int)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "calculator"}}])
def test_forced_tool_calls_validate(client, choice):
    for seed in range(3):
        out = client.chat.completions.create(model="tiny", messages=HELLO, tools=[CALCULATOR, WEATHER], seed=seed,
                                             tool_choice=choice, max_tokens=200, parallel_tool_calls=False)
        message = out.choices[0].message
        assert out.choices[0].finish_reason == "tool_calls" and message.content is None
        assert len(message.tool_calls) == 1
        call = message.tool_calls[0]
        assert call.id.startswith("call_") and call.type == "function"
        if isinstance(choice, dict):
            assert call.function.name == "calculator"
        valid_arguments(call)


def test_parallel_calls_and_auto_and_none(client):
    names = set()
    for seed in range(6):
        out = client.chat.completions.create(model="tiny", messages=HELLO, tools=[CALCULATOR, WEATHER], seed=seed,
                                             tool_choice="required", max_tokens=250, temperature=1.5)
        for call in out.choices[0].message.tool_calls:
            valid_arguments(call)
            names.add(call.function.name)
    assert names == {"calculator", "get_weather"}
    for seed in range(4):  # auto: either valid calls or text that is not a call
        out = client.chat.completions.create(model="tiny", messages=HELLO, tools=[CALCULATOR], seed=seed, max_tokens=60)
        message = out.choices[0].message
        if message.tool_calls:
            assert out.choices[0].finish_reason == "tool_calls"
            [valid_arguments(c) for c in message.tool_calls]
        else:
            assert not message.content.startswith("<")
    out = client.chat.completions.create(model="tiny", messages=HELLO, tools=[CALCULATOR], tool_choice="none",
                                         max_tokens=10, seed=0)
    assert out.choices[0].message.tool_calls is None and out.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_call_deltas_join_to_the_whole_answer(client):
    kwargs = dict(model="tiny", messages=HELLO, tools=[CALCULATOR, WEATHER], tool_choice="required", seed=4,
                  max_tokens=250, temperature=1.5)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            assert not choice.delta.content
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": d.id, "name": d.function.name, "arguments": ""})
                entry["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == \
        [(c.function.name, c.function.arguments) for c in whole]


def test_the_tool_result_turn_goes_through_the_chat_template(client, tiny):
    _, tok = tiny
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator",
                                                             "arguments": '{"op":"add","a":2,"b":3}'}}
    messages = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "5"}]
    out = client.chat.completions.create(model="tiny", messages=messages, tools=[CALCULATOR], max_tokens=5, seed=0)
    rendered = conversation([{**m, "content": m["content"] or ""} for m in messages], functions([CALCULATOR]), "auto")
    assert out.usage.prompt_tokens == len(chat_prompt(tok, rendered))
    text = tok.decode(chat_prompt(tok, rendered))
    assert '<|tool|>5\n' in text and '<tool_call>{"name":"calculator","arguments":{"op":"add","a":2,"b":3}}' in text


def test_echo_scores_the_prompt_like_the_model(client, tiny):
    lm, tok = tiny
    prompt = "the cat sat"
    ids = tok.encode(prompt)
    out = client.completions.create(model="tiny", prompt=prompt, echo=True, logprobs=1, max_tokens=0)
    lp = out.choices[0].logprobs
    assert out.choices[0].text == prompt and lp.tokens == list(prompt) and lp.token_logprobs[0] is None
    with torch.no_grad():
        expected = lm.score(torch.tensor([ids]))[0].tolist()
    assert lp.token_logprobs[1:] == pytest.approx(expected, abs=1e-5)
    assert lp.text_offset == list(range(len(prompt)))
    assert all(max(top.values()) >= chosen - 1e-6 for top, chosen in zip(lp.top_logprobs[1:], lp.token_logprobs[1:],
                                                                         strict=True))
    more = client.completions.create(model="tiny", prompt=[ids, ids[:4]], echo=True, logprobs=1, max_tokens=1,
                                     temperature=0)
    first = more.choices[0].logprobs
    assert len(first.token_logprobs) == len(ids) + 1 and first.token_logprobs[1:len(ids)] == pytest.approx(expected,
                                                                                                           abs=1e-5)
    assert first.text_offset[-1] == len(prompt) and len(more.choices[1].logprobs.tokens) == 5


def test_tokenize_detokenize_info_and_model_routes(server, tiny):
    _, tok = tiny
    vllm = post(server, "/tokenize", {"prompt": "abc", "add_special_tokens": False}).json()
    assert vllm["tokens"] == tok.encode("abc") and vllm["count"] == 3
    llama = post(server, "/tokenize", {"content": "ab", "with_pieces": True}).json()
    assert llama["tokens"] == [{"id": i, "piece": c} for i, c in zip(tok.encode("ab"), "ab", strict=True)]
    back = post(server, "/detokenize", {"tokens": tok.encode("hello")}).json()
    assert back["prompt"] == back["content"] == "hello"
    info = httpx.get(server + "/tokenizer_info").json()
    assert info["eos_token"] == tok.id_to_token(tok.eos_id)
    assert httpx.get(server + "/v1/models/tiny").json()["id"] == "tiny"
    missing = httpx.get(server + "/v1/models/gpt-9")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"messages": HELLO, "functions": []}, "functions"),
    ("/v1/chat/completions", {"messages": HELLO, "service_tier": "auto"}, "service_tier"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix"),
    ("/v1/completions", {"prompt": [True, False]}, "prompt"),
    ("/v1/chat/completions", {"messages": HELLO, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}}]},
     "tools[0].function.parameters"),
    ("/v1/chat/completions", {"messages": HELLO, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"x": {"oneOf": []}}}}}]},
     "tools[0].function.parameters"),
    ("/v1/chat/completions", {"messages": HELLO, "tools": [CALCULATOR],
                              "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ("/v1/chat/completions", {"messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ("/v1/chat/completions", {"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "array", "uniqueItems": True}}}}, "response_format"),
    ("/tokenize", {"prompt": "a", "content": "b"}, "prompt"),
    ("/detokenize", {"tokens": [10 ** 6]}, "tokens"),
])
def test_unsupported_fields_and_bad_tools_are_400_naming_the_field(server, path, body, param):
    response = post(server, path, {"model": "tiny", **body} if path.startswith("/v1") else body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    if param in ("functions", "service_tier", "suffix"):
        assert f"'{param}' is not supported" in error["message"]
    if "parameters" in param:
        assert "JSON schema at" in error["message"]


def test_openapi_document_says_400_not_422(server):
    doc = httpx.get(server + "/openapi.json").json()
    text = json.dumps(doc)
    assert '"422"' not in text and "HTTPValidationError" not in text
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize", "/v1/models/{model_id}"):
        assert path in doc["paths"]
    assert "400" in doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    prompt = doc["components"]["schemas"]["CompletionRequest"]["properties"]["prompt"]
    assert "boolean" not in json.dumps(prompt)
