"""Traces of agent runs: one JSON object per event in a JSONL file, and a readable rendering.

Every event has ``event`` (its kind) and ``t`` (seconds since the run began); the kinds are
``run_start`` (agent, task, model, tools), ``model_call`` (the prompt or messages, the reply, prompt
and completion tokens, seconds), ``tool_call`` (name, arguments, observation, error, blocked),
``guardrail`` (stage, verdict), ``handoff``, ``memory`` and ``run_end`` (status, answer, steps).
Each event is written and flushed as it happens, so a run that stops half-way — a step limit, an
error, a kill — leaves every event up to that point on disk.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from ..core.errors import DataError
from ..eval.records import read_jsonl


class Trace:
    """Appends events to ``path`` (a fresh file per run); ``path`` None keeps them in memory only."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.events: list[dict] = []
        self.start = time.perf_counter()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def event(self, kind: str, **fields: Any) -> dict:
        record = {"event": kind, "t": round(time.perf_counter() - self.start, 4), **fields}
        self.events.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            self._fh.flush()
        return record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_trace(path: str | os.PathLike) -> list[dict]:
    """The events of a trace file (each must have an ``event`` kind)."""
    events = read_jsonl(path)
    for i, e in enumerate(events, 1):
        if "event" not in e:
            raise DataError(f"{path}: record {i} has no 'event' field", "pass a trace written by lmlab agent run")
    return events


def _short(value: Any, width: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def _block(label: str, text: str, indent: str = "    ") -> list[str]:
    lines = [f"  {label}"]
    for line in str(text).splitlines() or [""]:
        lines += textwrap.wrap(line, 96, initial_indent=indent, subsequent_indent=indent) or [indent]
    return lines


def render_trace(events: list[dict], *, prompts: bool = False) -> str:
    """The run as people read it: the task, each step's model reply, tool calls and their observations,
    guardrail verdicts and the outcome (``prompts`` also shows every prompt sent to the model)."""
    out: list[str] = []
    step = 0
    for e in events:
        kind, t = e["event"], f"{e.get('t', 0):7.2f}s"
        if kind == "run_start":
            out.append(f"{t}  run of agent {e.get('agent')!r} on {e.get('model')} "
                       f"(tools: {', '.join(e.get('tools', [])) or 'none'}; mode {e.get('mode')}; "
                       f"step limit {e.get('max_steps')})")
            out += _block("task:", e.get("task", ""))
        elif kind == "model_call":
            step += 1
            tokens = f"{e.get('prompt_tokens', '?')} prompt + {e.get('completion_tokens', '?')} new tokens"
            out.append(f"{t}  step {step} — {e.get('agent', '')} model call ({tokens}, {e.get('seconds', 0):.2f}s)")
            if prompts and e.get("prompt") is not None:
                out += _block("prompt:", _short(e["prompt"], 4000))
            out += _block("reply:", _short(e.get("reply", ""), 2000))
        elif kind == "tool_call":
            status = "BLOCKED" if e.get("blocked") else ("error" if e.get("error") else "ok")
            out.append(f"{t}  tool {e.get('name')}({_short(e.get('arguments', {}), 200)}) → {status}")
            out += _block("observation:", _short(e.get("observation", ""), 1200))
        elif kind == "guardrail":
            verdict = "passed" if e.get("allowed") else f"STOPPED ({e.get('reason')})"
            out.append(f"{t}  guardrail {e.get('check')} on {e.get('stage')}: {verdict}")
        elif kind == "handoff":
            out.append(f"{t}  handoff {e.get('from')} → {e.get('to')}")
        elif kind == "memory":
            out.append(f"{t}  memory: {e.get('action')} ({_short(e.get('detail', ''), 200)})")
        elif kind == "sanitized":
            out.append(f"{t}  removed from untrusted text: {_short(e.get('removed', []), 300)}")
        elif kind == "run_end":
            out.append(f"{t}  end: {e.get('status')} after {e.get('steps')} step(s)")
            out += _block("answer:", e.get("answer") or "")
            if e.get("error"):
                out += _block("error:", e["error"])
        else:
            out.append(f"{t}  {kind}: {_short({k: v for k, v in e.items() if k not in ('event', 't')}, 300)}")
    return "\n".join(out)
