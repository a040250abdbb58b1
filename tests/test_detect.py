"""Machine-text detection: scores against hand computations, AUROC against scikit-learn, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmlab.core.errors import DataError, ModelError
from lmlab.eval.detect import detection_auroc, score_documents, split_sentences
from lmlab.eval.roc import auroc, roc_curve
from lmlab.ngram import UnigramLM
from lmlab.tokenizers import WordLevelTokenizer
from tests.test_cli import run

TEXT = "a b . a c ."


@pytest.fixture
def tok():
    return WordLevelTokenizer("word").train([TEXT])  # ids: <unk> <s> </s> <pad> . a b c


def unigram(tok, counts):
    """A unigram model with add-0.5 counts over ., a, b, c (ids 4-7): p(w) = (n_w + 0.5) / (N + 0.5·V')."""
    full = np.zeros(tok.vocab_size)
    full[4:8] = counts
    return UnigramLM(full, smoothing="add-k", k=0.5, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
                     unk_id=tok.unk_id)


def probabilities(counts):
    """The unigram's probabilities by hand: every id but <s> and <pad> (6 of 8) gets k = 0.5."""
    denom = sum(counts) + 0.5 * 6
    return {w: (n + 0.5) / denom for w, n in zip(".abc", counts, strict=True)}


def test_split_sentences_keeps_every_character():
    text = "One. Two!  Three?\nFour"
    assert split_sentences(text) == ["One.", " Two!", "  Three?", "\nFour"]
    assert "".join(split_sentences(text)) == text


def test_perplexity_and_burstiness_equal_a_hand_computation(tok):
    counts = [3, 2, 1, 1]
    p = probabilities(counts)
    [doc] = score_documents(unigram(tok, counts), tok, [TEXT], min_tokens=2)
    first = [math.log(p[w]) for w in "ab."]  # sentence "a b ." (the <s> start token is context)
    second = [math.log(p[w]) for w in "ac."]
    assert doc["tokens"] == 6
    assert doc["perplexity"] == pytest.approx(math.exp(-(sum(first) + sum(second)) / 6), rel=1e-12)
    nll = [-sum(first) / 3, -sum(second) / 3]
    assert doc["sentence_log_perplexities"] == pytest.approx(nll, rel=1e-12)
    assert doc["burstiness"] == pytest.approx(abs(nll[0] - nll[1]) / 2, rel=1e-12)  # population std of two


def test_ratio_detectors_equal_a_hand_computation(tok):
    p_counts, q_counts = [3, 2, 1, 1], [1, 1, 4, 2]
    p, q = probabilities(p_counts), probabilities(q_counts)
    [doc] = score_documents(unigram(tok, p_counts), tok, [TEXT], reference=unigram(tok, q_counts),
                            reference_tokenizer=tok, min_tokens=2)
    words = "ab.ac."
    mean_log_p = sum(math.log(p[w]) for w in words) / 6
    mean_log_q = sum(math.log(q[w]) for w in words) / 6
    assert doc["likelihood_ratio"] == pytest.approx(mean_log_p - mean_log_q, rel=1e-12)
    # the reference's mass on the two unseen predictable ids (<unk>, </s>: k / denominator each) counts too
    q_unseen, p_unseen = 0.5 / (sum(q_counts) + 3), 0.5 / (sum(p_counts) + 3)
    cross = -sum(q[w] * math.log(p[w]) for w in ".abc") - 2 * q_unseen * math.log(p_unseen)
    assert doc["binoculars"] == pytest.approx(-mean_log_p / cross, rel=1e-12)
    assert doc["perplexity"] == pytest.approx(math.exp(-mean_log_p), rel=1e-12)


def test_one_sentence_has_no_burstiness_and_is_left_out_of_its_auroc(tok):
    docs = score_documents(unigram(tok, [3, 2, 1, 1]), tok, ["a b .", TEXT, "a c . b ."], min_tokens=2)
    assert docs[0]["burstiness"] is None
    result = detection_auroc(docs, [0, 1, 0])
    assert result["burstiness"]["left_out"] == 1 and result["perplexity"]["documents"] == 3
    result = detection_auroc(docs, [1, 0, 0])  # the one machine document has one sentence
    assert result["burstiness"]["auroc"] is None and "one class" in result["burstiness"]["note"]


def test_auroc_and_roc_curve_equal_scikit_learn():
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    rng = np.random.default_rng(0)
    for n in (5, 40, 301):
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(size=n) + labels, 1)  # rounding makes ties
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        fpr, tpr = roc_curve(scores, labels)
        sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
        np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert auroc([1, 2, 3], [0, 0, 1]) == 1.0 and auroc([1, 2, 3], [1, 0, 0]) == 0.0
    with pytest.raises(DataError, match="both classes"):
        auroc([1, 2], [1, 1])


