"""Both directions over HTTP, against ``lmlab serve`` on a tiny random model: lmlab's agent loop in
OpenAI tool-call mode through ``EndpointModel`` (batched runs as concurrent requests), and the OpenAI
Agents SDK — a framework no one here wrote — driving the server with lmlab's calculator tool through
``openai_agents_tool``. The first call is forced with ``tool_choice`` and the server decodes it under
the tool's schema, so every call is well formed and the answer is the calculator's exact result."""

from __future__ import annotations

import asyncio
import json

import pytest
from structured_tiny import make_tiny
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from lmlab.agents import Agent, EndpointModel, calculate, run_many  # noqa: E402
from lmlab.agents.calculator import CalculatorError  # noqa: E402
from lmlab.agents.tools import calculator_tool, openai_agents_tool  # noqa: E402
from lmlab.agents.trace import read_trace  # noqa: E402
from lmlab.serve import Limits, create_app  # noqa: E402
from lmlab.serve.background import background  # noqa: E402


@pytest.fixture(scope="module")
def server():
    app = create_app(*make_tiny(), model_id="tiny", max_batch=8, limits=Limits(max_tokens=300))
    with background(app) as url:
        yield url + "/v1"


def test_lmlab_agent_in_tool_call_mode_through_lmlab_serve(server, tmp_path):
    model = EndpointModel(server, "tiny", timeout=120, concurrency=4)
    assert model.native_tools
    agent = Agent("calc", "Use the calculator.", model, tools=[calculator_tool()], mode="tools",
                  first_tool="calculator", stop_on_tool=True, max_steps=2, max_tokens=200)
    results = run_many(agent, ["What is 12 * 34?", "What is 5 + 6?", "What is 99 - 1?"],
                       [str(tmp_path / f"{i}.jsonl") for i in range(3)])
    for r in results:
        expression = json.loads(r.tool_calls[0]["arguments"])["expression"]  # decoded under the schema
        events = read_trace(r.trace)
        call = next(e for e in events if e["event"] == "model_call")
        assert call["completion_tokens"] > 0 and call["seconds"] > 0
        try:
            value = calculate(expression)
        except CalculatorError as exc:  # a random model's "9)8": the error is an observation, the run goes on
            assert r.tool_calls[0]["error"] == f"error: {exc}" and r.steps == 2, r
            continue
        assert r.status == "completed" and r.steps == 1 and len(r.tool_calls) == 1, r
        assert r.answer == value  # the tool's result is the final output
        assert [e["event"] for e in events][-2:] == ["tool_call", "run_end"]


def test_openai_agents_sdk_drives_lmlab_serve_with_lmlab_tools(server):
    sdk = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    sdk.set_tracing_disabled(True)
    calculator = openai_agents_tool(calculator_tool())
    assert calculator.name == "calculator" and calculator.params_json_schema == calculator_tool().parameters
    model = sdk.OpenAIChatCompletionsModel(model="tiny", openai_client=AsyncOpenAI(base_url=server, api_key="unused",
                                                                                  max_retries=0))
    agent = sdk.Agent(name="calc", instructions="Use the calculator.", tools=[calculator], model=model,
                      model_settings=sdk.ModelSettings(tool_choice="calculator", max_tokens=200,
                                                       parallel_tool_calls=False),
                      tool_use_behavior="stop_on_first_tool")

    async def both():
        return await asyncio.gather(*(sdk.Runner.run(agent, q, max_turns=2) for q in ("12 * 34?", "7 + 8?")))

    for result in asyncio.run(both()):
        call = next(item.raw_item for item in result.new_items if item.type == "tool_call_item")
        try:
            expected = calculate(json.loads(call.arguments)["expression"])
        except CalculatorError as exc:
            expected = f"error: {exc}"  # lmlab's error observation reaches the SDK's agent as the result
        assert result.final_output == expected
