"""The OpenAPI document the server publishes at ``/openapi.json``, true to what it answers.

FastAPI documents a 422 "validation error" for every body; lmlab answers bad requests with 400 and
an OpenAI error object (``guard.error_body``). ``published_openapi`` replaces the 422s with the
error responses each route can give (listed where the route is added) and drops the unused schemas.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}
_REASONS = {400: "invalid request (the error names the field)", 401: "missing or wrong API key",
            404: "no such model", 413: "body too large", 429: "queue full", 503: "model still loading",
            504: "request past its time limit"}
ERRORS: dict[int, dict[str, Any]] = {
    code: {"description": reason, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for code, reason in _REASONS.items()}


def published_openapi(app: Any) -> dict:
    """``app.openapi()`` with 400 for 422 and the Error schema in place of FastAPI's validation schemas."""
    doc = app.openapi()
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    return doc


__all__ = ["ERRORS", "published_openapi"]
