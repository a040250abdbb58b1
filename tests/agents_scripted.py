"""A scripted chat model for the agent tests: a function of each request decides the reply, so the
loop's control flow (tools, errors, handoffs, limits, guardrails, batching) is tested exactly."""

from __future__ import annotations

from collections.abc import Callable

from lmlab.agents.models import Generation, Reply


class ScriptedModel:
    """Answers each request with ``policy(request)`` (a text, or a Reply for tool calls)."""

    name = "scripted"

    def __init__(self, policy: Callable[[Generation], str | Reply], native_tools: bool = False) -> None:
        self.policy, self.native_tools, self.constrains = policy, native_tools, False
        self.batches: list[int] = []
        self.requests: list[Generation] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: list[Generation]) -> list[list[Reply]]:
        self.batches.append(len(requests))
        self.requests += requests
        out = []
        for r in requests:
            replies = []
            for _ in range(r.n):
                value = self.policy(r)
                replies.append(value if isinstance(value, Reply) else Reply(value, prompt_tokens=7, completion_tokens=3))
            out.append(replies)
        return out


def last_user(request: Generation) -> str:
    return next(m["content"] for m in reversed(request.messages) if m["role"] in ("user", "tool"))
