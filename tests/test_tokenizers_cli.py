"""``lmlab tokenizer``: train, encode, decode, info and compare from the command line."""

import json

from lmlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_encode_decode_info_compare(capsys, tmp_path, no_progress):
    corpus = tmp_path / "train.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n" * 5)
    out_dir = tmp_path / "tok"
    code, out, _ = run(capsys, "tokenizer", "train", str(corpus), "--kind", "byte-bpe", "--vocab-size", "270",
                       "--out", str(out_dir), "--json")
    assert code == 0
    trained = json.loads(out)
    assert trained["vocab_size"] == 270 and (out_dir / "tokenizer.json").exists()

    code, out, _ = run(capsys, "tokenizer", "encode", "--tokenizer", str(out_dir), "the cat 🙂", "--json",
                       "--offsets")
    encoded = json.loads(out)
    assert code == 0 and encoded["offsets"][0] == [0, 3] and len(encoded["ids"]) == len(encoded["tokens"])

    code, out, _ = run(capsys, "tokenizer", "decode", "--tokenizer", str(out_dir), *map(str, encoded["ids"]))
    assert code == 0 and out == "the cat 🙂\n"

    code, out, _ = run(capsys, "tokenizer", "info", str(out_dir / "tokenizer.json"), "--json")
    info = json.loads(out)
    assert (info["model"], info["pre_tokenizer"], info["vocab_size"]) == ("BPE", "ByteLevel", 270)

    code, out, _ = run(capsys, "tokenizer", "compare", str(corpus), "--tokenizer", str(out_dir),
                       "--tokenizer", "all-minilm-l6-v2", "--json")
    rows = json.loads(out)["results"]
    assert code == 0 and [r["tokenizer"] for r in rows] == [str(out_dir), "all-minilm-l6-v2"]
    ours = rows[0]
    assert ours["roundtrip"] == 1.0 and ours["unk_rate"] == 0.0
    assert ours["tokens_per_byte"] == ours["tokens"] / ours["bytes"] and ours["words"] == 17 * 5
    assert rows[1]["roundtrip"] == 1.0  # lowercase, spaced ASCII words survive BERT's pipeline


def test_bad_input_is_one_clear_line(capsys, tmp_path):
    code, _, err = run(capsys, "tokenizer", "encode", "--tokenizer", str(tmp_path / "missing.json"), "x")
    assert code == 1 and err.startswith("lmlab: error: tokenizer not found") and "Traceback" not in err
    code, _, err = run(capsys, "tokenizer", "decode", "--tokenizer", "all-minilm-l6-v2", "999999")
    assert code == 1 and "outside the vocabulary" in err
