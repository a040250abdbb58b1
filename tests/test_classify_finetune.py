"""Fine-tuned classifiers on tiny random backbones: batches, the objective, padding, save/load,
resuming, balanced sampling / class weighting on imbalanced data, calibration, bad input."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.classify import (
    CBOWClassifier,
    FineTunedClassifier,
    NaiveBayes,
    load_classifier,
    macro_f1,
    save_classifier,
)
from lmlab.classify import finetune as finetune_module
from lmlab.classify.batches import LabeledBatches, balanced_probabilities, pad_rows
from lmlab.classify.calibrate import calibration_report, class_scores, label_indices
from lmlab.classify.objective import ClassificationLoss
from lmlab.core.errors import DataError, ModelError
from lmlab.models.config import TransformerConfig
from lmlab.models.directory import save_model_dir
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer

TEXTS = ["a great fun film", "great acting , great story", "fun and moving", "a dull boring mess",
         "boring , dull and slow", "a mess of a film", "moving and great", "slow and boring"]
LABELS = ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neg"]


def tiny_backbone(preset: str = "bert", texts=TEXTS, seed: int = 0) -> tuple[TransformerLM, WordLevelTokenizer]:
    torch.manual_seed(seed)
    tok = WordLevelTokenizer("word").train(texts)
    cfg = TransformerConfig.from_preset(preset, vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2,
                                        d_ff=32, context_length=32)
    return TransformerLM(cfg), tok


def tiny(preset: str = "bert", **kwargs) -> FineTunedClassifier:
    options = dict(steps=40, lr=3e-3, batch_size=4, warmup=0.1, device="cpu", seed=0)
    return FineTunedClassifier(tiny_backbone(preset), **{**options, **kwargs})


# --- batches ------------------------------------------------------------------------------------
def test_pad_rows_right_pads_with_a_mask():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_batches_are_a_pure_function_of_the_index_and_cover_each_epoch():
    rng = np.random.default_rng(0)
    rows = [[1] * int(n) for n in rng.integers(1, 30, size=103)]
    y = rng.integers(0, 2, size=103)
    a = LabeledBatches(rows, y, batch_size=8, pad_id=0, bucket=4, seed=3)
    b = LabeledBatches(rows, y, batch_size=8, pad_id=0, bucket=4, seed=3)
    for i in (0, 5, 17, 3):
        assert torch.equal(a.batch(i)["input"], b.batch(i)["input"])
        assert np.array_equal(a.indices(i), b.indices(i))
    stream = np.concatenate([a._drawn(c) for c in range(5)])  # 5 chunks of 32 = 160 > 2 epochs' start
    assert sorted(stream[:103]) == list(range(103))  # the first epoch is a permutation
    assert sorted(stream[103:160]) == sorted(set(stream[103:160]))  # the second starts without repeats


def test_length_bucketing_cuts_padding():
    rng = np.random.default_rng(1)
    rows = [[1] * int(n) for n in rng.integers(1, 60, size=400)]
    source = LabeledBatches(rows, np.zeros(400, dtype=np.int64) + np.arange(400) % 2, batch_size=16, pad_id=0,
                            bucket=25)
    bucketed = sum(source.batch(i)["mask"].numel() for i in range(25))
    unsorted = sum(max(len(rows[j]) for j in pick) * len(pick)
                   for pick in np.array_split(rng.permutation(400), 25))
    assert bucketed < 0.6 * unsorted


def test_balanced_sampler_draws_classes_equally():
    y = np.array([0] * 90 + [1] * 10)
    p = balanced_probabilities(y)
    assert p[y == 0].sum() == pytest.approx(0.5) and p[y == 1].sum() == pytest.approx(0.5)
    source = LabeledBatches([[1, 2]] * 100, y, batch_size=20, pad_id=0, sampler="balanced", bucket=5)
    labels = torch.cat([source.batch(i)["label"] for i in range(50)]).float()
    assert labels.mean().item() == pytest.approx(0.5, abs=0.05)


# --- objective ----------------------------------------------------------------------------------
class FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, ids, mask):
        return self.logits


def test_classification_loss_is_the_hand_computed_cross_entropy():
    model = FixedLogits([[0.0, 0.0], [2.0, 0.0]])
    batch = {"input": None, "mask": None, "label": torch.tensor([0, 1])}
    loss, n = ClassificationLoss()(model, batch)
    nll = [np.log(2), np.log(1 + np.exp(2.0))]
    assert n == 2 and loss.item() == pytest.approx(np.mean(nll), rel=1e-6)
    weighted, _ = ClassificationLoss(class_weights=[1.0, 3.0])(model, batch)
    assert weighted.item() == pytest.approx((nll[0] + 3 * nll[1]) / 4, rel=1e-6)
    assert weighted.item() == pytest.approx(
        F.cross_entropy(model.logits, batch["label"], weight=torch.tensor([1.0, 3.0])).item(), rel=1e-6)


# --- the fine-tuner -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted() -> FineTunedClassifier:
    """One tiny encoder fine-tuned on the toy set, shared by the tests that only read it."""
    return tiny(steps=30).fit(TEXTS, LABELS)


def test_finetuned_encoder_learns_saves_and_loads(fitted, tmp_path):
    clf = fitted
    assert clf.net.head.pooling == "mean" and clf.train_result.steps == 30
    assert clf.score(TEXTS, LABELS) == 1.0
    save_classifier(tmp_path / "clf", clf)
    assert (tmp_path / "clf" / "tokenizer.json").exists()
    back = load_classifier(tmp_path / "clf")
    np.testing.assert_allclose(back.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=1e-6)
    assert back.predict(["great fun"]) == clf.predict(["great fun"])


def test_finetuned_decoder_pools_the_last_real_token(no_progress):
    clf = tiny("gpt2", steps=25).fit(TEXTS, LABELS)
    assert clf.net.head.pooling == "last"
    assert clf.score(TEXTS, LABELS) >= 0.75


@pytest.mark.parametrize("preset", ["bert", "gpt2"])
def test_padding_does_not_change_a_texts_logits(preset, no_progress):
    clf = tiny(preset, steps=1).fit(TEXTS, LABELS)
    alone = clf.logits(["fun and moving"])
    batched = clf.logits(["fun and moving", "a dull boring mess of a film , great acting , great story"])
    np.testing.assert_allclose(batched[:1], alone, atol=1e-5)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch, no_progress):
    whole = tiny(steps=6, run_dir=tmp_path / "whole").fit(TEXTS, LABELS)
    real_train = finetune_module.train

    def killed_at_4(*args, **kwargs):
        def on_step(step, loss):
            if step == 4:
                raise KeyboardInterrupt

        return real_train(*args, on_step=on_step, **kwargs)

    monkeypatch.setattr(finetune_module, "train", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        tiny(steps=6, run_dir=tmp_path / "killed", checkpoint_every=3).fit(TEXTS, LABELS)
    monkeypatch.setattr(finetune_module, "train", real_train)
    resumed = tiny(steps=6, run_dir=tmp_path / "killed", checkpoint_every=3).fit(TEXTS, LABELS)
    log = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(resumed.logits(TEXTS), whole.logits(TEXTS), atol=1e-5)


def test_a_model_directory_is_a_backbone(tmp_path, no_progress):
    lm, tok = tiny_backbone()
    config, tensors = lm.to_state()
    save_model_dir(tmp_path / "lm", config, tensors, tokenizer=tok)
    clf = FineTunedClassifier(str(tmp_path / "lm"), steps=2, batch_size=4, device="cpu").fit(TEXTS, LABELS)
    assert clf.predict_proba(TEXTS).shape == (8, 2)
    assert clf.settings()["backbone"] == str(tmp_path / "lm")


# --- imbalance ----------------------------------------------------------------------------------
def imbalanced(n_a: int, n_b: int, seed: int) -> tuple[list[str], list[str]]:
    """Two classes sharing most words; each has a marker word in half its texts, the other's in a fifth."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for lab, other, n in (("a", "b", n_a), ("b", "a", n_b)):
        for _ in range(n):
            words = list(rng.choice([f"w{i}" for i in range(20)], 6))
            words += [f"{lab}{rng.integers(3)}"] if rng.random() < 0.5 else []
            words += [f"{other}{rng.integers(3)}"] if rng.random() < 0.2 else []
            texts.append(" ".join(words))
            labels.append(lab)
    return texts, labels


