"""``lmlab ngram …`` as a user meets it: JSON results, the shared verbs on n-gram models, clear errors."""

import json
import math
from collections import Counter

import pytest

from lmlab.cli import main

TRAIN = ("the cat sat on the mat\nthe dog sat on the log\na cat ran to the dog\nthe cat\na dog sat\n"
         "the mat was on the log\na log and a mat\nthe dog ran\non the mat sat a cat\na cat sat on a dog\n")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def kenlm_perplexity(arpa, test) -> float:
    """Perplexity of ``test`` (one sentence a line, with </s>) under an ARPA file, as KenLM scores it."""
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(arpa))
    log10, tokens = 0.0, 0
    for line in test.read_text(encoding="utf-8").splitlines():
        log10 += model.score(line, bos=True, eos=True)
        tokens += len(line.split()) + 1
    return 10 ** (-log10 / tokens)


def add_half_bigram_perplexity(train: str, test) -> float:
    """Add-0.5 bigram perplexity from raw counts: p(w|h) = (c(h w) + 0.5) / (c(h) + 0.5 |V|), where V holds
    every word type, </s> and <unk> (all that can be predicted; <s> cannot)."""
    pairs, heads, types = Counter(), Counter(), {"</s>", "<unk>"}
    for line in train.splitlines():
        words = ["<s>"] + line.split() + ["</s>"]
        types.update(words[1:])
        pairs.update(zip(words, words[1:], strict=False))
        heads.update(words[:-1])
    log_p, tokens = 0.0, 0
    for line in test.read_text(encoding="utf-8").splitlines():
        words = ["<s>"] + line.split() + ["</s>"]
        for h, w in zip(words, words[1:], strict=False):
            log_p += math.log((pairs[h, w] + 0.5) / (heads[h] + 0.5 * len(types)))
            tokens += 1
    return math.exp(-log_p / tokens)


