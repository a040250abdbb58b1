"""The server's outer layer (plain ASGI, so streaming passes through untouched): API key,
request body size limit, and one structured JSON access-log line per request."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
access_log = logging.getLogger("lmlab.serve.access")


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def _send_json(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


#: paths that need the API key when one is set (the tokenizer routes serve the model's vocabulary)
PROTECTED = ("/v1", "/tokenize", "/detokenize", "/tokenizer_info")


def guard(app: ASGIApp, *, api_key: str | None = None, max_body_bytes: int = 1 << 20) -> ASGIApp:
    """Wrap ``app``: /v1 and tokenizer paths need ``Authorization: Bearer <api_key>`` when a key is set; bodies over
    ``max_body_bytes`` get 413; every request is logged as JSON (status, duration, sizes, tokens)."""

    async def wrapped(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        record = {"request_id": uuid.uuid4().hex[:16], "method": scope["method"], "path": scope["path"],
                  "client": (scope.get("client") or ("", 0))[0], "status": 0, "bytes_in": 0, "bytes_out": 0}
        scope.setdefault("state", {})["access"] = record  # the endpoints add model, tokens, finish reasons

        async def logged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            elif message["type"] == "http.response.body":
                record["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if api_key and scope["path"].startswith(PROTECTED):
                given = headers.get("authorization", "")
                token = given[7:] if given.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), api_key.encode()):
                    await _send_json(logged_send, 401, error_body(
                        "invalid or missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"))
                    return
            body, too_big = await _read_body(receive, headers, max_body_bytes)
            record["bytes_in"] = len(body)
            if too_big:
                await _send_json(logged_send, 413, error_body(
                    f"the request body is larger than {max_body_bytes} bytes", code="request_too_large"))
                return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await app(scope, replay, logged_send)
        finally:
            record["ms"] = round(1000 * (time.perf_counter() - start), 1)
            access_log.info(json.dumps(record, ensure_ascii=False))

    return wrapped


async def _read_body(receive: Callable, headers: dict[str, str], limit: int) -> tuple[bytes, bool]:
    """The whole request body, or (what was read, True) once it passes ``limit`` bytes."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def access_logger() -> logging.Logger:
    """The JSON access log on stderr (one line per request), set up once."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    return access_log
