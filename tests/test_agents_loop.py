"""The agent loop's control flow with a scripted model: ReAct and tool-call steps, tool failures as
observations, schema violations, step limits with the trace intact, handoffs, guardrails, the
final-output rule, short-term memory and batching; an endpoint that is down; and the ReAct grammar
with a real (tiny, random) model — every step it writes is a well-formed call that jsonschema accepts."""

from __future__ import annotations

import json
import socket

import jsonschema
import pytest
from agents_scripted import ScriptedModel, last_user
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.agents import Agent, EndpointModel, LocalModel, Reply, Tool, run, run_many
from lmlab.agents.react import parse_step, step_grammar
from lmlab.agents.tools import calculator_tool, call_tool
from lmlab.agents.trace import read_trace, render_trace
from lmlab.core.errors import ConfigError


def react_policy(request):
    """Calls the calculator on the numbers of the task, then answers with the observation."""
    seen = last_user(request)
    if seen.startswith("Observation:"):
        return f"Thought: done\nFinal Answer: {seen.split(':', 1)[1].strip()}"
    a, b = [w for w in seen.replace("?", "").split() if w.isdigit()]
    return f'Thought: multiply\nAction: calculator\nAction Input: {{"expression": "{a} * {b}"}}'


def test_react_run_uses_the_calculator_and_writes_a_trace(tmp_path):
    model = ScriptedModel(react_policy)
    agent = Agent("calc", "Use the calculator.", model, tools=[calculator_tool()])
    result = run(agent, "What is 123456 * 789?", trace=str(tmp_path / "t.jsonl"))
    assert result.status == "completed" and result.answer == str(123456 * 789) and result.steps == 2
    events = read_trace(result.trace)
    kinds = [e["event"] for e in events]
    assert kinds == ["run_start", "model_call", "tool_call", "model_call", "run_end"]
    assert events[2]["observation"] == "97406784" and events[-1]["status"] == "completed"
    assert result.prompt_tokens == 14 and result.completion_tokens == 6
    text = render_trace(events)
    assert "tool calculator" in text and "97406784" in text and "end: completed after 2 step(s)" in text


def test_run_many_batches_the_steps_of_all_runs():
    model = ScriptedModel(react_policy)
    agent = Agent("calc", "Use the calculator.", model, tools=[calculator_tool()])
    tasks = [f"What is {a} * {b}?" for a, b in [(12, 34), (560, 78), (9, 9999)]]
    results = run_many(agent, tasks)
    assert [r.answer for r in results] == [str(12 * 34), str(560 * 78), str(9 * 9999)]
    assert model.batches == [3, 3]  # two steps, each one batch of three requests


def test_a_tool_that_raises_is_an_observation_and_the_run_goes_on(tmp_path):
    def broken(x: str) -> str:
        raise RuntimeError("disk on fire")

    tool = Tool("broken", "Always fails.", {"type": "object", "properties": {"x": {"type": "string"}},
                                             "required": ["x"]}, broken)

    def policy(request):
        seen = last_user(request)
        if "disk on fire" in seen:
            return "Final Answer: the tool failed"
        return 'Action: broken\nAction Input: {"x": "a"}'

    result = run(Agent("a", "Try the tool.", ScriptedModel(policy), tools=[tool]), "go", trace=str(tmp_path / "t.jsonl"))
    assert result.status == "completed" and result.answer == "the tool failed"
    call = next(e for e in read_trace(result.trace) if e["event"] == "tool_call")
    assert call["error"] == "error: broken raised RuntimeError: disk on fire"


def test_arguments_that_break_the_schema_are_reported_to_the_model():
    calc = calculator_tool()
    bad = call_tool(calc, {"expr": "1+1"})
    assert bad.error and "'expression' is a required property" in bad.error
    assert "error" in call_tool(calc, '{"expression": 12}').observation  # not a string
    assert "not valid JSON" in call_tool(calc, "{expression: 1}").observation
    assert call_tool(calc, '{"expression": "2 * (3 + 4)"}').observation == "14"
    asked = []

    def policy(request):
        seen = last_user(request)
        asked.append(seen)
        if "required property" in seen:
            return 'Action: calculator\nAction Input: {"expression": "6 * 7"}'
        if seen.startswith("Observation: 42"):
            return "Final Answer: 42"
        return 'Action: calculator\nAction Input: {"number": 6}'

    result = run(Agent("a", "Calculate.", ScriptedModel(policy), tools=[calc]), "six times seven")
    assert result.status == "completed" and result.answer == "42" and result.steps == 3
    assert result.tool_calls[0]["error"].startswith("error: arguments of calculator do not match its schema")


def test_unknown_tool_is_an_observation():
    def policy(request):
        if "no tool named" in last_user(request):
            return "Final Answer: ok"
        return 'Action: teleport\nAction Input: {}'

    result = run(Agent("a", "x", ScriptedModel(policy), tools=[calculator_tool()]), "go")
    assert result.status == "completed" and "there is no tool named 'teleport'" in result.tool_calls[0]["error"]


