"""Prompt templates with variables: Jinja2, as chat templates are, in a sandbox.

``PromptTemplate(source)`` compiles once in Jinja2's immutable sandbox (a template cannot reach
Python internals or change its inputs) with strict undefined variables: rendering names the
variable that is missing, and a value for a variable the template never uses is refused too, so a
misspelt name cannot pass silently. ``variables`` lists what the template reads.
"""

from __future__ import annotations

import functools
from typing import Any

from ..core.errors import ConfigError, MissingDependencyError


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    try:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise MissingDependencyError("jinja2", "prompt templates") from None
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)


class PromptTemplate:
    """A Jinja2 prompt template (see the module docstring)."""

    def __init__(self, source: str, name: str = "prompt") -> None:
        from jinja2 import TemplateSyntaxError, meta

        env = _environment()
        self.source, self.name = source, name
        try:
            self._template = env.from_string(source)
            self.variables = frozenset(meta.find_undeclared_variables(env.parse(source)))
        except TemplateSyntaxError as exc:
            raise ConfigError(f"template {name!r} does not parse at line {exc.lineno}: {exc.message}",
                              "fix the Jinja2 syntax") from None

    def render(self, **values: Any) -> str:
        """The prompt with ``values`` filled in; missing and unknown variables are errors."""
        from jinja2 import TemplateError, UndefinedError

        missing = sorted(self.variables - set(values))
        unknown = sorted(set(values) - self.variables)
        if missing:
            raise ConfigError(f"template {self.name!r} needs {', '.join(missing)}", "pass a value for each")
        if unknown:
            raise ConfigError(f"template {self.name!r} has no variable(s) {', '.join(unknown)}",
                              f"it reads {', '.join(sorted(self.variables)) or 'none'}")
        try:
            return self._template.render(**values)
        except UndefinedError as exc:
            raise ConfigError(f"template {self.name!r}: {exc.message}", "check the fields the template reads") from None
        except TemplateError as exc:
            raise ConfigError(f"template {self.name!r} does not render: {exc}") from None

    def __repr__(self) -> str:
        return f"PromptTemplate({self.name!r}, variables={sorted(self.variables)})"
