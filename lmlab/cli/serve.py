"""``lmlab serve``: an OpenAI-compatible HTTP server with continuous batching and a web chat page.

Binds 127.0.0.1 unless told otherwise; any other host needs an API key (``--api-key`` or
``LMLAB_API_KEY``). ``/v1/embeddings`` serves the MiniLM sentence encoder when its package is
installed. One JSON access-log line per request goes to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
from pathlib import Path

from .common import (
    add_common,
    add_kv_options,
    add_model_options,
    emit,
    kv_from_args,
    model_from_args,
    status,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over the OpenAI API (chat, completions, embeddings, web page)")
    add_model_options(p, required=False)
    p.set_defaults(model="smollm2-135m-instruct")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--model-id", default=None, help="the model's name in the API (default: --model)")
    g.add_argument("--api-key", default=os.environ.get("LMLAB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 (default $LMLAB_API_KEY); "
                        "required when --host is not a loopback address")
    g.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default 16)")
    g.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond the batch before 429s")
    g.add_argument("--max-tokens", type=int, default=1024, help="the most tokens one request may ask for")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take (0: no limit)")
    g.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    g.add_argument("--embedding-model", default=None,
                   help="encoder for /v1/embeddings: 'minilm' (default when installed) or 'none'")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_kv_options(p)
    add_common(p)
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError, MissingDependencyError
    from ..core.validate import check_number
    from ..serve import Limits, Served, build_app
    from ..serve.guard import access_logger

    check_number("--port", args.port, low=1, high=65535, integer=True)
    for name in ("max_batch", "max_tokens", "max_body_bytes"):
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), low=1, integer=True)
    if args.threads is not None:
        check_number("--threads", args.threads, low=1, integer=True)
    check_number("--max-queue", args.max_queue, low=0, integer=True)
    check_number("--timeout", args.timeout, low=0.0)
    if not is_loopback(args.host) and not args.api_key:
        raise ConfigError(f"--host {args.host} accepts connections from other machines, and no API key is set",
                          "pass --api-key KEY (or set LMLAB_API_KEY), or bind 127.0.0.1")
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("uvicorn", "lmlab serve") from None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kv_cache = kv_from_args(args)  # bad cache flags fail before the model loads
    status(args, f"loading {args.model} ...")
    lm, tokenizer, _ = model_from_args(args)
    if hasattr(lm, "eval"):
        lm.eval()
    if kv_cache is not None:
        kv_cache.check_model(lm)
    encoder, encoder_id = _encoder(args)
    model_id = args.model_id or (Path(args.model).name if Path(args.model).exists() else args.model)
    served = Served(lm, tokenizer, model_id, max_batch=args.max_batch, max_queue=args.max_queue, encoder=encoder,
                    encoder_id=encoder_id or "all-MiniLM-L6-v2",
                    limits=Limits(max_tokens=args.max_tokens, timeout_s=args.timeout or None,
                                  max_body_bytes=args.max_body_bytes), kv_cache=kv_cache)
    app = build_app(served, api_key=args.api_key)
    access_logger()
    url = f"http://{args.host}:{args.port}"
    status(args, f"serving {model_id} on {url} (web chat at {url}/, OpenAI API at {url}/v1)")
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           access_log=False))
    # uvicorn re-raises the signal that stopped it once it is done; let that end run() normally instead
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    emit(args, {"model": model_id, "url": url, **served.final}, f"served {served.final.get('submitted', 0)} requests")
    return 0


def _encoder(args: argparse.Namespace):
    """The sentence encoder for /v1/embeddings, or (None, None) when there is none."""
    from ..core.errors import LmlabError

    name = args.embedding_model
    if name == "none":
        return None, None
    from ..embeddings import sentence_encoder

    try:
        encoder = sentence_encoder(name or "minilm")
    except (LmlabError, ImportError, FileNotFoundError):
        if name:  # asked for by name: its absence is an error
            raise
        return None, None
    return encoder, "all-MiniLM-L6-v2" if (name or "minilm") in ("minilm", "all-minilm-l6-v2",
                                                                  "all-MiniLM-L6-v2") else Path(name).name
