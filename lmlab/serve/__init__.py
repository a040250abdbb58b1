"""lmlab.serve: an OpenAI-compatible HTTP server (FastAPI + uvicorn) with a web chat page.

``create_app(lm, tokenizer, model_id=...)`` gives the ASGI app; ``lmlab serve`` runs it.
FastAPI and uvicorn are imported only when this package is (``lmlab serve`` imports it when it runs).
"""

from .app import ApiError, Limits, Served, build_app, create_app

__all__ = ["ApiError", "Limits", "Served", "build_app", "create_app"]
