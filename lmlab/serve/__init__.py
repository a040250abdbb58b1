"""lmlab.serve: an OpenAI-compatible HTTP server (FastAPI + uvicorn) with a web chat page.

``create_app(lm, tokenizer, model_id=...)`` gives the ASGI app; ``lmlab serve`` runs it.
FastAPI and uvicorn are imported only when a server is built.
"""

from .app import ApiError, Limits, create_app

__all__ = ["ApiError", "Limits", "create_app"]
