"""lmlab.agents: putting a trained model to work — prompting strategies, tool-using agents, tree of
thoughts, memory, guardrails and prompt-injection defences (the applications layer: it uses
generation, retrieval, evaluation and classification, never the CLI or the server).

See docs/agents.md. The pieces: ``templates`` (Jinja2 prompt templates), ``fewshot`` (example
selection), ``strategies`` (direct, CoT, zero-shot CoT, least-to-most, self-consistency, PAL as
evaluation-harness strategies), ``models`` (in-process or OpenAI-compatible endpoint), ``tools``
and ``calculator``, ``react`` and ``agent`` (the agent loop), ``tot`` (tree of thoughts),
``memory``, ``guardrails``, ``defenses``, ``trace``, and ``problems``/``suite`` (the generated
tool-use set and the prompt-injection suite).
"""

from .agent import Agent, Defenses, RunResult, run, run_many
from .calculator import calculate
from .models import EndpointModel, Generation, LocalModel, Reply, load_chat_model
from .tools import Tool, call_tool
from .trace import Trace, read_trace, render_trace

__all__ = ["Agent", "Defenses", "EndpointModel", "Generation", "LocalModel", "Reply", "RunResult", "Tool",
           "Trace", "calculate", "call_tool", "load_chat_model", "read_trace", "render_trace", "run", "run_many"]
