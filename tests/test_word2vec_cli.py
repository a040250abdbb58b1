"""The word2vec and classify verbs as a user meets them: JSON results, files written, clear errors."""

import json

import pytest

from lmlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def corpus(tmp_path):
    lines = ["the cat sat on the mat with the dog", "a dog and a cat play on the mat",
             "the car drove on the road", "a road for the car and the truck"] * 30
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_word2vec_train_similar_analogy_plot(capsys, corpus, tmp_path):
    out_dir, export = tmp_path / "vec", tmp_path / "v.bin"
    code, out, _ = run(capsys, "word2vec", "train", "--data", str(corpus), "--out", str(out_dir), "--export", str(export),
                       "--binary", "--min-count", "2", "--dim", "12", "--epochs", "2", "--threads", "1", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["vocab"] == 15 and result["dim"] == 12 and (out_dir / "model.safetensors").exists()
    for vectors in (out_dir, export):
        code, out, _ = run(capsys, "word2vec", "similar", "--vectors", str(vectors), "cat", "--topn", "3", "--json")
        assert code == 0 and len(json.loads(out)["neighbours"]) == 3
    code, out, _ = run(capsys, "word2vec", "analogy", "--vectors", str(out_dir), "cat", "dog", "car", "--json")
    assert code == 0 and json.loads(out)["answers"][0][0] not in ("cat", "dog", "car")
    png = tmp_path / "p.png"
    code, _, _ = run(capsys, "word2vec", "plot", "--vectors", str(out_dir), "--out", str(png), "cat", "dog", "car", "road")
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_word2vec_eval_on_explicit_files(capsys, tmp_path):
    vec = tmp_path / "v.txt"
    vec.write_text("4 2\nking 1 1\nqueen 1 -1\nman 0 1\nwoman 0 -1\n")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# c\nking\tqueen\t8\nman\twoman\t7\nking\tman\t3\n")
    analogies = tmp_path / "a.txt"
    analogies.write_text(": gender\nman king woman queen\nking queen man woman\n")
    code, out, _ = run(capsys, "word2vec", "eval", "--vectors", str(vec), "--similarity", str(pairs),
                       "--analogies", str(analogies), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["analogy"]["accuracy"] == 1.0 and result["analogy"]["questions"] == 2
    assert result["similarity"][str(pairs)]["pairs"] == 3


def test_word2vec_errors_are_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\na 1 2 3\nb 1 2\n")
    code, _, err = run(capsys, "word2vec", "similar", "--vectors", str(bad), "a")
    assert code == 1 and "has 2 values" in err and "Traceback" not in err
    code, _, err = run(capsys, "word2vec", "train", "--data", str(bad), "--out", str(tmp_path / "o"), "--window", "0")
    assert code == 1 and "window" in err


def test_classify_train_eval_predict(capsys, tmp_path):
    data = tmp_path / "train.tsv"
    rows = [("a great fun film", "pos"), ("great acting and story", "pos"), ("dull boring mess", "neg"),
            ("a boring slow film", "neg")] * 5
    data.write_text("\n".join(f"{t}\t{y}" for t, y in rows) + "\n")
    settings = {"logistic": [], "naive-bayes": [], "fasttext": ["--buckets", "1000", "--epochs", "20"],
                "cbow": ["--epochs", "20"]}
    for kind, extra in settings.items():
        model = tmp_path / kind
        code, out, _ = run(capsys, "classify", "train", "--data", str(data), "--out", str(model), "--kind", kind,
                           "--eval", str(data), *extra, "--json")
        assert code == 0, kind
        assert json.loads(out)["eval"]["accuracy"] >= 0.75
    code, _, err = run(capsys, "classify", "train", "--data", str(data), "--out", str(tmp_path / "x"),
                       "--kind", "logistic", "--buckets", "1000")
    assert code == 1 and "--buckets does not apply to --kind logistic" in err
    code, out, _ = run(capsys, "classify", "eval", "--model", str(tmp_path / "logistic"), "--data", str(data), "--json")
    result = json.loads(out)
    assert code == 0 and result["accuracy"] == 1.0 and result["confusion_matrix"] == [[10, 0], [0, 10]]
    code, out, _ = run(capsys, "classify", "predict", "--model", str(tmp_path / "logistic"), "great fun", "boring", "--json")
    assert code == 0 and [p["label"] for p in json.loads(out)["predictions"]] == ["pos", "neg"]


def test_classify_bad_labels_are_one_line(capsys, tmp_path):
    data = tmp_path / "one.tsv"
    data.write_text("good\tpos\nfine\tpos\n")
    code, _, err = run(capsys, "classify", "train", "--data", str(data), "--out", str(tmp_path / "m"))
    assert code == 1 and "only one class" in err
    code, _, err = run(capsys, "classify", "eval", "--model", str(tmp_path / "none"), "--data", str(data))
    assert code == 1 and "not found" in err
