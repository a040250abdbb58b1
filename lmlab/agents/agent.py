"""One agent loop, in the style of OpenAI's Agents SDK (and Swarm before it): an agent is a model,
instructions, tools and handoffs; the loop calls the model until it gives a final output.

Each step the active agent's model sees the conversation (through short-term memory when there is
one) and either calls a tool — the loop runs it and adds the observation — hands off to another
agent (a tool named ``transfer_to_<name>``: the conversation stays, the instructions, tools and
model become the other agent's), or answers; a reply with no tool call is the final output, and
when the agent has an ``answer_pattern`` the answer must match it (an in-process model is held to
it by its grammar; an endpoint's miss is sent back as feedback). The run ends ``completed``,
``max_steps`` (the step limit came first; the trace holds every step), ``refused`` (a guardrail
stopped the task or the answer) or ``error`` (the model failed, e.g. an endpoint that is down).

Tool calls are written two ways: **ReAct** text for models without native tool calls (in-process
models decode each step under ``react.step_grammar``, so the call is always well formed), and
**OpenAI tool calls** for endpoints (``mode="tools"``). Tool failures — an exception, arguments that
break the schema, an unknown tool — become observations and the run goes on. ``Defenses`` apply to
untrusted tool output (filtering, spotlighting) and to side-effecting calls (``ToolPolicy``).

The loop is a generator that yields model requests, so ``run_many`` steps many runs together and
sends their requests to the model as one batch (one ``Engine.generate`` for in-process models,
concurrent requests for endpoints); ``run`` is ``run_many`` of one task.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import ConfigError, LmlabError
from ..core.validate import check_choice, check_number
from . import react
from .defenses import OPEN_POLICY, Provenance, Spotlight, ToolPolicy, sanitize
from .guardrails import REFUSAL, Check
from .memory import LongTermMemory, ShortTermMemory
from .models import Generation, Reply
from .tools import Tool, call_tool, parse_arguments, tool_map
from .trace import Trace

MODES = ("auto", "react", "tools")
STATUSES = ("completed", "max_steps", "refused", "error")
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass
class Defenses:
    """Prompt-injection defences of a run (``lmlab.agents.defenses``); ``Defenses.off()`` has none."""

    spotlight: Spotlight | None = field(default_factory=Spotlight)
    filter: bool = True
    policy: ToolPolicy = field(default_factory=ToolPolicy)

    @classmethod
    def off(cls) -> Defenses:
        return cls(spotlight=None, filter=False, policy=OPEN_POLICY)


@dataclass
class Agent:
    """A model with instructions, tools and handoffs (see the module docstring).

    ``first_tool`` forces a tool call ("required", or a tool's name) until the first call is made;
    ``stop_on_tool`` makes the first successful tool result the final output (the Agents SDK's
    ``stop_on_first_tool``); ``answer_at_limit`` makes the last step allowed by ``max_steps`` a final
    answer (the step grammar without actions; ``tool_choice="none"`` for endpoints) instead of ending
    ``max_steps`` without one (LangChain's ``early_stopping_method="generate"``, without the extra call;
    small models otherwise repeat a tool call up to the limit); ``examples`` are worked ReAct examples,
    shown as earlier turns (``react.example_turns``).
    """

    name: str
    instructions: str
    model: Any
    tools: list[Tool] = field(default_factory=list)
    handoffs: list[Agent] = field(default_factory=list)
    max_steps: int = 8
    mode: str = "auto"
    answer_pattern: str | None = None
    examples: list[str] = field(default_factory=list)
    max_tokens: int = 192
    temperature: float = 0.0
    first_tool: str | None = None
    stop_on_tool: bool = False
    answer_at_limit: bool = False
    input_checks: list[Check] = field(default_factory=list)
    output_checks: list[Check] = field(default_factory=list)
    defenses: Defenses = field(default_factory=Defenses)
    memory_budget: int | None = None
    long_term: LongTermMemory | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_-]{1,48}$", self.name):
            raise ConfigError(f"agent name {self.name!r} must be 1-48 letters, digits, '_' or '-'")
        check_choice("mode", self.mode, MODES)
        check_number("max_steps", self.max_steps, low=1, integer=True)
        check_number("max_tokens", self.max_tokens, low=1, integer=True)
        if self.memory_budget is not None:
            check_number("memory_budget", self.memory_budget, low=64, integer=True)
        if self.answer_pattern is not None:
            re.compile(self.answer_pattern)
        if self.resolved_mode == "tools" and not self.model.native_tools:
            raise ConfigError(f"agent {self.name}: this model has no native tool calls",
                              "use mode 'react' (the default for in-process models)")
        names = [t.name for t in self.all_tools()]
        tool_map(self.all_tools())
        if self.first_tool not in (None, "required") and self.first_tool not in names:
            raise ConfigError(f"first_tool {self.first_tool!r} is not one of the agent's tools {names}")

    @property
    def resolved_mode(self) -> str:
        if self.mode == "auto":
            return "tools" if self.model.native_tools else "react"
        return self.mode

    def handoff_tools(self) -> list[Tool]:
        return [Tool(f"transfer_to_{a.name}", f"Hand the conversation to {a.name}: {a.instructions[:120]}",
                     NO_ARGUMENTS, lambda: "", side_effects=False) for a in self.handoffs]

    def all_tools(self) -> list[Tool]:
        return [*self.tools, *self.handoff_tools()]


@dataclass
class RunResult:
    """How a run ended: the answer (None unless completed or refused), status, steps, trace path."""

    answer: str | None
    status: str
    steps: int
    trace: str | None
    agent: str
    tool_calls: list[dict] = field(default_factory=list)
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Run:
    """The state of one run while the loop steps it."""

    agent: Agent
    task: str
    trace: Trace
    messages: list[dict] = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)
    memory: ShortTermMemory | None = None
    steps: int = 0
    calls: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def system(self) -> dict:
        a = self.agent
        instructions = a.instructions
        if a.defenses.spotlight is not None:
            instructions += "\n\n" + a.defenses.spotlight.instructions()
        if a.resolved_mode == "react":
            instructions = react.system_prompt(instructions, a.all_tools())
        return {"role": "system", "content": instructions}


def _request(run: _Run, messages: list[dict]) -> Generation:
    a = run.agent
    last = a.answer_at_limit and run.steps == a.max_steps - 1
    first = _forcing(run) and not last
    tools = a.all_tools()
    if a.resolved_mode == "tools":
        choice = None
        if tools:
            choice = "none" if last else ("required" if a.first_tool == "required" else {
                "type": "function", "function": {"name": a.first_tool}}) if first else "auto"
        return Generation(messages=messages, max_tokens=a.max_tokens, temperature=a.temperature,
                          tools=[t.openai() for t in tools] or None, tool_choice=choice)
    constraint = None
    if a.model.constrains:
        allowed = [] if last else [t for t in tools if not first or a.first_tool in ("required", t.name)]
        constraint = ("grammar", react.step_grammar(allowed, a.answer_pattern, allow_final=not first))
    return Generation(messages=messages, max_tokens=a.max_tokens, temperature=a.temperature,
                      constraint=constraint, stop=() if constraint else ("\nObservation:",))


def _forcing(run: _Run) -> bool:
    """Whether this step must call a tool: ``first_tool`` is set and no call has been made yet."""
    return run.agent.first_tool is not None and not run.calls


def _untrusted(run: _Run, text: str) -> str:
    """Tool output as the model will read it: recorded as untrusted, filtered and spotlighted."""
    d = run.agent.defenses
    run.provenance.untrusted.append(text)
    if d.filter:
        text, removed = sanitize(text)
        if removed:
            run.trace.event("sanitized", removed=removed)
    if d.spotlight is not None:
        text = d.spotlight.wrap(text)
    return text


def _guard(run: _Run, checks: Sequence[Check], text: str, stage: str) -> str | None:
    for check in checks:
        verdict = check(text)
        run.trace.event("guardrail", stage=stage, check=verdict.check, allowed=verdict.allowed, reason=verdict.reason)
        if not verdict.allowed:
            return verdict.reason
    return None


def _tool_step(run: _Run, name: str, arguments: str | dict | None) -> tuple[str, bool, bool]:
    """Run one call: (observation as the model reads it, whether it succeeded, whether it handed off)."""
    tools = tool_map(run.agent.all_tools())
    handoffs = {f"transfer_to_{a.name}": a for a in run.agent.handoffs}
    record: dict[str, Any] = {"agent": run.agent.name, "name": name, "arguments": arguments}
    if name in handoffs:
        target = handoffs[name]
        run.trace.event("handoff", **{"from": run.agent.name, "to": target.name})
        run.agent = target
        run.messages[0] = run.system()
        run.calls.append({**record, "handoff": True})
        return f"Transferred to {target.name}.", True, True
    tool = tools.get(name)
    if tool is None:
        observation = f"error: there is no tool named {name!r}; the tools are {', '.join(tools) or 'none'}"
        run.trace.event("tool_call", **record, observation=observation, error=observation)
        run.calls.append({**record, "error": observation})
        return observation, False, False
    try:
        args = parse_arguments(arguments)
    except LmlabError:
        args = None
    blocked = run.agent.defenses.policy.decide(tool, args, run.provenance) if args is not None else None
    if blocked is not None:
        observation = f"error: the call of {name} was blocked by the tool policy: {blocked}"
        run.trace.event("tool_call", **record, observation=observation, error=observation, blocked=True)
        run.calls.append({**record, "blocked": True})
        return observation, False, False
    result = call_tool(tool, args if args is not None else arguments)
    shown = _untrusted(run, result.observation) if tool.untrusted_output and not result.error else result.observation
    run.trace.event("tool_call", **record, observation=result.observation, error=result.error,
                    seconds=round(result.seconds, 4))
    run.calls.append({**record, "observation": result.observation, "error": result.error})
    return shown, result.error is None, False


def _final(run: _Run, answer: str) -> RunResult | str:
    """The run's end with ``answer`` — or, when the answer breaks the final-output rule, feedback."""
    pattern = run.agent.answer_pattern
    if pattern is not None and not re.fullmatch(pattern, answer.strip()):
        return f"error: the final answer must match the pattern {pattern}; answer again in that form"
    reason = _guard(run, run.agent.output_checks, answer, "output")
    if reason is not None:
        return _end(run, "refused", REFUSAL)
    return _end(run, "completed", answer)


def _end(run: _Run, status: str, answer: str | None, error: str | None = None) -> RunResult:
    run.trace.event("run_end", status=status, answer=answer, steps=run.steps, error=error, agent=run.agent.name,
                    prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens)
    run.trace.close()
    return RunResult(answer, status, run.steps, str(run.trace.path) if run.trace.path else None, run.agent.name,
                     run.calls, error, run.prompt_tokens, run.completion_tokens, run.trace.events[-1]["t"])


def _loop(agent: Agent, task: str, trace: Trace) -> Generator[tuple[Any, Generation], list[Reply], RunResult]:
    run = _Run(agent, task, trace)
    trace.event("run_start", agent=agent.name, task=task, model=getattr(agent.model, "name", "?"),
                tools=[t.name for t in agent.all_tools()], mode=agent.resolved_mode, max_steps=agent.max_steps,
                defenses={"spotlight": agent.defenses.spotlight.mode if agent.defenses.spotlight else None,
                          "filter": agent.defenses.filter})
    if _guard(run, agent.input_checks, task, "input") is not None:
        return _end(run, "refused", REFUSAL)
    run.provenance.trusted += [agent.instructions, task] + [a.instructions for a in agent.handoffs]
    user = task
    if agent.long_term is not None and len(agent.long_term):
        notes = agent.long_term.search(task, k=3)
        if notes:
            user += "\n\nNotes from earlier conversations:\n" + "\n".join(f"- {n['text']}" for n in notes)
            trace.event("memory", action="recall", detail=[n["text"] for n in notes])
    shots = [t for e in agent.examples for t in react.example_turns(e)]
    run.messages = [run.system(), *shots, {"role": "user", "content": user}]
    if agent.memory_budget is not None:
        run.memory = ShortTermMemory(agent.model.count_tokens, agent.memory_budget, head=len(run.messages))
    while run.steps < run.agent.max_steps:
        try:
            if run.memory is not None:
                fold = run.memory.overflow(run.messages)
                if fold:
                    reply = (yield run.agent.model, run.memory.summary_request(fold))[0]
                    run.memory.absorb(fold, reply.text)
                    trace.event("memory", action="summarised", detail=f"{len(fold)} messages → {reply.text}")
                messages = run.memory.view(run.messages)
            else:
                messages = run.messages
            request = _request(run, messages)
            reply = (yield run.agent.model, request)[0]
        except LmlabError as exc:
            return _end(run, "error", None, str(exc))
        run.steps += 1
        run.prompt_tokens += reply.prompt_tokens
        run.completion_tokens += reply.completion_tokens
        trace.event("model_call", agent=run.agent.name, prompt=messages, reply=reply.text,
                    tool_calls=reply.tool_calls, prompt_tokens=reply.prompt_tokens,
                    completion_tokens=reply.completion_tokens, seconds=round(reply.seconds, 4))
        if run.agent.resolved_mode == "tools":
            if not reply.tool_calls and (reply.finish_reason == "length" or _forcing(run)):
                feedback = (f"error: the reply was cut at {run.agent.max_tokens} tokens before it ended (a tool "
                            "call cut short is no call); write a shorter one" if reply.finish_reason == "length"
                            else "error: this step must call a tool; call one")
                run.messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": feedback}]
                continue
            if not reply.tool_calls:
                outcome = _final(run, reply.text)
                if isinstance(outcome, RunResult):
                    return outcome
                run.messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": outcome}]
                continue
            call = reply.tool_calls[0]
            run.messages.append({"role": "assistant", "content": reply.text or "", "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": call["name"],
                                                                    "arguments": call["arguments"]}}]})
            observation, ok, handed = _tool_step(run, call["name"], call["arguments"])
            run.messages.append({"role": "tool", "tool_call_id": call["id"], "content": observation})
        else:
            if reply.finish_reason == "length" and run.agent.model.constrains:
                run.messages += [{"role": "assistant", "content": reply.text}, {
                    "role": "user", "content": f"{react.OBSERVATION}error: the step was cut at {run.agent.max_tokens} "
                                               "tokens; write a shorter step"}]
                continue
            step = react.parse_step(reply.text)
            if step.tool is None:
                outcome = _final(run, step.answer or "")
                if isinstance(outcome, RunResult):
                    return outcome
                run.messages += [{"role": "assistant", "content": reply.text},
                                 {"role": "user", "content": react.OBSERVATION + outcome}]
                continue
            run.messages.append({"role": "assistant", "content": react.format_action(step.thought, step.tool,
                                                                                     step.arguments)})
            observation, ok, handed = _tool_step(run, step.tool, step.arguments)
            run.messages.append({"role": "user", "content": react.OBSERVATION + observation})
        if ok and not handed and run.agent.stop_on_tool:
            outcome = _final(run, run.calls[-1]["observation"])
            if isinstance(outcome, RunResult):
                return outcome
            run.messages.append({"role": "user", "content": outcome})
    return _end(run, "max_steps", None, f"the step limit ({run.agent.max_steps}) was reached before a final answer")


