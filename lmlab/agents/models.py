"""The models an agent or a prompting strategy talks to: a protocol model in this process, or any
OpenAI-compatible endpoint (``lmlab serve``, vLLM, llama.cpp's server, OpenAI) — DESIGN principle 1's
remote model.

Both answer a batch of ``Generation`` requests with ``generate(requests) → [[Reply, …], …]`` (one
list per request, ``n`` replies each). A request is either chat ``messages`` (rendered with the
model's chat template) or a raw ``prompt`` continued as text. ``LocalModel`` runs the whole batch
through one ``Engine.generate`` call — n samples of a request share one prefill — and can hold a
reply to a ``constraint`` (a regex, JSON schema or GBNF grammar compiled against its tokenizer by
``lmlab.generate.constrain``). ``EndpointModel`` posts the requests concurrently (the server batches
them) with the standard library's HTTP client and passes OpenAI ``tools``/``tool_choice``; an
endpoint that is down, refuses or answers garbage is one ``ModelError`` naming the URL.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError, ModelError
from ..core.validate import check_number


@dataclass
class Generation:
    """One request: ``messages`` (chat) or ``prompt`` (raw text), and how to continue it.

    ``temperature`` 0 is greedy. ``constraint`` is ``(kind, source)`` with kind regex, json_schema or
    grammar (in-process models only); ``tools``/``tool_choice`` are OpenAI's (endpoints only).
    """

    messages: list[dict] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    constraint: tuple[str, Any] | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ConfigError("a generation request needs either messages or a prompt", "pass exactly one")
        check_number("max_tokens", self.max_tokens, low=1, integer=True)
        check_number("n", self.n, low=1, integer=True)
        check_number("temperature", self.temperature, low=0.0)


@dataclass
class Reply:
    """One continuation: its text, the tool calls an endpoint returned ({id, name, arguments}), why it
    ended, and the tokens it cost."""

    text: str
    tool_calls: list[dict] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class LocalModel:
    """A protocol model and its tokenizer in this process (see the module docstring)."""

    native_tools = False  # tool calls go through the ReAct format, held by a grammar
    constrains = True

    def __init__(self, lm: Any, tokenizer: Any, name: str = "local") -> None:
        from ..lm import check_tokenizer

        if tokenizer is None:
            raise ModelError(f"{name} has no tokenizer", "load a model directory with a tokenizer.json")
        check_tokenizer(lm, tokenizer)
        self.lm, self.tokenizer, self.name = lm, tokenizer, name
        start = lm.bos_id if lm.bos_id is not None else lm.eos_id
        self.start_ids = [start] if start is not None else []
        eos = getattr(lm, "eos_id", None)
        self.end_ids = tuple(i for i in [tokenizer.eos_id if eos is None else eos] if i is not None)
        self._engine = None

    @classmethod
    def load(cls, model: str) -> LocalModel:
        """A model directory or built-in name (``smollm2-135m-instruct``) through ``lmlab.models.load_model``."""
        from ..models import load_model

        lm, tokenizer = load_model(model)
        return cls(lm, tokenizer, name=str(model))

    def prompt_ids(self, request: Generation) -> list[int]:
        """The token ids the model reads for ``request``."""
        if request.messages is not None:
            from ..tokenizers.chat_template import chat_text

            return self.tokenizer.encode(chat_text(self.tokenizer, request.messages))
        return self.start_ids + self.tokenizer.encode(request.prompt)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def _settings(self, request: Generation) -> Any:
        from ..generate.settings import DecodingSettings

        if request.tools:
            raise ConfigError("an in-process model takes tools through the ReAct format, not OpenAI tools",
                              "run the agent in mode 'react' (the default for in-process models)")
        settings = DecodingSettings(max_new_tokens=request.max_tokens, greedy=request.temperature == 0,
                                    temperature=request.temperature or 1.0, n=request.n, seed=request.seed,
                                    stop=tuple(request.stop))
        if request.constraint is not None:
            from ..generate.constrain import constraint_processor

            kind, source = request.constraint
            settings = settings.with_(constraint=constraint_processor(kind, source, self.tokenizer, self.end_ids),
                                      stop_ids=self.end_ids)
        return settings

    def generate(self, requests: Sequence[Generation]) -> list[list[Reply]]:
        """Every request's ``n`` replies, the whole batch decoded together."""
        from ..generate.engine import Engine, Request

        if self._engine is None:
            self._engine = Engine(self.lm, self.tokenizer, decode_layout=False)
        start = time.perf_counter()
        batch = [Request(self.prompt_ids(r), settings=self._settings(r)) for r in requests]
        outs = self._engine.generate(batch)
        seconds = time.perf_counter() - start
        replies, at = [], 0
        for request, prompt in zip(requests, batch, strict=True):
            group = outs[at:at + request.n]
            at += request.n
            replies.append([Reply(o.text, [], o.finish_reason, len(prompt.prompt), len(o.ids), seconds)
                            for o in group])
        return replies


