"""``lmlab pretrain --objective seq2seq``: line-aligned parallel corpora (prefix + language pair, or
two files), length-bucketed padded pair batches that depend only on the step, training that learns
a toy translation, a model directory that loads back and translates (batched greedy = per-sentence
beam 1), resume from the saved pairs, and ``lmlab translate --reference`` with BLEU."""

import json
import random

import pytest
import torch
from conftest import need_data
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, DataError, InputError
from lmlab.data.parallel import PairBatches, as_tensors, from_tensors, parallel_corpora, split_pair

WORDS = "red green blue cat dog fish big small".split()


def toy_pairs(n, seed=0):
    """Source: three words; target: the same words reversed (a task only the source can answer)."""
    rng = random.Random(seed)
    rows = [rng.sample(WORDS, 3) for _ in range(n)]
    return [" ".join(r) for r in rows], [" ".join(reversed(r)) for r in rows]


def write_pairs(folder, name, n, seed=0):
    src, tgt = toy_pairs(n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.xx").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / f"{name}.yy").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return src, tgt


def test_parallel_corpora_from_a_prefix_or_two_files(tmp_path):
    src, tgt = write_pairs(tmp_path, "train", 5)
    a, b = parallel_corpora(tmp_path / "train", pair="xx-yy")
    assert list(a) == src and list(b) == tgt
    a, b = parallel_corpora(tmp_path / "train.yy", tmp_path / "train.xx")
    assert list(a) == tgt
    (tmp_path / "blank.xx").write_text("one\n\nthree\n", encoding="utf-8")
    assert list(parallel_corpora(tmp_path / "blank.xx", tmp_path / "blank.xx")[0]) == ["one", "", "three"]
    assert split_pair("de-en") == ("de", "en")
    for bad in ("de", "de-", "de-en-fr"):
        with pytest.raises(ConfigError):
            split_pair(bad)
    with pytest.raises(ConfigError):
        parallel_corpora(tmp_path / "train")
    with pytest.raises(InputError):
        parallel_corpora(tmp_path / "nope", pair="xx-yy")


def test_multi30k_pairs_are_aligned():
    need_data("multi30k", "val.de")
    need_data("multi30k", "val.en")
    de, en = (list(c) for c in parallel_corpora("multi30k:val", pair="de-en"))
    assert len(de) == len(en) == 1014
    assert de[0].startswith("Eine Gruppe von Männern") and en[0].startswith("A group of men")


def test_pair_batches_are_a_function_of_the_step_and_cover_every_pair():
    pairs = [([i] * (1 + i % 7), [i, i] * (1 + i % 3)) for i in range(50)]
    batches = PairBatches(pairs, batch_size=8, pad_id=0, seed=3, pool_factor=2)
    assert len(batches) == 7
    seen = []
    for step in range(7):
        b = batches.batch(step)
        assert b["source"].shape == b["source_mask"].shape and b["target"].shape == b["target_mask"].shape
        for src, m in zip(b["source"], b["source_mask"], strict=True):
            n = int(m.sum())
            assert m[:n].all() and not m[n:].any() and src[n:].eq(0).all()
            seen.append(int(src[0]))
    assert sorted(seen) == list(range(50))  # one pass = every pair once
    assert all(torch.equal(batches.batch(4)[k], PairBatches(pairs, 8, 0, seed=3, pool_factor=2).batch(4)[k])
               for k in ("source", "target"))
    assert not torch.equal(batches.batch(0)["source"][:, 0], batches.batch(7)["source"][:, 0]) or \
        batches.batch(0)["source"].shape != batches.batch(7)["source"].shape  # the next pass is reshuffled
    assert from_tensors(as_tensors(pairs)) == [(list(s), list(t)) for s, t in pairs]


@pytest.mark.slow
def test_pretrain_seq2seq_learns_a_toy_translation_and_translates(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.eval.bleu import corpus_bleu
    from lmlab.generate.translate import translate
    from lmlab.models import load_model
    from lmlab.models.seq2seq import EncoderDecoder

    write_pairs(tmp_path / "data", "train", 400)
    test_src, test_tgt = write_pairs(tmp_path / "data", "test", 20, seed=9)
    out = tmp_path / "run"
    args = ["pretrain", "--family", "bart", "--objective", "seq2seq", "--train", str(tmp_path / "data" / "train"),
            "--pair", "xx-yy", "--valid-source", str(tmp_path / "data" / "test.xx"),
            "--valid-target", str(tmp_path / "data" / "test.yy"), "--tokenizer", "word", "--d-model", "32",
            "--n-layers", "1", "--n-heads", "4", "--steps", "300", "--lr", "5e-3", "--batch-size", "16",
            "--context", "8", "--eval-every", "300", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid_loss"] < 0.3  # log(12) = 2.5 at the start
    model, tok = load_model(out / "model")
    assert isinstance(model, EncoderDecoder)
    outputs = translate(model, tok, test_src)
    assert sum(o == t for o, t in zip(outputs, test_tgt, strict=True)) >= 16
    assert translate(model, tok, test_src[:5], batch_size=1) == outputs[:5]  # padding changes nothing
    assert translate(model, tok, test_src[:5], beam_size=3) == outputs[:5]  # an easy task: beam agrees
    assert main(["translate", "--model", str(out / "model"), "--input", str(tmp_path / "data" / "test.xx"),
                 "--reference", str(tmp_path / "data" / "test.yy"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 20 and result["translations"] == outputs
    assert result["bleu"] == round(corpus_bleu(outputs, [test_tgt]).score, 2)
    # resume: the tokenised pairs are reused, no corpus needed
    assert main(["pretrain", "--resume", str(out), "--steps", "302", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 302


def test_pretrain_seq2seq_errors(tmp_path, no_progress):
    from lmlab.cli import main
    from lmlab.data import from_texts
    from lmlab.tokenizers import WordLevelTokenizer
    from lmlab.train import pretrain

    tok = WordLevelTokenizer("word").train(["a b c"])
    with pytest.raises(DataError, match="not aligned"):
        pretrain("t5", (from_texts(["a b", "c"]), from_texts(["a"])), tok, tmp_path / "r", objective="seq2seq",
                 training={"steps": 1})
    with pytest.raises(ConfigError):
        pretrain("gpt2", None, tok, tmp_path / "g", objective="seq2seq")
    assert main(["pretrain", "--family", "t5", "--objective", "seq2seq", "--source", "x.de",
                 "--out", str(tmp_path / "o")]) != 0
