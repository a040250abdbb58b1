"""Run an app with uvicorn on a background thread (tests, notebooks, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..core.errors import MissingDependencyError, ModelError


@contextmanager
def background(app: Any, host: str = "127.0.0.1", port: int = 0, startup_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) while the block runs; yields the base URL."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "lmlab serve") from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lmlab-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ModelError("the server did not start", "run with --debug and check the log")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