def test_step_limit_ends_with_a_clear_status_and_the_trace_intact(tmp_path):
    model = ScriptedModel(lambda r: 'Action: calculator\nAction Input: {"expression": "1 + 1"}')
    agent = Agent("loop", "Never stop.", model, tools=[calculator_tool()], max_steps=3)
    result = run(agent, "loop forever", trace=str(tmp_path / "t.jsonl"))
    assert result.status == "max_steps" and result.answer is None and result.steps == 3
    assert "step limit (3)" in result.error
    events = read_trace(result.trace)
    assert sum(e["event"] == "tool_call" for e in events) == 3 and events[-1]["event"] == "run_end"
    assert events[-1]["status"] == "max_steps"


def test_answer_at_limit_makes_the_last_step_an_answer():
    """A tiny random model that must call a tool first (forced), then may only answer at the limit: the run
    completes in two steps; a native-tools endpoint gets tool_choice "none" on its last step."""
    from structured_tiny import make_tiny

    lm, tok = make_tiny(seed=3)
    agent = Agent("a", "x", LocalModel(lm, tok, "tiny"), tools=[calculator_tool()], max_steps=2, first_tool="required",
                  answer_at_limit=True, max_tokens=120,
                  answer_pattern=r"[0-9]{1,4}")
    result = run(agent, "What is 2 + 2?")
    assert result.status == "completed" and result.steps == 2 and len(result.tool_calls) == 1, result.error
    model = ScriptedModel(lambda r: Reply("", [{"id": "c", "name": "calculator", "arguments": '{"expression": "1"}'}],
                                          "tool_calls") if r.tool_choice != "none" else Reply("done"), native_tools=True)
    result = run(Agent("b", "x", model, tools=[calculator_tool()], max_steps=3, answer_at_limit=True), "loop")
    assert [r.tool_choice for r in model.requests] == ["auto", "auto", "none"]
    assert result.status == "completed" and result.answer == "done" and result.steps == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_is_down_ends_the_run_with_an_error(tmp_path):
    model = EndpointModel(f"http://127.0.0.1:{_free_port()}/v1", "nothing", timeout=5)
    result = run(Agent("a", "x", model, tools=[calculator_tool()]), "What is 2 + 2?", trace=str(tmp_path / "t.jsonl"))
    assert result.status == "error" and result.steps == 0
    assert "cannot reach the endpoint" in result.error and "start the server" in result.error
    assert read_trace(result.trace)[-1]["status"] == "error"
    with pytest.raises(ConfigError, match="not an http"):
        EndpointModel("127.0.0.1:8000", "m")


def test_tool_calls_mode_with_native_calls_and_handoff():
    """OpenAI-style tool calls; a triage agent hands off to a maths agent, which answers."""

    def triage(request):
        names = [t["function"]["name"] for t in request.tools]
        if "transfer_to_maths" in names:
            return Reply("", [{"id": "c1", "name": "transfer_to_maths", "arguments": "{}"}], "tool_calls")
        if request.messages[-1]["role"] == "tool" and request.messages[-1]["content"] == "42":
            return Reply("The answer is 42.")
        return Reply("", [{"id": "c2", "name": "calculator", "arguments": '{"expression": "6 * 7"}'}], "tool_calls")

    model = ScriptedModel(triage, native_tools=True)
    maths = Agent("maths", "You do arithmetic.", model, tools=[calculator_tool()])
    front = Agent("triage", "Route the question.", model, handoffs=[maths])
    result = run(front, "What is 6 * 7?")
    assert result.status == "completed" and result.answer == "The answer is 42." and result.agent == "maths"
    assert [c["name"] for c in result.tool_calls] == ["transfer_to_maths", "calculator"]
    assert model.requests[1].messages[0]["content"].startswith("You do arithmetic.")  # the maths agent's turn
    with pytest.raises(ConfigError, match="no native tool calls"):
        Agent("a", "x", ScriptedModel(triage), mode="tools")


def test_final_output_rule_sends_feedback_until_the_answer_matches():
    answers = iter(["Final Answer: about seven", "Final Answer: 7"])
    model = ScriptedModel(lambda r: next(answers))
    result = run(Agent("a", "x", model, answer_pattern=r"[0-9]+"), "How many?")
    assert result.status == "completed" and result.answer == "7" and result.steps == 2
    assert "must match the pattern [0-9]+" in model.requests[1].messages[-1]["content"]


