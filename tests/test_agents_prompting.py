"""Prompting: Jinja2 prompt templates, few-shot selection, answer extraction and voting, and every
strategy through the evaluation harness on the generated tool-use set — with a scripted model whose
right and wrong answers the scores must reflect exactly — plus ``lmlab eval task --strategy``."""

from __future__ import annotations

import json
import re

import pytest
from agents_scripted import ScriptedModel
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.agents.fewshot import ExampleSelector
from lmlab.agents.problems import write_problem_task
from lmlab.agents.strategies import Strategy, vote, worked_solution
from lmlab.agents.templates import PromptTemplate
from lmlab.analysis.answers import numeric_answer, same_number
from lmlab.core.errors import ConfigError
from lmlab.eval.harness import evaluate_task
from lmlab.eval.requests import RequestRunner
from lmlab.eval.tasks import load_task
from tests.test_cli import run


def test_prompt_template_refuses_missing_and_unknown_variables():
    t = PromptTemplate("Q: {{ question }}{% for s in shots %}\n- {{ s }}{% endfor %}", "t")
    assert t.variables == {"question", "shots"}
    assert t.render(question="why?", shots=["a", "b"]) == "Q: why?\n- a\n- b"
    with pytest.raises(ConfigError, match="needs shots"):
        t.render(question="x")
    with pytest.raises(ConfigError, match="has no variable"):
        t.render(question="x", shots=[], qestion="typo")
    with pytest.raises(ConfigError, match="does not parse at line 1"):
        PromptTemplate("{% for %}")
    with pytest.raises(ConfigError, match="has no attribute .b."):  # a missing attribute is an error too
        PromptTemplate("{{ a.b }}").render(a={})


def test_example_selection():
    pool = [{"q": "the cat sat on the mat"}, {"q": "stock prices fell sharply"}, {"q": "a dog chased the cat"},
            {"q": "interest rates and prices"}, {"q": "weather is sunny"}]
    text = lambda r: r["q"]  # noqa: E731
    assert ExampleSelector(pool, text, "fixed", 2).select("anything") == pool[:2]
    assert ExampleSelector(pool, text, "fixed", 2).select("the cat sat on the mat") == pool[1:3]  # never itself
    rnd = ExampleSelector(pool, text, "random", 3, seed=7)
    assert rnd.select("q1") == ExampleSelector(pool, text, "random", 3, seed=7).select("q1")
    assert len({tuple(map(id, rnd.select(f"q{i}"))) for i in range(10)}) > 1
    near = ExampleSelector(pool, text, "bm25", 2).select("prices of stock")
    assert near[-1] == pool[1] and near[0] == pool[3]  # most similar last, next to the query
    from lmlab.retrieval.encoders import HashingEncoder

    dense = ExampleSelector(pool, text, "dense", 1, encoder=HashingEncoder()).select("the cat chased a dog")
    assert dense == [pool[2]]
    with pytest.raises(Exception, match="pool has 5"):
        ExampleSelector(pool, text, "fixed", 6)


def test_answers_votes_and_solutions():
    assert numeric_answer("so 3 + 4 = 7. The answer is 1,234.") == "1234"
    assert numeric_answer("first 12 then 30") == "30" and numeric_answer("first 12 then 30", last=False) == "12"
    assert numeric_answer("no digits") == "[invalid]"
    assert same_number("18.0", "18") and not same_number("18", "19")
    assert vote(["7", "[invalid]", "8", "7.0", "8"]) == "7" and vote(["[invalid]"]) == "[invalid]"


@pytest.fixture(scope="module")
def arith(tmp_path_factory):
    spec = write_problem_task(tmp_path_factory.mktemp("arith"), n=6, seed=5, fewshot=8)
    task = load_task(str(spec))
    solution, answer = worked_solution(task, task.items[0])
    assert answer == task.items[0]["value"] and "=" in solution and "####" not in solution
    return task


@pytest.fixture(scope="module")
def runner():
    from structured_tiny import make_tiny

    lm, tok = make_tiny()
    return RequestRunner(lm, tok, batch_size=4)


def scripted(task, right: set[int], kind: str):
    """Answers the problems whose index is in ``right`` correctly, the others off by one."""
    by_question = {p["question"]: (i, p) for i, p in enumerate(task.items)}

    def policy(request):
        last_question = re.findall(r"Question: (.*)", request.prompt)[-1]
        i, p = by_question[last_question]
        value = int(p["value"]) + (0 if i in right else 1)
        if kind == "pal":
            return f"def solution():\n    return {value}" if i in right else "def solution():\n    import sys; sys.exit(0)"
        if kind == "cot":
            return f" We compute it. The answer is {value}."
        if kind == "extract":
            return f" {value}" if request.prompt.endswith("is") else " Let me compute."
        return f" {value}"

    return ScriptedModel(policy)


