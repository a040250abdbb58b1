"""Chat templates: a model's Jinja2 template turns a list of messages into its prompt text.

Rendered the way ``transformers`` renders them (a sandboxed environment, ``trim_blocks`` and
``lstrip_blocks``, ``raise_exception``, the special tokens as variables), so the prompt ids
match what the model was trained with. Jinja2 is imported only when a template is rendered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..core.errors import ConfigError, InputError, MissingDependencyError

ROLES = ("system", "user", "assistant", "tool")


def check_messages(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Messages as plain dicts with a known role and string content."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"message {i} is not an object with 'role' and 'content'",
                             "write messages as {'role': 'user', 'content': '...'}")
        if m["role"] not in ROLES:
            raise InputError(f"message {i} has an unknown role {m['role']!r}", f"use one of {', '.join(ROLES)}")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


@functools.lru_cache(maxsize=8)
def _compiled(template: str):
    """The template compiled once (rendering thousands of conversations for SFT would recompile)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InputError(f"the chat template refused the messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat(template: str, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
                **variables: Any) -> str:
    """The prompt text of ``messages`` under a Jinja2 chat ``template``."""
    try:
        from jinja2 import TemplateError
    except ImportError:
        raise MissingDependencyError("jinja2", "chat templates") from None
    try:
        return _compiled(template).render(messages=check_messages(messages),
                                          add_generation_prompt=add_generation_prompt, **variables)
    except TemplateError as exc:
        raise ConfigError(f"the chat template does not render ({exc})", "check the model's chat template") from None


def chat_text(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
              template: str | None = None) -> str:
    """The text of ``messages`` rendered with the tokenizer's ``chat_template`` (or ``template``)."""
    template = template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ConfigError("this model has no chat template", "pass a template, or prompt it without --chat")
    names = {"bos_token": tokenizer.bos_id, "eos_token": tokenizer.eos_id}
    variables = {k: tokenizer.id_to_token(v) if v is not None else "" for k, v in names.items()}
    return render_chat(template, messages, add_generation_prompt=add_generation_prompt, **variables)


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True,
                template: str | None = None) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's ``chat_template`` (or ``template``)."""
    return tokenizer.encode(chat_text(tokenizer, messages, add_generation_prompt=add_generation_prompt,
                                      template=template))
