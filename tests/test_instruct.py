"""Instruction data: Self-Instruct's filters and parsers, Evol-Instruct's elimination rules, the
multitask mixing rates (against hand computations), and the pipelines end to end — on a scripted
model (exact counts), on a tiny random model through the engine, and through ``lmlab serve``'s
OpenAI-compatible API."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
from structured_tiny import make_tiny
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.agents.models import LocalModel, Reply
from lmlab.core.errors import ConfigError, DataError
from lmlab.data.mixture import mixing_rates, mixture_counts, sample_mixture
from lmlab.instruct import (
    NoveltyPool,
    evol_instruct,
    heuristic_reason,
    read_seed_tasks,
    self_instruct,
)
from lmlab.instruct.evol import OPERATIONS, clean_evolved, elimination_reason, evolution_prompt
from lmlab.instruct.flan import (
    TASKS,
    Template,
    check_template,
    load_tasks,
    multitask_mixture,
    render_record,
)
from lmlab.instruct.self_instruct import (
    SeedTask,
    instance_prompt,
    instruction_prompt,
    parse_instance,
    parse_instructions,
)
from lmlab.train.sft import conversation

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SEEDS_FILE = DATA / "instructions" / "self_instruct_seed_tasks.jsonl"


# --- filters --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, reason", [
    ("Write a poem.", "too_short"),
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the image below in detail.", "unsuitable_keyword"),
    ("Plot the sales numbers by month.", "unsuitable_keyword"),
    ("Tell me how to go to the station from here.", "unsuitable_keyword"),
    ("Write a program that sorts numbers quickly.", "write_a_program"),
    ("- List three kinds of birds please.", "starts_with_punctuation"),
    ("Écrivez un poème sur la mer aujourd'hui.", "non_english"),
    ("Summarize the following article in two sentences.", None),
    ("Explain why mapping functions are useful in maths.", None),  # 'mapping' is not the word 'map'
])
def test_self_instruct_heuristics(text, reason):
    assert heuristic_reason(text) == reason


def test_rouge_l_to_the_nearest_instruction_by_hand_and_against_rouge_score():
    pool = NoveltyPool()
    pool.extend(["Write a poem about the sea.", "Give three tips for staying healthy."])
    score, match = pool.nearest("Write a short poem about the ocean")
    # LCS(write a poem about the sea, write a short poem about the ocean) = 5 tokens; F = 2·5/(6+7)
    assert match == "Write a poem about the sea." and score == pytest.approx(10 / 13, abs=1e-12)
    assert not pool.is_novel(score) and pool.is_novel(0.69)

    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rng = random.Random(0)
    words = "a the write list explain poem sea three tips story short give why how of".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(60)]
    pool = NoveltyPool()
    pool.extend(texts[:40])
    for text in texts[40:]:  # the length bound that skips pairs never changes the maximum
        expected = max(scorer.score(other, text)["rougeL"].fmeasure for other in texts[:40])
        assert pool.nearest(text)[0] == pytest.approx(expected, abs=1e-12)


# --- parsers -------------------------------------------------------------------------------------
def test_instruction_prompt_and_parser():
    prompt = instruction_prompt(["Write a poem.", "Name a fruit."])
    assert prompt == "Come up with a series of tasks:\nTask 1: Write a poem.\nTask 2: Name a fruit.\nTask 3:"
    reply = " write a haiku about\n rain.\nTask 4: List three red fruits.\nTask 5 :  Explain gravity\n\nTask 6: x"
    assert parse_instructions(reply) == ["Write a haiku about rain.", "List three red fruits.", "Explain gravity"]
    assert parse_instructions(reply, truncated=True) == ["Write a haiku about rain.", "List three red fruits."]
    assert parse_instructions("") == []


def test_instance_parser_input_first_and_output_first():
    assert parse_instance("Input: 2 + 2\nOutput: 4\n\nTask: next", False) == ("2 + 2", "4")
    assert parse_instance("Output: A short poem.\nOutput: another", False) == ("", "A short poem.")
    assert parse_instance("Just the answer here.\n\nmore", False) == ("", "Just the answer here.")
    assert parse_instance("Class label: Positive\nInput: I loved it.\n\n", True) == ("I loved it.", "Positive")
    assert parse_instance("Input: no label", True) is None
    seed = SeedTask("Classify the sentiment.", (("I loved it.", "Positive"),), True)
    assert instance_prompt("Is it spam?", [seed], True).endswith(
        "Task: Classify the sentiment.\nClass label: Positive\nInput: I loved it.\n\nTask: Is it spam?\n")


def test_seed_file_errors_name_the_line_and_the_field(tmp_path):
    path = tmp_path / "seeds.jsonl"
    good = {"instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}], "is_classification": False}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "No instances"}) + "\n")
    with pytest.raises(DataError, match=r"seeds\.jsonl:2 has no field 'instances'"):
        read_seed_tasks(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "instances": [{"input": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"seeds\.jsonl:2: instances\[0\] has no field 'output'"):
        read_seed_tasks(path)


@pytest.mark.skipif(not SEEDS_FILE.exists(), reason="shared instructions data set missing")
def test_the_shared_seed_tasks_read():
    seeds = read_seed_tasks(SEEDS_FILE)
    assert len(seeds) == 175 and sum(s.is_classification for s in seeds) == 26  # per the data set's README


# --- Evol-Instruct ---------------------------------------------------------------------------------
def test_evolution_prompts_and_elimination_rules():
    assert set(OPERATIONS) == {"constraints", "deepen", "concretize", "reasoning", "complicate_input", "breadth"}
    assert "#Created Prompt#:" in evolution_prompt("Name a fruit.", "breadth")
    assert evolution_prompt("Name a fruit.", "deepen").endswith("#The Given Prompt#:\nName a fruit.\n#Rewritten Prompt#:\n")
    assert clean_evolved("#Rewritten Prompt#: Name a red fruit.") == "Name a red fruit."
    answer = "Apples are red, and strawberries are too."
    assert elimination_reason("Name a fruit.", "Name a red fruit that grows on trees.", answer) is None
    assert elimination_reason("Name a fruit.", "name a FRUIT", answer) == "no_information_gain"
    assert elimination_reason("Name a fruit.", "Rewrite the given prompt with fruit.", answer) == "copies_prompt_words"
    assert elimination_reason("Name a fruit.", "Name a red fruit.", "Sorry, I cannot.") == "sorry_short_response"
    assert elimination_reason("Name a fruit.", "Name a red fruit.", "the, of it !") == "punctuation_or_stopwords_response"
    assert elimination_reason("Name a fruit.", "Name a red fruit.", "sorry " + "word " * 90) is None


# --- mixing ----------------------------------------------------------------------------------------
def test_mixing_rates_against_hand_computation():
    sizes = {"a": 100, "b": 1000, "c": 10000}
    capped = mixing_rates(sizes, cap=2000)  # min(n, K) = 100, 1000, 2000
    assert capped == pytest.approx({"a": 100 / 3100, "b": 1000 / 3100, "c": 2000 / 3100}, abs=1e-15)
    hot = mixing_rates(sizes, cap=2000, temperature=2.0)  # sqrt of the capped sizes
    z = 10 + math.sqrt(1000) + math.sqrt(2000)
    assert hot == pytest.approx({"a": 10 / z, "b": math.sqrt(1000) / z, "c": math.sqrt(2000) / z}, abs=1e-15)
    assert mixing_rates(sizes) == pytest.approx({"a": 100 / 11100, "b": 1000 / 11100, "c": 10000 / 11100})
    assert mixing_rates(sizes, temperature=1e9)["a"] == pytest.approx(1 / 3, abs=1e-6)  # T → ∞: uniform
    assert mixing_rates(sizes, rates={"a": 1, "b": 1, "c": 2}) == {"a": 0.25, "b": 0.25, "c": 0.5}
    # 10 rows: exact 0.32, 3.23, 6.45 → floors 0, 3, 6; the one left goes to the largest remainder (c)
    assert mixture_counts(capped, 10) == {"a": 0, "b": 3, "c": 7}


def test_sample_mixture_counts_repeats_and_seed():
    tasks = {"small": list(range(3)), "big": list(range(100, 200))}
    mixed = sample_mixture(tasks, {"small": 7, "big": 5}, seed=1)
    small = [x for t, x in mixed if t == "small"]
    assert len(small) == 7 and sorted(small[:0]) == [] and all(small.count(v) in (2, 3) for v in range(3))
    assert sum(t == "big" for t, _ in mixed) == 5 and len({x for t, x in mixed if t == "big"}) == 5
    assert mixed == sample_mixture(tasks, {"small": 7, "big": 5}, seed=1)
    assert mixed != sample_mixture(tasks, {"small": 7, "big": 5}, seed=2)


@pytest.mark.parametrize("rates, message", [
    ({"a": 1.0, "b": 0.0}, "must be positive"),
    ({"a": 1.0, "b": -2.0}, "must be positive"),
    ({"a": 1.0, "b": float("nan")}, "must be positive"),
    ({"a": 1.0}, r"leave out task\(s\) \['b'\]"),
    ({"a": 1.0, "b": 1.0, "z": 1.0}, "not mixed"),
])
def test_bad_mixing_rates_are_refused(rates, message):
    with pytest.raises(ConfigError, match=message):
        mixing_rates({"a": 5, "b": 5}, rates=rates)


def test_templates_check_their_fields():
    with pytest.raises(ConfigError, match=r"task sst2 uses field\(s\) \['sentence'\]"):
        check_template("sst2", Template("Review: {sentence}", "{label}"), TASKS["sst2"].fields)
    with pytest.raises(ConfigError, match=r"task gsm8k uses field\(s\) \['solution'\]"):
        load_tasks(["gsm8k"], {"gsm8k": [Template("{question}", "{solution}")]})
    row = render_record("t", Template("Q: {q}", "A: {a}", shots=1), {"q": "2+2", "a": "4"}, [{"q": "1+1", "a": "2"}])
    assert row == {"instruction": "Q: 1+1\nA: 2\n\nQ: 2+2", "input": "", "output": "A: 4"}


@pytest.mark.skipif(not (DATA / "sst2").exists() or not (DATA / "gsm8k").exists(), reason="shared data sets missing")
def test_multitask_mixture_on_the_shared_data(tmp_path):
    rows, summary = multitask_mixture(["sst2", "gsm8k"], 40, cap=3000, temperature=1.0, seed=3)
    assert summary["sizes"]["gsm8k"] == 7473 and summary["counts"] == {"sst2": 20, "gsm8k": 20}  # both capped
    assert len(rows) == 40 and all(conversation(r) for r in rows)  # what lmlab finetune reads
    sst2 = [r for r in rows if r["output"] in ("negative", "positive")]
    assert len(sst2) == 20
    assert sum(sum(c) for c in summary["template_counts"].values()) == 40
    assert rows == multitask_mixture(["sst2", "gsm8k"], 40, cap=3000, temperature=1.0, seed=3)[0]


# --- pipelines ---------------------------------------------------------------------------------------
TOPICS = ["Explain how tides work.", "Suggest a name for a bakery in Paris.", "Translate hello into Spanish.",
          "Summarise the causes of the First World War."]


class ScriptedModel:
    """Answers each kind of synthesis prompt with fixed text, so the pipeline's counts are exact."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, requests):
        self.calls.append(len(requests))
        out = []
        for r in requests:
            prompt = r.prompt if r.prompt is not None else r.messages[-1]["content"]
            if prompt.startswith("Come up with a series"):
                text = (" Write a limerick about a cat named Tom.\nTask 10: Draw a picture of a house.\n"
                        f"Task 11: {TOPICS[r.seed % 4]}\nTask 12: Name")
                reason = "length"
            elif prompt.startswith("Can the following"):
                text = " Yes" if "limerick" in prompt.rsplit("Task:", 1)[1] else " No"
                reason = "stop"
            elif prompt.startswith("Given the classification"):
                text, reason = "Class label: funny\nInput: There once was a cat named Tom.", "stop"
            else:
                text, reason = "Output: The moon pulls the sea.", "stop"
            out.append([Reply(text, finish_reason=reason)])
        return out


