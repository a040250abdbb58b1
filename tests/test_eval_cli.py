"""``lmlab eval`` verbs as a user meets them: --json output and one clear line for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli import run


@pytest.fixture
def segments(tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("the cat sat on the mat\n\nthe dogs are running\n", encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("the cat sat on a mat\nsomething\na dog runs\n", encoding="utf-8")
    ref2 = tmp_path / "ref2.txt"
    ref2.write_text("a cat sat on the mat\nnothing\nthe dogs run\n", encoding="utf-8")
    return str(hyp), str(ref), str(ref2)


def test_bleu_and_chrf_json(capsys, segments):
    from lmlab.eval.bleu import corpus_bleu
    from lmlab.eval.chrf import corpus_chrf

    hyp, ref, ref2 = segments
    hyps = open(hyp, encoding="utf-8").read().splitlines()
    refs = [open(p, encoding="utf-8").read().splitlines() for p in (ref, ref2)]
    code, out, _ = run(capsys, "eval", "bleu", "--hyp", hyp, "--ref", ref, "--ref", ref2, "--json")
    result = json.loads(out)
    assert code == 0 and result["score"] == pytest.approx(corpus_bleu(hyps, refs).score)
    assert result["signature"].startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp")
    code, out, _ = run(capsys, "eval", "chrf", "--hyp", hyp, "--ref", ref, "--word-order", "2", "--json")
    result = json.loads(out)
    assert result["score"] == pytest.approx(corpus_chrf(hyps, refs[:1], word_order=2).score)
    assert "nw:2" in result["signature"]


def test_rouge_json_has_mean_f_measures(capsys, segments):
    from lmlab.eval.rouge import rouge_scores

    hyp, ref, _ = segments
    code, out, _ = run(capsys, "eval", "rouge", "--hyp", hyp, "--ref", ref, "--stem", "--json")
    result = json.loads(out)
    pairs = zip(open(ref).read().splitlines(), open(hyp).read().splitlines(), strict=True)
    expected = np.mean([rouge_scores(r, h, stem=True)["rougeL"].fmeasure for r, h in pairs])
    assert code == 0 and result["rougeL"] == pytest.approx(expected)
    assert {"rouge1", "rouge2", "rougeLsum", "signature"} <= set(result)


def test_mismatched_line_counts_is_one_clear_error(capsys, segments, tmp_path):
    hyp, _, _ = segments
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    code, out, err = run(capsys, "eval", "bleu", "--hyp", hyp, "--ref", str(short))
    assert code == 1 and out == "" and "has 1 lines" in err and "Traceback" not in err
    code, _, err = run(capsys, "eval", "bleu", "--hyp", str(tmp_path / "missing.txt"), "--ref", str(short))
    assert code == 1 and "file not found" in err


def test_calibration_json_with_temperature_and_plot(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("pred", "held"):
        z = rng.normal(0, 2, (300, 3))
        y = [int(rng.choice(3, p=np.exp(a) / np.exp(a).sum())) for a in z]
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"logits": (4 * a).tolist(), "label": k}) + "\n" for a, k in zip(z, y, strict=True)))
    plot = tmp_path / "rel.png"
    code, out, _ = run(capsys, "eval", "calibration", "--predictions", str(tmp_path / "pred.jsonl"),
                       "--heldout", str(tmp_path / "held.jsonl"), "--plot", str(plot), "--json")
    result = json.loads(out)
    assert code == 0 and result["n"] == 300 and result["temperature"] > 2
    assert result["scaled"]["nll"] < result["nll"] and result["scaled"]["accuracy"] == result["accuracy"]
    assert plot.exists()
    (tmp_path / "cc.jsonl").write_text('{"confidence": 0.9, "correct": true}\n{"confidence": 0.9, "correct": false}\n')
    code, out, _ = run(capsys, "eval", "calibration", "--predictions", str(tmp_path / "cc.jsonl"), "--json")
    assert json.loads(out)["ece"] == pytest.approx(0.4)
    (tmp_path / "bad.jsonl").write_text('{"logits": [1, 2], "label": 5}\n')
    code, _, err = run(capsys, "eval", "calibration", "--predictions", str(tmp_path / "bad.jsonl"))
    assert code == 1 and "outside" in err


def test_passk_json(capsys, tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"task_id": "p0", "prompt": "def sq(x):\n", "entry_point": "sq",
                                    "test": "def check(f):\n    assert f(3) == 9\n"}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": "p0", "completion": c}) + "\n"
                               for c in ("    return x * x\n", "    return x + x\n")))
    code, out, _ = run(capsys, "eval", "passk", "--samples", str(samples), "--problems", str(problems),
                       "--k", "1,2", "--timeout", "2", "--json")
    result = json.loads(out)
    assert code == 0 and result["pass@1"] == pytest.approx(0.5) and result["pass@2"] == 1.0
    code, _, err = run(capsys, "eval", "passk", "--samples", str(samples), "--problems", str(problems), "--k", "x")
    assert code == 1 and "--k" in err


def test_task_json_with_a_spec_file(capsys, tmp_path):
    (tmp_path / "train.txt").write_text("the cat sat\nthe dog ran\nthe cat ran\n")
    (tmp_path / "items.jsonl").write_text(json.dumps({"q": "the", "choices": ["cat", "zebra"], "gold": 0}) + "\n")
    (tmp_path / "task.json").write_text(json.dumps({"name": "mini", "type": "multiple_choice", "data": "items.jsonl",
                                                     "prompt": "{q}"}))
    code, out, _ = run(capsys, "eval", "task", "--model", "unigram", "--train", str(tmp_path / "train.txt"),
                       "--tasks", str(tmp_path / "task.json"), "--output", str(tmp_path / "res.json"),
                       "--predictions", str(tmp_path / "pred.jsonl"), "--json")
    result = json.loads(out)
    assert code == 0 and result["results"]["mini"]["acc"] == 1.0 and result["config"]["mini"]["prompt"] == "{q}"
    assert result["start"] == "empty"  # lm-evaluation-harness's rule unless --start always
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["items"]["mini"][0]["label"] == 0 and len(saved["items"]["mini"][0]["logits"]) == 2
    code, out, _ = run(capsys, "eval", "calibration", "--predictions", str(tmp_path / "pred.jsonl"), "--json")
    assert code == 0 and json.loads(out)["accuracy"] == 1.0  # the task's choices feed calibration directly
    code, _, err = run(capsys, "eval", "task", "--model", "unigram", "--train", str(tmp_path / "train.txt"),
                       "--tasks", "no_such_task")
    assert code == 1 and "no built-in task" in err


def test_perplexity_against_a_model_with_another_vocabulary(capsys, tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat\nthe dog sat\na cat ran\n")
    for level in ("word", "char"):
        code, _, _ = run(capsys, "eval", "perplexity", "--model", "unigram", "--tokenizer", level, "--train", str(train),
                         "--data", str(train), "--save", str(tmp_path / level), "--quiet")
        assert code == 0
    code, out, _ = run(capsys, "eval", "perplexity", "--model", str(tmp_path / "word"), "--against",
                       str(tmp_path / "char"), "--data", str(train), "--per-document", "--json")
    result = json.loads(out)
    assert code == 0 and "bits per byte" in result["comparability"]
    assert result["against"]["tokens"] > result["tokens"] and len(result["per_document"]) == 3
    assert result["word_perplexity"] > 0


def test_bertscore_and_mauve_with_the_hashing_encoder(capsys, segments, tmp_path):
    hyp, ref, _ = segments
    code, out, _ = run(capsys, "eval", "bertscore", "--hyp", ref, "--ref", ref, "--json")
    result = json.loads(out)
    assert code == 0 and result["f1"] == pytest.approx(1.0) and "encoder:hash" in result["signature"]
    code, out, _ = run(capsys, "eval", "bertscore", "--hyp", hyp, "--ref", ref, "--idf", "--json")
    assert 0 < json.loads(out)["f1"] < 1
    english = tmp_path / "en.txt"
    english.write_text("".join(f"the cat number {i} sat on the mat\n" for i in range(30)))
    code, out, _ = run(capsys, "eval", "mauve", "--human", str(english), "--generated", str(english),
                       "--clusters", "3", "--json")
    assert code == 0 and json.loads(out)["mauve"] == pytest.approx(1.0)
    code, _, err = run(capsys, "eval", "mauve", "--human", str(english), "--generated", str(english),
                       "--encoder", "minilmm")
    assert code == 1 and "unknown text encoder" in err