def run_many(agent: Agent | Sequence[Agent], tasks: Sequence[str], traces: Sequence[str | None] | None = None
             ) -> list[RunResult]:
    """Run ``agent`` (or one agent per task) on every task, the runs stepped together and each step's
    model requests sent as one batch per model."""
    agents = [agent] * len(tasks) if isinstance(agent, Agent) else list(agent)
    for name, given in (("agents", agents), ("trace paths", traces)):
        if given is not None and len(given) != len(tasks):
            raise ConfigError(f"{len(tasks)} tasks but {len(given)} {name}", f"give one of the {name} per task")
    loops = [_loop(a, task, Trace(traces[i] if traces else None))
             for i, (a, task) in enumerate(zip(agents, tasks, strict=True))]
    results: list[RunResult | None] = [None] * len(tasks)
    pending: dict[int, tuple[Any, Generation]] = {}
    for i, loop in enumerate(loops):
        try:
            pending[i] = next(loop)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        by_model: dict[int, list[int]] = {}
        for i, (model, _) in pending.items():
            by_model.setdefault(id(model), []).append(i)
        answers: dict[int, Any] = {}
        for ids in by_model.values():
            model = pending[ids[0]][0]
            try:
                replies = model.generate([pending[i][1] for i in ids])
                answers.update(zip(ids, replies, strict=True))
            except LmlabError as exc:
                answers.update({i: exc for i in ids})
        pending = {}
        for i, answer in answers.items():
            try:
                pending[i] = loops[i].throw(answer) if isinstance(answer, Exception) else loops[i].send(answer)
            except StopIteration as stop:
                results[i] = stop.value
    return results  # type: ignore[return-value]


def run(agent: Agent, task: str, trace: str | None = None) -> RunResult:
    """Run ``agent`` on one task (writing the JSONL trace to ``trace`` when given)."""
    start = time.perf_counter()
    result = run_many(agent, [task], [trace])[0]
    result.seconds = round(time.perf_counter() - start, 4)
    return result