def _small_seeds(tmp_path: Path) -> list[SeedTask]:
    rows = [{"instruction": f"Give one example of a {w}.", "instances": [{"input": "", "output": w}],
             "is_classification": i % 2 == 0} for i, w in enumerate(["fruit", "tree", "bird", "fish", "car", "boat",
                                                                      "cup", "hat", "coin"])]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_seed_tasks(path)


def test_self_instruct_pipeline_counts_on_a_scripted_model(tmp_path):
    model = ScriptedModel()
    result = self_instruct(model, _small_seeds(tmp_path), 3, batch_size=2, seed=0)
    counts = result.counts
    # reply 1: limerick kept, picture (keyword), topic 0 kept, "Name" dropped (the reply hit its token limit);
    # reply 2: limerick again (not novel: ROUGE-L 1), picture, topic 1 kept — three kept, so no second batch
    assert dict(counts) == {"candidates": 6, "kept_instructions": 3, "rejected_unsuitable_keyword": 2,
                            "rejected_not_novel": 1, "kept_rows": 3, "classification_rows": 1,
                            "input_first_rows": 2}
    assert model.calls == [2, 2, 1, 2, 1]  # instructions; classification? and instances, 2 a call
    assert [r["instruction"] for r in result.rows] == ["Write a limerick about a cat named Tom.", TOPICS[0], TOPICS[1]]
    limerick = result.rows[0]
    assert limerick == {"instruction": "Write a limerick about a cat named Tom.",
                        "input": "There once was a cat named Tom.", "output": "funny"}  # output-first
    assert all(r["output"] == "The moon pulls the sea." for r in result.rows[1:])  # input-first
    assert len(result.nearest_kept) == 3 and len(result.nearest_all) == 4 and max(result.nearest_kept) < 0.7
    assert result.summary()["novelty_rouge_l_to_nearest"]["kept"]["n"] == 3