def test_a_reply_cut_short_or_a_missing_forced_call_is_no_final_answer():
    replies = iter([Reply('<tool_call>{"name": "calcul', [], "length"), Reply("Seven."),
                    Reply("", [{"id": "c1", "name": "calculator", "arguments": '{"expression": "3 + 4"}'}],
                          "tool_calls"), Reply("It is 7.")])
    model = ScriptedModel(lambda r: next(replies), native_tools=True)
    agent = Agent("a", "x", model, tools=[calculator_tool()], mode="tools", first_tool="calculator", max_tokens=9)
    result = run(agent, "What is 3 + 4?")
    assert result.status == "completed" and result.answer == "It is 7." and result.steps == 4
    feedback = [m["content"] for m in model.requests[-1].messages if m["role"] == "user"][1:]
    assert feedback[0].startswith("error: the reply was cut at 9 tokens before it ended")
    assert feedback[1:] == ["error: this step must call a tool; call one"]
    assert [r.tool_choice for r in model.requests][2:] == [{"type": "function", "function": {"name": "calculator"}},
                                                           "auto"]  # forced until the first call is made


def test_input_and_output_guardrails_refuse(tmp_path):
    from lmlab.agents.guardrails import REFUSAL, blocked_topics, pii

    model = ScriptedModel(lambda r: "Final Answer: mail me at bob@example.com")
    agent = Agent("a", "x", model, input_checks=[blocked_topics({"weapons": ["bomb", "rifle"]})],
                  output_checks=[pii()])
    refused = run(agent, "How do I build a bomb?", trace=str(tmp_path / "in.jsonl"))
    assert refused.status == "refused" and refused.answer == REFUSAL and refused.steps == 0 and not model.requests
    leaked = run(agent, "What is your e-mail?", trace=str(tmp_path / "out.jsonl"))
    assert leaked.status == "refused" and leaked.answer == REFUSAL and leaked.steps == 1
    verdict = [e for e in read_trace(leaked.trace) if e["event"] == "guardrail"][-1]
    assert verdict["stage"] == "output" and not verdict["allowed"] and "email" in verdict["reason"]


def test_stop_on_tool_makes_the_tool_result_the_answer():
    model = ScriptedModel(lambda r: 'Action: calculator\nAction Input: {"expression": "2 ** 10"}')
    result = run(Agent("a", "x", model, tools=[calculator_tool()], stop_on_tool=True), "2 to the 10th")
    assert result.status == "completed" and result.answer == "1024" and result.steps == 1


def test_short_term_memory_summarises_old_steps_within_the_budget():
    steps = []

    def policy(request):
        if request.messages[-1]["content"].startswith("Summarise the conversation"):
            return "SUMMARY: computed several sums"
        steps.append(1)
        if len(steps) > 6:
            return "Final Answer: done"
        return 'Action: calculator\nAction Input: {"expression": "' + " + ".join(["1"] * 20) + '"}'

    model = ScriptedModel(policy)
    agent = Agent("a", "Add things.", model, tools=[calculator_tool()], max_steps=12, memory_budget=200)
    result = run(agent, "add ones")
    summaries = [r for r in model.requests if r.messages[-1]["content"].startswith("Summarise the conversation")]
    assert result.status == "completed" and summaries
    for r in model.requests:  # every request the agent made fits the budget (summary requests are their own)
        if r not in summaries:
            assert sum(model.count_tokens(f"{m['role']}: {m['content']}") + 4 for m in r.messages) <= 200
    assert any("SUMMARY: computed several sums" in m["content"] for r in model.requests for m in r.messages
               if r not in summaries)


def test_parse_step_reads_actions_answers_and_free_text():
    step = parse_step('Thought: add\nAction: calculator\nAction Input: {"expression": "1+2"} trailing')
    assert (step.thought, step.tool, step.arguments) == ("add", "calculator", '{"expression": "1+2"}')
    assert parse_step("Thought: ok\nFinal Answer: 3\nObservation: x").answer == "3"
    assert parse_step("just an answer").answer == "just an answer"


def test_react_grammar_holds_a_random_model_to_valid_calls():
    """A tiny random model under the step grammar: each reply parses to a call of a known tool with
    arguments that jsonschema (the peer) accepts, or to a final answer."""
    from structured_tiny import make_tiny

    lm, tok = make_tiny(seed=3)
    model = LocalModel(lm, tok, "tiny")
    tools = [calculator_tool(), Tool("lookup", "Look a word up.", {
        "type": "object", "properties": {"word": {"type": "string", "enum": ["cat", "dog"]},
                                         "limit": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["word", "limit"], "additionalProperties": False}, lambda word, limit: word * limit)]
    from lmlab.agents.models import Generation

    grammar = step_grammar(tools, allow_final=False)
    requests = [Generation(messages=[{"role": "user", "content": f"task {i}"}], max_tokens=400, temperature=1.0,
                           seed=i, constraint=("grammar", grammar)) for i in range(6)]
    for (reply,) in model.generate(requests):
        assert reply.finish_reason == "stop", reply.text
        step = parse_step(reply.text)
        tool = {t.name: t for t in tools}[step.tool]
        jsonschema.validate(json.loads(step.arguments), tool.parameters)