@pytest.mark.parametrize("name, kind", [("direct", "direct"), ("cot", "cot"), ("pal", "pal"),
                                        ("zero-shot-cot", "extract")])
def test_strategies_score_what_the_model_says(arith, runner, name, kind):
    model = scripted(arith, {0, 2, 3}, kind)
    result = evaluate_task(arith, runner, strategy=Strategy(name, model=model, selection="random"))
    assert result["strategy"] == name and result["config"]["strategy"]["name"] == name
    assert [i["exact_match"] for i in result["items"]] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    if name == "pal":
        assert result["items"][1]["status"] == "failed"  # sys.exit(0) before the answer is no answer
    if name in ("direct", "cot"):
        assert all("Question:" in r.prompt for r in model.requests)
        shots = model.requests[0].prompt.count("Question:") - 1
        assert shots == arith.spec.num_fewshot


def test_self_consistency_takes_the_majority_of_shared_prefill_samples(arith, runner):
    answers = iter([])

    def policy(request):
        nonlocal answers
        p = next(p for p in arith.items if p["question"] in request.prompt.split("Question: ")[-1])
        right, wrong = p["value"], str(int(p["value"]) + 5)
        sample = next(answers, None)
        if sample is None:
            answers = iter([right, wrong, right])
            sample = next(answers)
        return f" The answer is {sample}."

    model = ScriptedModel(policy)
    result = evaluate_task(arith, runner, limit=2, strategy=Strategy("self-consistency", samples=3, model=model))
    assert [i["exact_match"] for i in result["items"]] == [1.0, 1.0]
    assert all(r.n == 3 and r.temperature == 0.7 for r in model.requests)  # one request: n samples, one prefill
    assert len(result["items"][0]["answers"]) == 3


def test_least_to_most_answers_subquestions_in_order(arith, runner):
    def policy(request):
        if request.prompt.endswith("line:\n1."):
            return " How many in one part?\n2. How many in all?"
        return " 42" if request.prompt.rstrip().endswith("A:") else ""

    model = ScriptedModel(policy)
    result = evaluate_task(arith, runner, limit=1, strategy=Strategy("least-to-most", model=model))
    subs = result["items"][0]["subquestions"]
    assert [q for q, _ in subs][:2] == ["How many in one part?", "How many in all?"] and len(subs) == 3
    assert "Q: How many in one part?\nA: 42" in model.requests[-1].prompt


def test_strategies_refuse_what_does_not_apply(tmp_path, runner):
    items = tmp_path / "mc.jsonl"
    items.write_text("".join(json.dumps({"question": f"q{i}", "choices": ["a", "b"], "gold": 0}) + "\n"
                             for i in range(2)))
    spec = tmp_path / "mc.json"
    spec.write_text(json.dumps({"name": "mc", "type": "multiple_choice", "data": "mc.jsonl",
                                "prompt": "Question: {question}\nAnswer:"}))
    task = load_task(str(spec))
    for name in ("pal", "cot", "least-to-most"):
        with pytest.raises(ConfigError, match="multiple choice"):
            evaluate_task(task, runner, strategy=Strategy(name))
    model = ScriptedModel(lambda r: " Both look fine.")
    result = evaluate_task(task, runner, strategy=Strategy("zero-shot-cot", model=model, max_tokens=8))
    assert result["n"] == 2 and {i["prediction"] for i in result["items"]} <= {0, 1}
    assert "A. a\nB. b\nAnswer: Let's think step by step." in model.requests[0].prompt


def test_cli_eval_task_with_a_strategy(capsys, tmp_path):
    from sft_tiny import save_tiny

    model = save_tiny(tmp_path / "tiny", context_length=2048)  # the PAL prompt is ~1100 characters
    spec = write_problem_task(tmp_path / "arith", n=2, seed=1, fewshot=4)
    code, out, err = run(capsys, "eval", "task", str(spec), "--model", str(model), "--strategy", "pal",
                         "--max-new-tokens", "8", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["strategy"] == "pal" and result["results"]["arithmetic_tools"]["n"] == 2
    assert result["config"]["arithmetic_tools"]["strategy"]["name"] == "pal"
    code, _, err = run(capsys, "eval", "task", str(spec), "--tasks", str(spec), "--model", str(model))
    assert code == 1 and "name the tasks once" in err