class EndpointModel:
    """An OpenAI-compatible server at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``) serving ``model``."""

    native_tools = True
    constrains = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 concurrency: int = 8) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the endpoint {base_url!r} is not an http(s) URL", "pass e.g. http://127.0.0.1:8000/v1")
        self.base_url, self.name, self.api_key = base_url.rstrip("/"), model, api_key
        self.timeout = check_number("timeout", timeout, low=0, low_inclusive=False)
        self.concurrency = int(check_number("concurrency", concurrency, low=1, integer=True))

    def count_tokens(self, text: str) -> int:
        """An estimate (4 characters a token): the OpenAI API has no tokenizer route."""
        return math.ceil(len(text) / 4)

    def post(self, route: str, body: dict) -> dict:
        """POST ``body`` to ``base_url + route``; the JSON answer, or a ModelError saying what went wrong."""
        url = self.base_url + route
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310  (http(s) checked above)
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            try:
                detail = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise ModelError(f"the endpoint {url} answered {exc.code}: {detail}",
                             "check the model name, the API key and the request fields") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(f"cannot reach the endpoint {url} ({reason})",
                             "start the server (e.g. lmlab serve --model ...) or fix the base URL") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ModelError(f"the endpoint {url} did not answer JSON", "check that it is an OpenAI-compatible API") \
                from None

    def _one(self, request: Generation) -> list[Reply]:
        if request.constraint is not None and request.constraint[0] != "json_schema":
            raise ConfigError(f"an OpenAI-compatible endpoint cannot hold a reply to a {request.constraint[0]}",
                              "use an in-process model for regex/grammar constraints")
        body: dict[str, Any] = {"model": self.name, "max_tokens": request.max_tokens,
                                "temperature": request.temperature, "n": request.n}
        for key, value in (("seed", request.seed), ("stop", list(request.stop) or None)):
            if value is not None:
                body[key] = value
        start = time.perf_counter()
        if request.prompt is not None:
            data = self.post("/completions", {**body, "prompt": request.prompt})
            choices = [(c.get("text") or "", [], c.get("finish_reason") or "stop") for c in data.get("choices", [])]
        else:
            body["messages"] = request.messages
            if request.tools:
                body.update(tools=request.tools, parallel_tool_calls=False)
                if request.tool_choice is not None:
                    body["tool_choice"] = request.tool_choice
            if request.constraint is not None:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "reply", "schema": request.constraint[1]}}
            data = self.post("/chat/completions", body)
            choices = []
            for c in data.get("choices", []):
                message = c.get("message") or {}
                calls = [{"id": t.get("id", ""), "name": t["function"]["name"], "arguments": t["function"]["arguments"]}
                         for t in message.get("tool_calls") or [] if "function" in t]
                choices.append((message.get("content") or "", calls, c.get("finish_reason") or "stop"))
        if len(choices) != request.n:
            raise ModelError(f"the endpoint {self.base_url} returned {len(choices)} choices for n = {request.n}",
                             "check that the server supports n")
        usage = data.get("usage") or {}
        seconds = time.perf_counter() - start
        per = max(len(choices), 1)
        return [Reply(text, calls, reason, int(usage.get("prompt_tokens", 0)),
                      int(usage.get("completion_tokens", 0)) // per, seconds) for text, calls, reason in choices]

    def generate(self, requests: Sequence[Generation]) -> list[list[Reply]]:
        """Every request's replies; the requests go out concurrently (``concurrency`` at a time)."""
        if len(requests) == 1:
            return [self._one(requests[0])]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))


ChatModel = LocalModel | EndpointModel


def load_chat_model(model: str, base_url: str | None = None, api_key: str | None = None) -> ChatModel:
    """``model`` at an OpenAI-compatible ``base_url``, or loaded in process when no URL is given."""
    if base_url:
        return EndpointModel(base_url, model, api_key)
    return LocalModel.load(model)