def test_score_documents_refuses_bad_input(tok):
    lm = unigram(tok, [3, 2, 1, 1])
    with pytest.raises(DataError, match="no documents"):
        score_documents(lm, tok, [])
    with pytest.raises(DataError, match="document 1 has 3 scored tokens, fewer than the minimum of 4"):
        score_documents(lm, tok, [TEXT, "a b ."], min_tokens=4)
    other = WordLevelTokenizer("word").train(["x y z"])
    with pytest.raises(ModelError, match="reference model's tokenizer"):
        score_documents(lm, tok, [TEXT], reference=lm, reference_tokenizer=other, min_tokens=2)


@pytest.fixture
def model_dirs(tmp_path):
    from lmlab.models import save_model_dir
    from tests.tiny_lm import TEXT as TINY_TEXT
    from tests.tiny_lm import tiny_transformer

    tok = WordLevelTokenizer("char").train([TINY_TEXT])
    paths = []
    for seed in (0, 1):
        paths.append(str(save_model_dir(tmp_path / f"m{seed}", *tiny_transformer(tok, seed=seed).to_state(),
                                        tokenizer=tok)))
    other = WordLevelTokenizer("word").train([TINY_TEXT])
    paths.append(str(save_model_dir(tmp_path / "word", *tiny_transformer(other).to_state(), tokenizer=other)))
    return paths, tok


def test_cli_scores_documents_and_evaluates(capsys, tmp_path, model_dirs):
    from lmlab.models import load_model

    (main_dir, ref_dir, _), tok = model_dirs
    docs = ["the quick brown fox jumps. over the lazy dog!", "pack my box. with five dozen liquor jugs.",
            "the lazy fox. the quick dog. the box."]
    plain = tmp_path / "docs.txt"
    plain.write_text("\n".join(docs) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "detect", str(plain), "--model", main_dir, "--json")
    assert code == 0, err
    result = json.loads(out)
    lm, _ = load_model(main_dir)
    for doc, text in zip(result["documents"], docs, strict=True):
        ids = [tok.start_id, *tok.encode(text, add_special_tokens=False)] if tok.start_id is not None else \
            tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            lp = lm.score(torch.tensor([ids])).double()
        assert doc["perplexity"] == pytest.approx(math.exp(-float(lp.mean())), rel=1e-5)
    labelled = tmp_path / "docs.jsonl"
    labelled.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n"
                                for t, lab in zip(docs, ["human", "machine", "human"], strict=True)))
    png = tmp_path / "roc.png"
    code, out, err = run(capsys, "detect", str(labelled), "--model", main_dir, "--reference-model", ref_dir,
                         "--eval", "--plot", str(png), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result["auroc"]) == {"perplexity", "burstiness", "likelihood_ratio", "binoculars"}
    assert all(0.0 <= v["auroc"] <= 1.0 for v in result["auroc"].values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_input_is_one_line(capsys, tmp_path, model_dirs):
    (main_dir, _, word_dir), _ = model_dirs
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code, out, err = run(capsys, "detect", str(empty), "--model", main_dir)
    assert code == 1 and out == "" and "holds no documents" in err and "Traceback" not in err
    short = tmp_path / "short.txt"
    short.write_text("the quick brown fox jumps over the lazy dog\nthe\n", encoding="utf-8")
    code, _, err = run(capsys, "detect", str(short), "--model", main_dir, "--min-tokens", "4", "--quiet")
    assert code == 1 and "document 1 has" in err and "fewer than the minimum of 4" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "detect", str(short), "--model", main_dir, "--reference-model", word_dir)
    assert code == 1 and "the reference model's tokenizer" in err and "Traceback" not in err
    long = tmp_path / "long.txt"
    long.write_text("the quick brown fox." * 5 + "\n", encoding="utf-8")  # 100 characters and <s>: the context is 64
    code, _, err = run(capsys, "detect", str(long), "--model", main_dir, "--quiet")
    assert code == 1 and "document 0 has 101 tokens, more than the model's context of 64" in err
    code, _, err = run(capsys, "detect", str(short), "--model", main_dir, "--eval")
    assert code == 1 and "--eval needs a label" in err
