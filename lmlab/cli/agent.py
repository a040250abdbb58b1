"""``lmlab agent``: run a tool-using agent on a task (``run``) and read its trace (``trace``)."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from .common import add_common, check_outputs, emit, status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="tool-using agents (ReAct or OpenAI tool calls) with traces")
    verbs = p.add_subparsers(dest="agent_verb", metavar="ACTION", required=True)

    r = verbs.add_parser("run", help="run an agent on one task and print its answer")
    r.add_argument("task", help="what the agent should do")
    r.add_argument("--model", required=True, help="a model directory or built-in name, or the model's name at --base-url")
    r.add_argument("--base-url", help="an OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1, lmlab serve)")
    r.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="the endpoint's key ($OPENAI_API_KEY)")
    r.add_argument("--tools", default="calculator",
                   help="comma-separated: calculator, python, search, rag, fetch, send_email (default calculator)")
    r.add_argument("--index", help="an 'lmlab rag index' folder for the search and rag tools")
    r.add_argument("--allow-fetch", action="append", default=[], metavar="HOST:PORT",
                   help="a local address the fetch tool may read (repeatable; loopback only)")
    r.add_argument("--instructions", default="You are a helpful assistant. Use the tools when they help, then "
                   "give a short final answer.", help="the agent's instructions (its system prompt)")
    r.add_argument("--mode", choices=["auto", "react", "tools"], default="auto",
                   help="ReAct text (in-process default) or OpenAI tool calls (endpoint default)")
    r.add_argument("--max-steps", type=int, default=6, help="step limit (default 6)")
    r.add_argument("--answer-at-limit", action="store_true",
                   help="the last step allowed by --max-steps must be a final answer (no tool call)")
    r.add_argument("--max-tokens", type=int, default=192, help="tokens per model reply (default 192)")
    r.add_argument("--first-tool", help="force a tool call at the first step: 'required' or a tool's name")
    r.add_argument("--answer-pattern", help="the final answer must match this regular expression")
    r.add_argument("--no-examples", action="store_true", help="leave out the built-in tools' worked ReAct examples")
    r.add_argument("--no-defenses", action="store_true",
                   help="no spotlighting, filtering or tool policy on tool output (for measuring attacks)")
    r.add_argument("--block-topics", help="comma-separated words: refuse tasks and answers that mention them")
    r.add_argument("--block-pii", action="store_true", help="refuse tasks and answers holding personal data")
    r.add_argument("--memory", help="a long-term memory folder: recall related past runs, and remember this one")
    r.add_argument("--memory-budget", type=int, help="keep the conversation within this many tokens (summarising)")
    r.add_argument("--trace", help="write the JSONL trace here (default: a new file under the temp folder)")
    add_common(r)
    r.set_defaults(func=run_agent)

    t = verbs.add_parser("trace", help="render an agent trace (JSONL) readably")
    t.add_argument("file", help="a trace written by 'lmlab agent run'")
    t.add_argument("--prompts", action="store_true", help="also show every prompt sent to the model")
    add_common(t)
    t.set_defaults(func=show_trace)


def _tool_names(args: argparse.Namespace) -> list[str]:
    """The --tools names, each known and with what it needs (checked before a model loads)."""
    from ..agents import tools as builtin
    from ..core.errors import ConfigError

    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    unknown = [n for n in names if n not in builtin.BUILTIN]
    if unknown:
        raise ConfigError(f"unknown tool(s) {', '.join(unknown)}", f"choose from {', '.join(builtin.BUILTIN)}")
    if any(n in names for n in ("search", "rag")) and not args.index:
        raise ConfigError("the search and rag tools need an index", "pass --index DIR (built by lmlab rag index)")
    if "fetch" in names and not args.allow_fetch:
        raise ConfigError("the fetch tool needs an allow-list", "pass --allow-fetch 127.0.0.1:PORT")
    if "fetch" in names:
        builtin.fetch_tool(args.allow_fetch)  # refuses an entry that is not a local host:port
    if any(n in names for n in ("search", "rag")):
        from ..retrieval.rag import RagIndex

        RagIndex(args.index)  # refuses a folder that holds no index
    return names


def _tools(args: argparse.Namespace, names: list[str], model) -> list:
    from ..agents import tools as builtin

    out = []
    for name in names:
        if name == "calculator":
            out.append(builtin.calculator_tool())
        elif name == "python":
            out.append(builtin.python_tool())
        elif name == "search":
            out.append(builtin.search_tool(args.index))
        elif name == "rag":
            out.append(builtin.rag_tool(args.index, _answerer(model)))
        elif name == "fetch":
            out.append(builtin.fetch_tool(args.allow_fetch))
        else:
            out.append(builtin.send_email_tool([]))
    return out


def _answerer(model):
    from ..agents.models import Generation

    def generate(prompt: str) -> str:
        return model.generate([Generation(messages=[{"role": "user", "content": prompt}], max_tokens=96)])[0][0].text

    return generate


def run_agent(args: argparse.Namespace) -> int:
    from ..agents import Agent, Defenses, load_chat_model, run
    from ..agents import guardrails as g
    from ..agents.memory import LongTermMemory
    from ..agents.react import BUILTIN_EXAMPLES
    from ..core.validate import check_number

    check_number("--max-steps", args.max_steps, low=1, integer=True)
    check_outputs(args, files=("trace",), dirs=("memory",))
    checks = []
    if args.block_topics:
        checks.append(g.blocked_topics([t.strip() for t in args.block_topics.split(",") if t.strip()]))
    if args.block_pii:
        checks.append(g.pii())
    names = _tool_names(args)
    status(args, f"loading {args.model}" + (f" at {args.base_url}" if args.base_url else ""))
    model = load_chat_model(args.model, args.base_url, args.api_key)
    tools = _tools(args, names, model)
    memory = None
    if args.memory:
        memory = LongTermMemory.load(args.memory) if Path(args.memory).exists() else LongTermMemory()
    examples = [] if args.no_examples else [BUILTIN_EXAMPLES[t.name] for t in tools if t.name in BUILTIN_EXAMPLES]
    agent = Agent("agent", args.instructions, model, tools=tools, max_steps=args.max_steps, mode=args.mode,
                  answer_pattern=args.answer_pattern, examples=examples, max_tokens=args.max_tokens,
                  first_tool=args.first_tool, answer_at_limit=args.answer_at_limit, input_checks=checks, output_checks=list(checks),
                  defenses=Defenses.off() if args.no_defenses else Defenses(), memory_budget=args.memory_budget,
                  long_term=memory)
    trace = args.trace or str(Path(tempfile.gettempdir()) / "lmlab-agent-traces" /
                              f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl")
    result = run(agent, args.task, trace=trace)
    if memory is not None and result.status == "completed":
        memory.add(f"Task: {args.task}\nAnswer: {result.answer}")
        memory.save(args.memory)
    human = (f"{result.answer if result.answer is not None else '(no answer)'}\n"
             f"[{result.status} after {result.steps} step(s); {len(result.tool_calls)} tool call(s); trace {trace}]")
    if result.error:
        human += f"\n{result.error}"
    emit(args, result.to_dict(), human)
    return 0 if result.status in ("completed", "refused") else 1


def show_trace(args: argparse.Namespace) -> int:
    from ..agents.trace import read_trace, render_trace

    events = read_trace(args.file)
    emit(args, {"file": args.file, "events": events}, render_trace(events, prompts=args.prompts))
    return 0