def test_evol_instruct_on_a_scripted_model():
    class Evolver:
        def generate(self, requests):
            out = []
            for r in requests:
                text = r.messages[-1]["content"]
                if "#Rewritten Prompt#:\n" in text or "#Created Prompt#:\n" in text:
                    parent = text.rsplit("Prompt#:\n", 2)[1].split("\n")[0]
                    reply = parent if "same" in parent else f"#Rewritten Prompt#: {parent} Use exactly three steps."
                elif text.startswith("Here are two"):
                    reply = "Not Equal"
                else:
                    reply = "Sorry, I can't." if "sorry" in text else "Step one, step two, step three: done."
                out.append([Reply(reply)])
            return out

    result = evol_instruct(Evolver(), ["Name a fruit.", "Keep the same.", "Say sorry."], rounds=2, seed=0)
    assert result.counts["kept_rows"] == 2 and result.counts["eliminated_no_information_gain"] == 2
    assert result.counts["eliminated_sorry_short_response"] == 2
    assert result.rows[0] == {"instruction": "Name a fruit. Use exactly three steps.", "input": "",
                              "output": "Step one, step two, step three: done."}
    assert result.rows[1]["instruction"] == "Name a fruit. Use exactly three steps. Use exactly three steps."


def _check_jsonl(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        assert set(row) == {"instruction", "input", "output"} and conversation(row)
    return rows


def test_self_instruct_on_a_tiny_random_model_through_the_engine(tmp_path):
    from lmlab.eval.records import write_jsonl

    lm, tok = make_tiny(closing_bias=0.0)
    model = LocalModel(lm, tok, name="tiny")
    seeds = _small_seeds(tmp_path)
    result = self_instruct(model, seeds, 2, batch_size=4, seed=0, max_prompts=4, instruction_tokens=40,
                           instance_tokens=30)
    assert result.prompts == 4 and result.counts["candidates"] >= 1  # random text is still cut into candidates
    write_jsonl(tmp_path / "out.jsonl", result.rows)
    _check_jsonl(tmp_path / "out.jsonl")
    again = self_instruct(model, seeds, 2, batch_size=4, seed=0, max_prompts=4, instruction_tokens=40,
                          instance_tokens=30)
    assert again.rows == result.rows and again.counts == result.counts  # seeded: reproducible


def test_synthesis_through_lmlab_serve(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from lmlab.agents.models import EndpointModel
    from lmlab.serve import Limits, create_app
    from lmlab.serve.background import background

    app = create_app(*make_tiny(closing_bias=0.0), model_id="tiny", max_batch=8, limits=Limits(max_tokens=300))
    with background(app) as url:
        model = EndpointModel(url + "/v1", "tiny", timeout=120, concurrency=4)
        result = self_instruct(model, _small_seeds(tmp_path), 2, batch_size=4, seed=0, max_prompts=4,
                               instruction_tokens=30, instance_tokens=20)
        evolved = evol_instruct(model, ["Name a fruit.", "Name a tree."], seed=0, instruction_tokens=20,
                                response_tokens=20)
    assert result.prompts == 4 and result.counts["candidates"] >= 1
    assert sum(v for k, v in evolved.counts.items() if k.startswith("evolved_")) == 2
    assert evolved.counts["kept_rows"] + sum(v for k, v in evolved.counts.items() if k.startswith("eliminated_")) == 2


def test_cli_mix_and_bad_input(tmp_path, capsys):
    from lmlab.cli import main

    if not (DATA / "sst2").exists():
        pytest.skip("shared data sets missing")
    out = tmp_path / "mix.jsonl"
    assert main(["data", "mix", "--tasks", "sst2,agnews", "--total", "12", "--cap", "100", "--out", str(out),
                 "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"sst2": 6, "agnews": 6} and len(_check_jsonl(out)) == 12
    assert main(["data", "mix", "--tasks", "sst2,agnews", "--total", "12", "--rates", "sst2=1,agnews=0",
                 "--out", str(out), "--quiet"]) != 0
    assert "must be positive" in capsys.readouterr().err
    templates = tmp_path / "t.json"
    templates.write_text(json.dumps({"sst2": [{"instruction": "{review}", "output": "{label}"}]}))
    assert main(["data", "mix", "--tasks", "sst2", "--total", "4", "--templates", str(templates),
                 "--out", str(out), "--quiet"]) != 0
    assert "uses field(s) ['review']" in capsys.readouterr().err


def test_cli_self_instruct_refuses_a_bad_seed_file_before_loading_a_model(tmp_path, capsys):
    from lmlab.cli import main

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]}) + "\n"
                     + json.dumps({"instances": [{"input": "", "output": "x"}]}) + "\n")
    assert main(["data", "self-instruct", "--seeds", str(seeds), "--model", "no-such-model", "--out",
                 str(tmp_path / "o.jsonl"), "--quiet"]) == 1
    assert "seeds.jsonl:2 has no field 'instruction'" in capsys.readouterr().err


def test_complete_batches_by_length_and_answers_in_order():
    from lmlab.instruct.complete import complete

    class Echo:
        def __init__(self):
            self.batches = []

        def generate(self, requests):
            self.batches.append([r.prompt for r in requests])
            return [[Reply(f"{r.prompt}|{r.seed}")] for r in requests]

    model = Echo()
    prompts = ["aaaa", "b", "cccccc", "dd", "eee"]
    replies = complete(model, prompts, batch_size=2, seed=10)
    assert [r.text for r in replies] == ["aaaa|10", "b|11", "cccccc|12", "dd|13", "eee|14"]
    assert model.batches == [["b", "dd"], ["eee", "aaaa"], ["cccccc"]]
