"""The benchmark harness end to end with small models: a toy protocol model and the unigram LM."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from lmlab.core.errors import ConfigError, DataError
from lmlab.data import open_corpus
from lmlab.eval.harness import answer_matches, evaluate_task, multiple_choice_metrics
from lmlab.eval.requests import RequestRunner
from lmlab.eval.tasks import (
    Task,
    TaskSpec,
    extract_answer,
    fewshot_context,
    load_task,
    normalize_number_answer,
)
from lmlab.lm import LanguageModel
from lmlab.ngram import UnigramLM
from lmlab.tokenizers import WordLevelTokenizer
from tests.conftest import need_data

WORDS = "the a cat dog sat ran on mat rug is what why yes no Question: Answer: #### 7 8 red blue é".split()


class ToyBigram(LanguageModel):
    """p(next | previous token) from a fixed random table; the default (step-by-step) ``score``."""

    def __init__(self, vocab: int, bos: int, eos: int, seed: int = 0, script: dict[int, int] | None = None):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(vocab, vocab, generator=g, dtype=torch.float64)
        for prev, nxt in (script or {}).items():  # make `nxt` the clear argmax after `prev`
            logits[prev, nxt] = 20.0
        self.table = torch.log_softmax(logits, dim=-1)
        self.bos_id, self.eos_id = bos, eos

    @property
    def vocab_size(self) -> int:
        return self.table.shape[0]

    def initial_state(self, batch_size):
        return None

    def next_logprobs(self, tokens, state):
        return self.table[tokens[:, -1]], tokens[:, -1]

    def select_state(self, state, index):
        return state[index]


@pytest.fixture
def toy():
    tok = WordLevelTokenizer("word").train([" ".join(WORDS)])
    return ToyBigram(tok.vocab_size, tok.bos_id, tok.eos_id), tok


def direct_loglik(lm: ToyBigram, tok, context: str, continuation: str) -> float:
    ids = [tok.bos_id, *tok.encode(context)]
    total = 0.0
    for word in tok.encode(continuation):
        total += float(lm.table[ids[-1], word])
        ids.append(word)
    return total


def write_task(tmp_path, items, **spec):
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    spec = {"name": "toy", "type": "multiple_choice", "data": "items.jsonl", **spec}
    (tmp_path / "task.json").write_text(json.dumps(spec))
    return str(tmp_path / "task.json")


MC_ITEMS = [{"q": "the cat sat on the", "options": ["mat", "rug", "dog ran"], "answer": 0},
            {"q": "what is red", "options": ["yes", "no", "blue"], "answer": "blue"},
            {"q": "why", "options": ["a cat", "é", "the dog sat on a mat"], "answer": 2},
            {"q": "the dog", "options": ["ran", "sat"], "answer": 1}]


def test_acc_norm_and_acc_bytes_definitions():
    assert multiple_choice_metrics([-4.0, -6.0], ["ab", "abcdef"], 1) == {"acc": 0.0, "acc_norm": 1.0,
                                                                          "acc_bytes": 1.0}
    # 'é' is 1 character but 2 bytes: per character -2 < -1.5, per byte -1 > -1.5
    assert multiple_choice_metrics([-2.0, -3.0], ["é", "ab"], 0) == {"acc": 1.0, "acc_norm": 0.0, "acc_bytes": 1.0}


def test_multiple_choice_loglikelihoods_equal_direct_computation(toy, tmp_path, no_progress):
    lm, tok = toy
    task = load_task(write_task(tmp_path, MC_ITEMS, prompt="{q}", choices="options", gold="answer"))
    runner = RequestRunner(lm, tok, batch_size=3)  # batches of mixed lengths exercise the padding
    result = evaluate_task(task, runner)
    accs = {"acc": [], "acc_norm": [], "acc_bytes": []}
    for item, record in zip(result["items"], MC_ITEMS, strict=True):
        expected = [direct_loglik(lm, tok, record["q"], " " + c) for c in record["options"]]
        assert item["logits"] == pytest.approx(expected, abs=1e-9)
        gold = record["answer"] if isinstance(record["answer"], int) else record["options"].index(record["answer"])
        lls = np.array(expected)
        accs["acc"].append(float(np.argmax(lls) == gold))
        accs["acc_norm"].append(float(np.argmax(lls / [len(c) for c in record["options"]]) == gold))
        accs["acc_bytes"].append(float(np.argmax(lls / [len(c.encode()) for c in record["options"]]) == gold))
    for name, values in accs.items():
        assert result["metrics"][name] == pytest.approx(np.mean(values))
    assert result["metrics"]["acc_stderr"] == pytest.approx(np.std(accs["acc"], ddof=1) / 2)
    assert result["config"]["prompt"] == "{q}" and result["n"] == 4


def test_requests_are_cached_in_memory_and_on_disk(toy, tmp_path, no_progress):
    lm, tok = toy
    task = load_task(write_task(tmp_path, MC_ITEMS, prompt="{q}", choices="options", gold="answer"))
    cache = tmp_path / "cache.json"
    runner = RequestRunner(lm, tok, cache_path=str(cache), model_id="toy")
    first = evaluate_task(task, runner)
    assert runner.calls == {"scored": 11, "cached": 0}
    evaluate_task(task, runner)
    assert runner.calls == {"scored": 11, "cached": 11}
    again = RequestRunner(lm, tok, cache_path=str(cache), model_id="toy")
    assert evaluate_task(task, again)["metrics"] == first["metrics"] and again.calls["scored"] == 0
    other = RequestRunner(lm, tok, cache_path=str(cache), model_id="another model")
    evaluate_task(task, other)
    assert other.calls["scored"] == 11  # another model's cache is never reused
    evaluate_task(task, RequestRunner(lm, tok, cache_path=str(cache), model_id="toy"))  # toy's cache again
    other_start = RequestRunner(lm, tok, cache_path=str(cache), model_id="toy", start_always=False)
    evaluate_task(task, other_start)
    assert other_start.calls["scored"] == 11  # nor numbers computed with another start rule


def test_unigram_on_arc_easy_matches_independent_scoring(no_progress):
    need_data("arc", "ARC-Easy-test.jsonl")
    need_data("ptb", "ptb.valid.txt")
    train = open_corpus("ptb:valid")
    tok = WordLevelTokenizer("word").train(train)
    lm = UnigramLM.fit_corpus(train, tok)
    task = load_task("arc_easy")
    result = evaluate_task(task, RequestRunner(lm, tok, batch_size=32), limit=40)
    hits = []
    for record in task.items[:40]:  # a unigram's log-likelihood of a choice is the sum of its words'
        lls = [sum(float(lm.logprobs[i]) for i in tok.encode(c)) for c in record["choices"]]
        hits.append(float(int(np.argmax(lls)) == record["gold"]))
    assert result["n"] == 40 and result["metrics"]["acc"] == pytest.approx(np.mean(hits))
    assert set(result["metrics"]) >= {"acc", "acc_norm", "acc_bytes", "acc_norm_stderr"}


def test_fewshot_prompt_layout():
    spec = TaskSpec(name="t", type="multiple_choice", prompt="Q: {q}\nA:", num_fewshot=2)
    pool = [{"q": f"p{i}", "choices": ["x", "y"], "gold": i % 2} for i in range(5)]
    task = Task(spec, [{"q": "final", "choices": ["x", "y"], "gold": 0}], pool)
    ctx = fewshot_context(task, task.items[0], random.Random(0))
    parts = ctx.split("\n\n")
    assert len(parts) == 3 and parts[-1] == "Q: final\nA:"
    assert all(p.startswith("Q: p") and p[-1] in "xy" and p.endswith(" " + "xy"[int(p[4]) % 2]) for p in parts[:2])


def test_gsm8k_answer_extraction():
    pattern = r"#### (\-?[0-9\.\,]+)"
    assert normalize_number_answer(extract_answer("so 3 + 4 = 7\n#### 1,234", pattern)) == "1234"
    assert extract_answer("no marker here", pattern) == "[invalid]"
    assert normalize_number_answer("$18.") == "18"


# hand-made GSM8K outputs: (output, strict prediction, flexible prediction)
GSM8K_OUTPUTS = [
    ("She pays 3 * 6 = $18.\n#### 18", "18", "18"),
    ("She pays 3 * 6 = $18. So the answer is 18.", "[invalid]", "18"),
    ("Half of 50 is 25, minus 5 gives 20 apples", "[invalid]", "20"),
    ("#### 1,234 and then 7 more", "1234", "7"),
    ("the total is -12", "[invalid]", "-12"),
    ("no digits at all", "[invalid]", "[invalid]"),
]


@pytest.mark.parametrize("output,strict,flexible", GSM8K_OUTPUTS)
def test_gsm8k_strict_and_flexible_extraction(output, strict, flexible):
    spec = load_task_spec_gsm8k()
    got = answer_matches(output, "18", spec)
    assert got["prediction"] == strict and got["prediction_flexible"] == flexible
    assert got["exact_match"] == float(strict == "18") and got["exact_match_flexible"] == float(flexible == "18")


@pytest.mark.parametrize("output", [o for o, _, _ in GSM8K_OUTPUTS])
def test_flexible_extraction_equals_lm_eval_filter(output):
    extraction = pytest.importorskip("lm_eval.filters.extraction")
    spec = load_task_spec_gsm8k()
    peer = extraction.RegexFilter(regex_pattern=spec.flexible_regex, group_select=-1)
    (answer,), = peer.apply([[output]], [None])
    assert extract_answer(output, spec.flexible_regex, last=True) == answer.strip()


def load_task_spec_gsm8k() -> TaskSpec:
    from lmlab.eval.tasks import BUILTIN

    return TaskSpec(name="gsm8k", **BUILTIN["gsm8k"][0])


def test_generative_task_end_to_end_with_a_scripted_model(tmp_path, no_progress):
    tok = WordLevelTokenizer("word").train([" ".join(WORDS)])
    ids = {w: tok.token_to_id(w) for w in ("Answer:", "####", "7", "Question:")}
    script = {ids["Answer:"]: ids["####"], ids["####"]: ids["7"], ids["7"]: ids["Question:"],
              ids["Question:"]: tok.eos_id}
    lm = ToyBigram(tok.vocab_size, tok.bos_id, tok.eos_id, script=script)
    items = [{"question": "what is red", "answer": "the cat ran\n#### 7"},
             {"question": "why", "answer": "#### 8"}]
    path = write_task(tmp_path, items, type="generate", prompt="Question: {question}\nAnswer:", gold="answer",
                      until=["Question:"], answer_regex=r"#### (\-?[0-9\.\,]+)", max_new_tokens=8)
    result = evaluate_task(load_task(path), RequestRunner(lm, tok))
    assert [i["output"] for i in result["items"]] == ["#### 7 ", "#### 7 "]
    assert [i["prediction"] for i in result["items"]] == ["7", "7"]
    assert result["metrics"]["exact_match"] == 0.5
    assert "exact_match_flexible" not in result["metrics"]  # only when the spec asks for it
    flexible = write_task(tmp_path, items, type="generate", prompt="Question: {question}\nAnswer:", gold="answer",
                          until=["Question:"], answer_regex=r"#### (\-?[0-9\.\,]+)", max_new_tokens=8,
                          flexible_regex=r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
    result = evaluate_task(load_task(flexible), RequestRunner(lm, tok))
    assert [i["prediction_flexible"] for i in result["items"]] == ["7", "7"]
    assert result["metrics"]["exact_match_flexible"] == 0.5 and result["metrics"]["exact_match"] == 0.5


def test_last_word_task_over_a_corpus(toy, tmp_path, no_progress):
    lm, tok = toy
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nthe dog\nwhat is the red dog\n")
    task = load_task("lambada", corpus=str(corpus), min_words=3)
    assert [i["target"] for i in task.items] == ["mat", "dog"]
    result = evaluate_task(task, RequestRunner(lm, tok))
    lls = [direct_loglik(lm, tok, i["context"], " " + i["target"]) for i in task.items]
    assert result["metrics"]["perplexity"] == pytest.approx(math.exp(-np.mean(lls)))
    greedy = [int(lm.table[tok.encode(i["context"])[-1]].argmax()) == tok.token_to_id(i["target"])
              for i in task.items]
    assert result["metrics"]["acc"] == pytest.approx(np.mean(greedy))


def test_bad_task_specs(tmp_path, toy):
    with pytest.raises(ConfigError):
        load_task("lambada")
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "type": "multiple_choice", "colour": "red"}))
    with pytest.raises(ConfigError):
        load_task(str(tmp_path / "bad.json"))
    path = write_task(tmp_path, [{"q": "x", "options": ["a"], "answer": 3}], prompt="{q}", choices="options",
                      gold="answer")
    with pytest.raises(DataError):
        evaluate_task(load_task(path), RequestRunner(*toy))  # gold index out of range
    path = write_task(tmp_path, [{"q": "x", "options": ["a"], "answer": 0}], prompt="{question}",
                      choices="options", gold="answer")
    with pytest.raises(DataError):
        evaluate_task(load_task(path), RequestRunner(*toy))  # template field missing


def test_start_token_conventions(toy):
    lm, tok = toy
    ours = RequestRunner(lm, tok)
    lm_eval_style = RequestRunner(lm, tok, start_always=False)
    assert ours.encode_pair("the cat ", "sat")[0] == [tok.bos_id, *tok.encode("the cat")]
    assert lm_eval_style.encode_pair("the cat ", "sat") == (tok.encode("the cat"), tok.encode("sat"))
    assert lm_eval_style.encode_pair("", "sat")[0] == [tok.bos_id]  # an empty context still gets a start id


@pytest.mark.parametrize("preset", ["llama", "gpt2"])
def test_shared_context_scoring_equals_scoring_each_request(toy, preset, no_progress):
    from lmlab.models.config import TransformerConfig
    from lmlab.models.transformer import TransformerLM

    _, tok = toy
    torch.manual_seed(0)
    args = dict(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, d_ff=64, context_length=64)
    lm = TransformerLM(TransformerConfig.from_preset(preset, **args),
                       special_ids={"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id}).eval()
    with torch.no_grad():  # sharp logits, so a misplaced position or mask shows
        lm.head.weight.mul_(40)
    requests = [("the cat sat on the", " mat"), ("the cat sat on the", " rug is red"), ("why", " a cat"),
                ("why", " the dog sat on a mat"), ("what is red", " blue"), ("the cat sat on the", " dog ran")]
    shared = RequestRunner(lm, tok, batch_size=3)
    assert shared.share_contexts
    separate = RequestRunner(lm, tok, batch_size=3, share_contexts=False)
    expected = []
    for ctx, cont in requests:  # one sequence at a time, no padding at all
        c, t = separate.encode_pair(ctx, cont)
        expected.append(float(lm.score(torch.tensor([c + t]))[0, -len(t):].sum()))
    assert shared.loglikelihood(requests) == pytest.approx(expected, abs=1e-4)
    assert separate.loglikelihood(requests) == pytest.approx(expected, abs=1e-4)
    assert shared.calls["scored"] == len(requests)


def test_builtin_task_names_accept_hyphens():
    need_data("arc", "ARC-Easy-test.jsonl")
    task = load_task("arc-easy")
    assert task.spec.name == "arc_easy" and len(task.items) == 2376
