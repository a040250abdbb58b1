"""ReAct (Yao et al. 2023, "ReAct: Synergizing Reasoning and Acting in Language Models"): a model
without native tool calls writes a thought, then either an action or its final answer —

    Thought: I need the product.
    Action: calculator
    Action Input: {"expression": "4827 * 356"}

— the agent runs the action and answers with ``Observation: …`` in the next user turn, until the
model writes ``Final Answer: …``. ``step_grammar`` turns the tools into a grammar
(``lmlab.generate.constrain``) so that an in-process model can only write well-formed steps: a
known tool name and arguments valid under that tool's JSON schema (and, when the agent has an
answer pattern, a final answer that matches it). ``parse_step`` reads a step back; it also reads
the free text of an endpoint model, where a reply with no action is the final answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import ConfigError
from ..generate.constrain import Grammar, SchemaRules
from ..generate.constrain.syntax import Chars, Repeat, Text, alt, optional, regex_node, seq
from .tools import Tool

THOUGHT, ACTION, ACTION_INPUT, FINAL = "Thought: ", "Action: ", "Action Input: ", "Final Answer: "
OBSERVATION = "Observation: "
MAX_THOUGHT, MAX_ANSWER = 200, 400

FORMAT = """Answer in this format:
Thought: what you will do next
Action: the name of one tool
Action Input: the tool's arguments as JSON
Then stop: the Observation (the tool's result) comes in the next message. When you know the answer:
Thought: I know the answer
Final Answer: the answer"""


@dataclass
class Step:
    """A parsed step: a thought and either an action (``tool`` and ``arguments`` text) or an ``answer``."""

    thought: str = ""
    tool: str | None = None
    arguments: str = ""
    answer: str | None = None


def describe_tools(tools: Sequence[Tool]) -> str:
    """One line per tool: name, description, argument schema."""
    return "\n".join(f"- {t.name}: {t.description} Arguments: {json.dumps(t.parameters.get('properties', {}))}"
                     for t in tools)


def system_prompt(instructions: str, tools: Sequence[Tool]) -> str:
    """The ReAct system turn: the agent's instructions, its tools and the step format."""
    parts = [instructions.strip(), "You can use these tools:\n" + describe_tools(tools), FORMAT]
    return "\n\n".join(p for p in parts if p)


def example_turns(example: str) -> list[dict]:
    """A worked example (``Question:`` line, then steps with ``Observation:`` lines, then ``Final Answer:``)
    as the chat turns it stands for: the question and each observation a user turn, each step an
    assistant turn — demonstrations a chat model reads as earlier conversation."""
    turns: list[dict] = []
    block: list[str] = []

    def flush() -> None:
        if block:
            turns.append({"role": "assistant", "content": "\n".join(block).strip()})
            block.clear()

    for line in example.strip().splitlines():
        if line.startswith("Question:"):
            flush()
            turns.append({"role": "user", "content": line[len("Question:"):].strip()})
        elif line.startswith(OBSERVATION.strip()):
            flush()
            turns.append({"role": "user", "content": line.strip()})
        else:
            block.append(line)
    flush()
    if not turns or turns[0]["role"] != "user" or turns[-1]["role"] != "assistant":
        raise ConfigError("a ReAct example must start with 'Question:' and end with a step",
                          "write Question:, Thought:/Action:/Action Input: lines, Observation:, Final Answer:")
    return turns


def format_action(thought: str, tool: str, arguments: str) -> str:
    return (f"{THOUGHT}{thought}\n" if thought else "") + f"{ACTION}{tool}\n{ACTION_INPUT}{arguments}"


def _line(most: int) -> Repeat:
    return Repeat(Chars.of([(10, 10)], negate=True), 1, most)


def step_grammar(tools: Sequence[Tool], answer_pattern: str | None = None, allow_final: bool = True) -> Grammar:
    """The grammar of one ReAct step over ``tools`` (see the module docstring); without
    ``allow_final`` the step must call one of them."""
    grammar = Grammar()
    actions = []
    for k, tool in enumerate(tools):
        args = SchemaRules(tool.parameters, grammar, prefix=f"t{k}-").node(tool.parameters, "")
        actions.append(seq(Text(f"{ACTION}{tool.name}\n{ACTION_INPUT}"), args))
    answer = regex_node(answer_pattern) if answer_pattern else _line(MAX_ANSWER)
    final = seq(Text(FINAL), answer, optional(Text("\n")))
    thought = optional(seq(Text(THOUGHT), _line(MAX_THOUGHT), Text("\n")))
    if not actions and not allow_final:
        raise ConfigError("a step that must call a tool needs at least one tool", "give the agent a tool")
    grammar.rules["root"] = seq(thought, alt(*actions, *([final] if allow_final else [])))
    return grammar.check()


_THOUGHT = re.compile(r"Thought:\s*(.*)")
_ACTION = re.compile(r"Action:\s*([A-Za-z0-9_-]+)\s*\n\s*Action Input:\s*", re.S)
_FINAL = re.compile(r"Final Answer:\s*(.*)", re.S)


def parse_step(text: str) -> Step:
    """A step from a reply: the first action if there is one (its arguments: the JSON value that
    follows, or the rest of the line), else the final answer (a reply in no format is the answer)."""
    thought = _THOUGHT.search(text)
    step = Step(thought=thought.group(1).strip() if thought else "")
    action = _ACTION.search(text)
    final = _FINAL.search(text)
    if action and (final is None or action.start() < final.start()):
        step.tool = action.group(1)
        rest = text[action.end():]
        try:
            _, end = json.JSONDecoder().raw_decode(rest)
            step.arguments = rest[:end]
        except json.JSONDecodeError:
            step.arguments = rest.split("\n", 1)[0].strip()
        return step
    if final:
        answer = final.group(1).strip()
        step.answer = answer.split("\nObservation:")[0].strip()
        return step
    stripped = _THOUGHT.sub("", text).strip() if thought and text.strip().startswith("Thought:") else text.strip()
    step.answer = stripped or text.strip()
    return step


#: one worked example per built-in tool, shown to the model as earlier turns (``example_turns``)
BUILTIN_EXAMPLES = {
    "calculator": 'Question: A shop sold 1275 apples on Monday and 980 on Tuesday. How many apples is that?\n'
                  'Action: calculator\nAction Input: {"expression": "1275 + 980"}\nObservation: 2255\n'
                  'Final Answer: 2255',
    "python": 'Question: What is the sum of the squares of 1 to 10?\nAction: python\n'
              'Action Input: {"code": "print(sum(i * i for i in range(1, 11)))"}\nObservation: 385\n'
              'Final Answer: 385',
    "search": 'Question: When was the bridge finished? Search the documents.\nAction: search\n'
              'Action Input: {"query": "bridge finished"}\nObservation: [1] (notes.txt) The bridge was finished '
              'in 1932.\nFinal Answer: 1932',
}