@pytest.fixture
def files(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text(TRAIN, encoding="utf-8")
    test = tmp_path / "test.txt"
    test.write_text("the cat sat on the log\na dog ran\n", encoding="utf-8")
    return train, test


def test_train_arpa_then_eval_generate_prune_convert(capsys, files, tmp_path):
    train, test = files
    arpa = tmp_path / "m.arpa"
    code, out, _ = run(capsys, "ngram", "train", "--order", "3", "--smoothing", "kn", train, "-o", arpa, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["format"] == "arpa" and info["order"] == 3 and len(info["ngrams"]) == 3
    code, out, err = run(capsys, "ngram", "eval", arpa, test, "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["tokens"] == 6 + 1 + 3 + 1 and result["oov_rate"] == 0.0
    assert result["perplexity"] == pytest.approx(kenlm_perplexity(arpa, test), rel=1e-6)
    code, out, _ = run(capsys, "ngram", "generate", arpa, "--seed", "1", "--num-samples", "2", "--json")
    assert code == 0 and len(json.loads(out)["samples"]) == 2
    code, out, _ = run(capsys, "ngram", "convert", arpa, tmp_path / "dir", "--json")
    assert code == 0 and json.loads(out)["format"] == "directory"
    code, out, _ = run(capsys, "ngram", "eval", tmp_path / "dir", test, "--json")
    assert json.loads(out)["perplexity"] == pytest.approx(result["perplexity"], rel=1e-6)
    code, out, _ = run(capsys, "ngram", "prune", tmp_path / "dir", "-o", tmp_path / "p.arpa", "--entropy", "1e-3",
                       "--data", test, "--json")
    pruned = json.loads(out)
    assert code == 0 and sum(pruned["ngrams_after"]) < sum(pruned["ngrams_before"])
    assert pruned["perplexity_after"] >= pruned["perplexity_before"] * (1 - 1e-9)


def test_directory_works_with_the_shared_eval_and_generate_verbs(capsys, files, tmp_path):
    train, test = files
    run(capsys, "ngram", "train", "--order", "2", "--smoothing", "add-k", "--k", "0.5", train, "-o", tmp_path / "d")
    code, out, _ = run(capsys, "eval", "perplexity", "--model", tmp_path / "d", "--data", test, "--json")
    assert code == 0
    shared = json.loads(out)
    code, out, _ = run(capsys, "ngram", "eval", tmp_path / "d", test, "--json")
    assert code == 0
    own = json.loads(out)
    assert own["tokens"] == shared["tokens"] == 11
    assert own["perplexity"] == pytest.approx(shared["perplexity"], rel=1e-9)
    assert shared["perplexity"] == pytest.approx(add_half_bigram_perplexity(TRAIN, test), rel=1e-9)
    code, out, _ = run(capsys, "generate", "--model", tmp_path / "d", "--prompt", "the", "--seed", "3", "--json")
    assert code == 0 and json.loads(out)["samples"][0]["text"]


def test_count_pruning_at_training_time_and_jm(capsys, files, tmp_path):
    train, test = files
    code, out, _ = run(capsys, "ngram", "train", train, "--order", "3", "--smoothing", "wb", "--prune", "0", "1", "1",
                       "-o", tmp_path / "w", "--json")
    assert code == 0
    code, out, _ = run(capsys, "ngram", "train", "--order", "2", "--smoothing", "jm", "--heldout", test, train,
                       "-o", tmp_path / "j", "--json")
    assert code == 0 and len(json.loads(out)["params"]["lambdas"]) == 2


def test_oov_heavy_test_set_warns_with_the_rate(capsys, files, tmp_path):
    train, _ = files
    run(capsys, "ngram", "train", "--order", "2", "--smoothing", "kn", train, "-o", tmp_path / "m.arpa")
    odd = tmp_path / "odd.txt"
    odd.write_text("zebras graze quietly on the mat\n", encoding="utf-8")
    code, out, err = run(capsys, "ngram", "eval", tmp_path / "m.arpa", odd, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["oov_rate"] == pytest.approx(3 / 7)
    assert "42.9% of the test tokens" in err and "<unk>" in err
    assert result["warnings"]


@pytest.mark.parametrize("argv,message", [
    (["--order", "0"], "--order = 0 is out of range"),
    (["--smoothing", "mkn", "--discount", "0.5"], "three discounts"),
])
def test_bad_training_options(capsys, files, tmp_path, argv, message):
    train, _ = files
    code, _, err = run(capsys, "ngram", "train", train, *argv, "-o", tmp_path / "m.arpa")
    assert code == 1 and message in err and "Traceback" not in err


def test_empty_corpus_and_malformed_arpa(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code, _, err = run(capsys, "ngram", "train", empty, "-o", tmp_path / "m.arpa")
    assert code == 1 and "no documents" in err
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0 <unk> 0 junk\n\\end\\\n", encoding="utf-8")
    code, _, err = run(capsys, "ngram", "eval", bad, empty)
    assert code == 1 and "bad.arpa:5:" in err



def test_training_an_arpa_model_never_imports_torch(tmp_path):
    """``lmlab ngram train … -o x.arpa`` is timed end to end against lmplz (bench/ngram.py): building the
    command line imports neither torch nor numba (another verb's options included), and counting,
    estimating and writing ARPA need no torch."""
    import subprocess
    import sys

    (tmp_path / "train.txt").write_text(TRAIN, encoding="utf-8")
    probe = ("import sys; from lmlab.cli import build_parser, main; build_parser(['ngram', 'train']); "
             "print(sorted(m for m in ('torch', 'numba') if m in sys.modules)); "
             f"main(['ngram', 'train', {str(tmp_path / 'train.txt')!r}, '--order', '3', '--smoothing', 'kn', "
             f"'-o', {str(tmp_path / 'm.arpa')!r}, '--quiet']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    lines = out.strip().split("\n")
    assert (lines[0], lines[-1]) == ("[]", "False")
    assert (tmp_path / "m.arpa").read_text(encoding="utf-8").startswith("\\data\\")
