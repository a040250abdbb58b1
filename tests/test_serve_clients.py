"""Clients no one here wrote, against ``lmlab serve`` on a tiny model: LangChain's ``ChatOpenAI``
(``bind_tools``, ``with_structured_output``), the OpenAI Agents SDK completing a calculator tool call,
and schemathesis fuzzing the published OpenAPI document (no 5xx, no response that breaks it).
The tool calls are forced with ``tool_choice``, so constrained decoding makes the test deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Literal

import pydantic
import pytest
from structured_tiny import make_tiny
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

openai = pytest.importorskip("openai")

from lmlab.serve import Limits, create_app  # noqa: E402
from lmlab.serve.background import background  # noqa: E402


@pytest.fixture(scope="module")
def server():
    app = create_app(*make_tiny(), model_id="tiny", max_batch=8, limits=Limits(max_tokens=300, max_body_bytes=50_000))
    with background(app) as url:
        yield url


def calculate(op: str, a: int, b: int) -> float:
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / b if b else float("nan")}[op]


def test_langchain_bind_tools_and_structured_output(server):
    pytest.importorskip("langchain_openai")
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def calculator(op: Literal["add", "sub", "mul", "div"], a: int, b: int) -> float:
        """Arithmetic on two integers."""
        return calculate(op, a, b)

    llm = ChatOpenAI(model="tiny", base_url=server + "/v1", api_key="unused", max_retries=0, seed=1, max_tokens=200)
    message = llm.bind_tools([calculator], tool_choice="calculator").invoke("What is 6 times 7?")
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["name"] == "calculator" and set(call["args"]) == {"op", "a", "b"}
    result = calculator.invoke(call)  # the ToolMessage LangChain builds from the call
    assert float(result.content) == pytest.approx(calculate(**call["args"]), nan_ok=True)

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=12)
        age: int
        nickname: str | None = None

    for method in ("json_schema", "function_calling"):  # json_mode promises JSON, not the schema
        person = llm.with_structured_output(Person, method=method).invoke("Invent a person as JSON.")
        assert isinstance(person, Person), method


def test_openai_agents_sdk_completes_a_calculator_call(server):
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    agents.set_tracing_disabled(True)
    calls = []

    @agents.function_tool
    def calculator(op: Literal["add", "sub", "mul", "div"], a: int, b: int) -> str:
        """Arithmetic on two integers."""
        calls.append((op, a, b))
        return str(calculate(op, a, b))

    model = agents.OpenAIChatCompletionsModel(model="tiny", openai_client=AsyncOpenAI(
        base_url=server + "/v1", api_key="unused", max_retries=0))
    agent = agents.Agent(name="calc", instructions="Use the calculator.", tools=[calculator], model=model,
                         model_settings=agents.ModelSettings(tool_choice="calculator", max_tokens=200, seed=2,
                                                                   parallel_tool_calls=False),
                         tool_use_behavior="stop_on_first_tool")
    result = agents.Runner.run_sync(agent, "What is 6 times 7?", max_turns=3)
    assert len(calls) == 1
    assert result.final_output == str(calculate(*calls[0]))


def test_schemathesis_finds_no_5xx_and_no_response_outside_the_document(server):
    pytest.importorskip("schemathesis")
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", server + "/openapi.json",
                          "--max-examples", "5", "--checks", checks, "--phases", "examples,coverage,fuzzing",
                          "--no-color", "--request-timeout", "60", "--workers", "1", "--seed", "1"],
                         capture_output=True, text=True, timeout=600)
    summary = run.stdout[-3000:] + run.stderr[-2000:]
    assert run.returncode == 0, summary
    assert "passed" in summary and json.dumps("failed") not in summary