def test_balanced_sampling_and_weighting_raise_macro_f1_on_imbalanced_data():
    xt, yt = imbalanced(380, 20, seed=0)
    xe, ye = imbalanced(200, 200, seed=1)
    scores = {}
    for name, options in {"plain": {}, "sampler": {"sampler": "balanced"}, "weight": {"class_weight": "balanced"}}.items():
        model = CBOWClassifier(dim=16, epochs=5, lr=0.02, batch_size=32, seed=0, **options).fit(xt, yt)
        scores[name] = macro_f1(ye, model.predict(xe))
    assert scores["sampler"] > scores["plain"] + 0.1
    assert scores["weight"] > scores["plain"] + 0.1


@pytest.mark.slow
def test_finetuner_balanced_sampling_raises_macro_f1_on_imbalanced_data(no_progress):
    xt, yt = imbalanced(190, 10, seed=0)
    xe, ye = imbalanced(100, 100, seed=1)
    backbone = tiny_backbone(texts=xt + xe)
    scores = {}
    for name, options in {"plain": {}, "balanced": {"sampler": "balanced"}}.items():
        lm = TransformerLM(backbone[0].config)
        lm.load_state_dict(backbone[0].state_dict())
        model = FineTunedClassifier((lm, backbone[1]), steps=30, lr=3e-3, batch_size=16, device="cpu",
                                    **options).fit(xt, yt)
        scores[name] = macro_f1(ye, model.predict(xe))
    assert scores["balanced"] > scores["plain"] + 0.1


