"""Benchmark: prompting strategies, tool use, prompt injection and a peer agent framework, all with
SmolLM2-135M-Instruct (a 135M model: the absolute rates are low; the comparisons are the point).

Sections (``--sections``, all by default):

* ``strategies`` — the evaluation harness with ``--strategy`` on the same items: a fixed GSM8K test
  subset (the first ``--gsm8k`` items; direct / cot / self-consistency / pal), ARC-Challenge test
  (first ``--arc`` items; direct / zero-shot-cot / self-consistency: cot and PAL need worked
  solutions and numeric answers) and the generated tool-use set (direct / cot / pal).
* ``tools`` — the tool-use set (``lmlab.agents.problems``, ``--arith`` problems, numbers too large
  to compute in the head) answered directly (the harness's ``direct`` above) and by lmlab's agent
  with the calculator (ReAct under the step grammar, in process), with and without the injection
  defences (the defences must not break it).
* ``injection`` — the 36-case suite (``lmlab.agents.suite``; ``--suite-every k`` keeps every k-th
  scenario with its three goals): attack success without and with the defences, benign success
  with them on attacked and on clean copies (``--suite-runs`` picks the runs).
* ``frameworks`` — the OpenAI Agents SDK (``openai-agents``) driving ``lmlab serve`` as its model
  (calculator as a function tool, the first call forced, then the model answers) next to lmlab's
  own loop against the same server in OpenAI tool-call mode, on the same tool-use items.

Run: ``nice -n 10 python bench/agents.py`` (``--gsm8k 16 --arc 24 --arith 24 --samples 3``, all 36 suite
cases). On a loaded 2-core machine run one part at a time with small slices, e.g. ``--sections
strategies --gsm8k 8 --arc 8 --arith 8 --max-tokens 128`` or ``--sections injection --suite-every 3
--suite-runs with_defenses``. Prints progress on stderr; the last line is one JSON object with every
rate, the machine load and the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# this file is named agents.py: its folder must not shadow the Agents SDK's package ``agents``
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmlab.agents import Agent, Defenses, EndpointModel, LocalModel, run, run_many  # noqa: E402
from lmlab.agents.problems import arithmetic_problems, write_problem_task  # noqa: E402
from lmlab.agents.tools import calculator_tool, openai_agents_tool  # noqa: E402
from lmlab.analysis.answers import numeric_answer, same_number  # noqa: E402

EXAMPLES = [
    "Question: A school has 1320 students. Each student buys 12 pencils. How many pencils do they buy?\n"
    'Action: calculator\nAction Input: {"expression": "1320 * 12"}\nObservation: 15840\nFinal Answer: 15840',
    "Question: A shop had 5400 apples. It sold 1275 apples on Monday and 980 on Tuesday. How many apples are left?\n"
    'Action: calculator\nAction Input: {"expression": "5400 - 1275 - 980"}\nObservation: 3145\nFinal Answer: 3145',
]
INSTRUCTIONS = ("Solve the word problem. Use the calculator for the arithmetic: write one expression with the "
                "numbers of the problem, then give the number it returns as the final answer.")
NUMBER = r"-?[0-9]+(\.[0-9]+)?"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", file=sys.stderr, flush=True)


def strategies(args, lm, tok, arith_spec: str) -> dict:
    from lmlab.agents.strategies import Strategy
    from lmlab.eval.harness import evaluate_task
    from lmlab.eval.requests import RequestRunner
    from lmlab.eval.tasks import load_task

    runner = RequestRunner(lm, tok, batch_size=args.batch_size, model_id=args.model)
    plan = [("gsm8k", args.gsm8k, ["direct", "cot", "self-consistency", "pal"]),
            ("arc_challenge", args.arc, ["direct", "zero-shot-cot", "self-consistency"]),
            (arith_spec, args.arith, ["direct", "cot", "pal"])]
    out: dict = {}
    for name, limit, names in plan:
        if not limit:
            continue
        task = load_task(name, num_fewshot=args.shots if name != "arc_challenge" else None)
        key = task.spec.name
        out[key] = {"n": limit}
        for strategy in names:
            start = time.perf_counter()
            s = Strategy(strategy, samples=args.samples, temperature=0.7, max_tokens=args.max_tokens, seed=1234)
            result = evaluate_task(task, runner, limit=limit, strategy=s)
            metric = "acc" if "acc" in result["metrics"] else "exact_match"
            out[key][strategy] = {metric: round(result["metrics"][metric], 4),
                                  "stderr": round(result["metrics"][f"{metric}_stderr"], 4),
                                  "seconds": round(time.perf_counter() - start, 1)}
            log(f"{key} {strategy}: {out[key][strategy]}")
    return out


def score(results, items) -> float:
    hits = [bool(r.answer) and same_number(numeric_answer(r.answer), str(p["value"])) for r, p in zip(
        results, items, strict=True)]
    return round(sum(hits) / len(hits), 4)


def tool_agents(args, model, items, trace_dir: Path) -> dict:
    out = {}
    for label, defenses in (("calculator_agent", Defenses.off()), ("calculator_agent_defended", Defenses())):
        agent = Agent("calc", INSTRUCTIONS, model, tools=[calculator_tool()], examples=EXAMPLES, max_steps=3,
                      max_tokens=64, answer_pattern=NUMBER, defenses=defenses)
        start = time.perf_counter()
        results = run_many(agent, [p["question"] for p in items])
        out[label] = {"exact_match": score(results, items), "completed": sum(r.status == "completed" for r in results),
                      "mean_steps": round(sum(r.steps for r in results) / len(results), 2),
                      "seconds": round(time.perf_counter() - start, 1)}
        log(f"{label}: {out[label]}")
    agent = Agent("calc", INSTRUCTIONS, model, tools=[calculator_tool()], examples=EXAMPLES, max_steps=3,
                  max_tokens=64, answer_pattern=NUMBER)
    run(agent, items[0]["question"], trace=str(trace_dir / "calculator-trace.jsonl"))  # one trace for the docs
    return out


def injection(args, model) -> dict:
    from lmlab.agents.suite import cases, run_suite

    out = {}
    configs = [("without_defenses", {"defended": False}), ("with_defenses", {"defended": True}),
               ("clean_with_defenses", {"defended": True, "clean": True})]
    for label, kwargs in [c for c in configs if c[0] in args.suite_runs]:
        start = time.perf_counter()
        chosen = [c for i, c in enumerate(cases()) if (i // 3) % args.suite_every == 0]  # every k-th scenario
        result = run_suite(model, max_steps=3, max_tokens=args.suite_tokens, selected=chosen, **kwargs)
        result.pop("items")
        out[label] = {**result, "seconds": round(time.perf_counter() - start, 1)}
        log(f"injection {label}: {out[label]}")
    return out


async def _sdk_runs(base_url: str, items: list[dict], max_tokens: int) -> list[str | None]:
    import agents as sdk
    from openai import AsyncOpenAI

    sdk.set_tracing_disabled(True)

    calculator = openai_agents_tool(calculator_tool())  # the same tool, schema and errors as lmlab's agent

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=3600)
    model = sdk.OpenAIChatCompletionsModel(model="smollm2", openai_client=client)
    agent = sdk.Agent(name="calc", instructions=INSTRUCTIONS, tools=[calculator], model=model,
                      model_settings=sdk.ModelSettings(tool_choice="calculator", max_tokens=max_tokens,
                                                       temperature=0.0, parallel_tool_calls=False))

    async def one(question: str) -> str | None:
        try:
            result = await sdk.Runner.run(agent, question, max_turns=3)
            return str(result.final_output)
        except Exception as exc:  # a run the SDK gave up on (e.g. max turns) counts as a miss
            log(f"openai-agents run failed: {type(exc).__name__}: {exc}")
            return None

    return await asyncio.gather(*(one(p["question"]) for p in items))


def frameworks(args, lm, tok, items) -> dict:
    from lmlab.serve import Limits, create_app
    from lmlab.serve.background import background

    class Answer:
        def __init__(self, text):
            self.answer = text

    app = create_app(lm, tok, model_id="smollm2", max_batch=16, limits=Limits(max_tokens=512, timeout_s=3600))
    out = {}
    with background(app) as url:
        start = time.perf_counter()
        answers = asyncio.run(_sdk_runs(url + "/v1", items, args.suite_tokens))
        out["openai_agents"] = {"exact_match": score([Answer(a) for a in answers], items),
                                "finished": sum(a is not None for a in answers),
                                "seconds": round(time.perf_counter() - start, 1)}
        log(f"openai-agents through lmlab serve: {out['openai_agents']}")
        endpoint = EndpointModel(url + "/v1", "smollm2", timeout=3600, concurrency=16)
        agent = Agent("calc", INSTRUCTIONS, endpoint, tools=[calculator_tool()], mode="tools", first_tool="calculator",
                      max_steps=3, max_tokens=args.suite_tokens)
        start = time.perf_counter()
        results = run_many(agent, [p["question"] for p in items])
        out["lmlab_agent_tools_mode"] = {"exact_match": score(results, items),
                                         "completed": sum(r.status == "completed" for r in results),
                                         "seconds": round(time.perf_counter() - start, 1)}
        log(f"lmlab agent through lmlab serve: {out['lmlab_agent_tools_mode']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--sections", nargs="+", default=["strategies", "tools", "injection", "frameworks"],
                        choices=["strategies", "tools", "injection", "frameworks"])
    parser.add_argument("--gsm8k", type=int, default=16, help="GSM8K test items (the first N)")
    parser.add_argument("--arc", type=int, default=24, help="ARC-Challenge test items (the first N)")
    parser.add_argument("--arith", type=int, default=24, help="generated tool-use problems")
    parser.add_argument("--shots", type=int, default=3, help="few-shot examples for direct/cot/self-consistency")
    parser.add_argument("--samples", type=int, default=3, help="self-consistency paths")
    parser.add_argument("--max-tokens", type=int, default=160, help="tokens per reasoning")
    parser.add_argument("--suite-tokens", type=int, default=64, help="tokens per agent step (suite, frameworks)")
    parser.add_argument("--suite-every", type=int, default=1, help="only every k-th of the 12 injection scenarios, "
                        "each with its 3 goals (default 1: all 36 cases; 3: 12 cases over all three channels)")
    parser.add_argument("--suite-runs", nargs="+", default=["without_defenses", "with_defenses", "clean_with_defenses"],
                        choices=["without_defenses", "with_defenses", "clean_with_defenses"],
                        help="which suite runs (default all three; clean: the cases without their injections)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trace-dir", default=None, help="where the example trace goes (default: a temp folder)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    begin = time.perf_counter()
    model = LocalModel.load(args.model)
    lm, tok = model.lm, model.tokenizer
    trace_dir = Path(args.trace_dir or tempfile.mkdtemp(prefix="lmlab-bench-agents-"))
    result: dict = {"model": args.model, "threads": args.threads, "load_before": [round(x, 2) for x in load_before],
                    "sizes": {"gsm8k": args.gsm8k, "arc_challenge": args.arc, "arithmetic_tools": args.arith,
                              "samples": args.samples, "shots": args.shots, "max_tokens": args.max_tokens}}
    with tempfile.TemporaryDirectory() as tmp:
        spec = str(write_problem_task(tmp, n=max(args.arith, 1), seed=0))
        items = arithmetic_problems(max(args.arith, 1), seed=0)[:args.arith]
        if "strategies" in args.sections:
            result["strategies"] = strategies(args, lm, tok, spec)
        if "tools" in args.sections and args.arith:
            result["tools"] = tool_agents(args, model, items, trace_dir)
            result["trace"] = str(trace_dir / "calculator-trace.jsonl")
        if "injection" in args.sections:
            result["injection"] = injection(args, model)
        if "frameworks" in args.sections and args.arith:
            result["frameworks"] = frameworks(args, lm, tok, items)
    result["seconds"] = round(time.perf_counter() - begin, 1)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