# --- calibration --------------------------------------------------------------------------------
def test_calibration_report_agrees_with_scikit_learn(tmp_path):
    metrics = pytest.importorskip("sklearn.metrics")
    nb = NaiveBayes().fit(TEXTS, LABELS)
    tests, truth = ["great fun", "boring mess", "a film", "dull and moving"], ["pos", "neg", "pos", "neg"]
    report = calibration_report(nb, tests, truth, held_out=(TEXTS, LABELS), n_bins=5,
                                reliability_png=str(tmp_path / "rel.png"))
    proba = nb.predict_proba(tests)
    y = label_indices(nb.classes, truth)
    assert report["nll"] == pytest.approx(metrics.log_loss(y, proba, labels=[0, 1]), rel=1e-9)
    # the multi-class Brier score is twice scikit-learn's binary one
    assert report["brier"] == pytest.approx(2 * metrics.brier_score_loss(y, proba[:, 1]), rel=1e-9)
    assert report["temperature"] > 0 and (tmp_path / "rel.png").stat().st_size > 1000
    np.testing.assert_allclose(class_scores(nb, tests), np.log(proba))


def test_temperature_scaling_never_raises_the_nll_it_was_fitted_on(fitted):
    report = calibration_report(fitted, TEXTS, LABELS, held_out=(TEXTS, LABELS))
    assert report["scaled"]["nll"] <= report["nll"] + 1e-12
    assert report["temperature"] != 1.0  # a 30-step fit on 8 texts is overconfident or under-, not exact


def test_unknown_labels_are_a_clear_error():
    with pytest.raises(DataError, match="never saw: 'maybe'"):
        label_indices(["neg", "pos"], ["pos", "maybe"])


# --- bad input ----------------------------------------------------------------------------------
def test_bad_input_gives_one_clear_error(fitted, tmp_path):
    with pytest.raises(DataError, match="only one class"):
        tiny().fit(TEXTS, ["pos"] * len(TEXTS))
    with pytest.raises(DataError, match="empty after tokenisation"):
        tiny().fit(TEXTS + ["   "], LABELS + ["pos"])
    clf = fitted
    with pytest.raises(DataError, match="empty after tokenisation"):
        clf.predict(["great", "\t"])
    save_classifier(tmp_path / "clf", clf)
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    config["classes"] = ["neg", "pos", "meh"]
    (tmp_path / "clf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="head's weights do not match"):
        load_classifier(tmp_path / "clf")
    with pytest.raises(ModelError, match="no hidden states"):
        FineTunedClassifier((torch.nn.Linear(2, 2), None)).fit(TEXTS, LABELS)


# --- CLI ----------------------------------------------------------------------------------------
def test_cli_fine_tunes_then_evaluates_with_calibration(tmp_path, capsys, no_progress):
    from lmlab.cli import main

    lm, tok = tiny_backbone()
    config, tensors = lm.to_state()
    save_model_dir(tmp_path / "lm", config, tensors, tokenizer=tok)
    data = tmp_path / "toy.tsv"
    data.write_text("".join(f"{t}\t{lab}\n" for t, lab in zip(TEXTS, LABELS, strict=True)), encoding="utf-8")
    assert main(["classify", "train", "--model", "finetune", "--backbone", str(tmp_path / "lm"), "--data", str(data),
                 "--out", str(tmp_path / "clf"), "--steps", "3", "--batch-size", "4", "--device", "cpu",
                 "--sampler", "balanced", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["kind"] == "finetune" and trained["classes"] == ["neg", "pos"]
    png = tmp_path / "rel.png"
    assert main(["classify", "eval", "--model", str(tmp_path / "clf"), "--data", str(data), "--calibration",
                 "--held-out", str(data), "--reliability", str(png), "--bins", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    cal = result["calibration"]
    assert set(cal) >= {"ece", "mce", "brier", "nll", "temperature", "scaled", "reliability_png"} and png.exists()
    assert cal["scaled"]["nll"] <= cal["nll"] + 1e-12
    assert main(["classify", "eval", "--model", str(tmp_path / "clf"), "--data", str(data), "--reliability",
                 str(png)]) == 1
    assert "--calibration" in capsys.readouterr().err


# --- MiniLM -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_fine_tunes_a_few_steps_on_sst2(tmp_path, no_progress):
    from lmlab.classify import load_labeled
    from tests.conftest import need_data

    need_data("sst2", "dev.tsv")
    texts, labels = load_labeled("sst2:dev")
    clf = FineTunedClassifier("minilm", steps=3, batch_size=8, max_length=32, lr=5e-5, device="cpu")
    clf.fit(texts[:48], labels[:48])
    assert clf.net.head.pooling == "mean" and np.isfinite(clf.train_result.final_loss)
    save_classifier(tmp_path / "clf", clf)
    back = load_classifier(tmp_path / "clf")
    np.testing.assert_allclose(back.predict_proba(texts[48:56]), clf.predict_proba(texts[48:56]), atol=1e-5)
