"""IBM Models 1 and 2: translation tables, alignment tables and Viterbi alignments equal NLTK's
after the same EM iterations on the same Multi30k pairs; the textbook E-step's guarantees; the
symmetrisation heuristics on a hand-worked example; the ``align-words`` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import need_data

from lmlab.analysis.tokenize import word_tokens
from lmlab.cli import main
from lmlab.core.errors import DataError
from lmlab.wordalign import symmetrize, train_ibm1, train_ibm2
from lmlab.wordalign.ibm import MIN_PROB, _e_step

nltk_translate = pytest.importorskip("nltk.translate")

WORDS = r"\w+|[^\w\s]"


def multi30k_pairs(n: int) -> list[tuple[list[str], list[str]]]:
    folder = need_data("multi30k")
    de = (folder / "train.de").read_text(encoding="utf-8").splitlines()[:n]
    en = (folder / "train.en").read_text(encoding="utf-8").splitlines()[:n]
    return [(word_tokens(d, WORDS), word_tokens(e, WORDS)) for d, e in zip(de, en, strict=True)]


def nltk_bitext(pairs):
    return [nltk_translate.AlignedSent(list(t), list(s)) for s, t in pairs]  # words = target, mots = source


def check_viterbi(ours, model, bitext):
    """NLTK's chosen link of every target word has our best probability; where the best link wins
    by a clear margin (not a floating-point near-tie) the two choose the same source word."""
    probs, offsets, lengths = model.link_probs(), model.links.offsets, model.links.lengths
    clear = same = 0
    for k, (alignment, sent) in enumerate(zip(ours, bitext, strict=True)):
        l, m = lengths[k]  # noqa: E741
        block = probs[offsets[k]:offsets[k + 1]].reshape(m, l + 1).copy()
        block[:, 0] = np.maximum(block[:, 0], MIN_PROB)
        theirs = dict(sent.alignment)
        for j, i in alignment:
            mine_p = block[j, 0 if i is None else i + 1]
            their_i = theirs[j]
            assert block[j, 0 if their_i is None else their_i + 1] == pytest.approx(mine_p, rel=1e-9)
            top2 = np.sort(block[j])[-2:] if l else np.array([0.0, block[j, 0]])
            if top2[1] - top2[0] > 1e-9 * top2[1]:
                clear += 1
                same += i == their_i
    assert clear > 0.5 * sum(len(a) for a in ours) and same == clear  # many links tie exactly (rare words)


def test_ibm1_equals_nltk_on_multi30k():
    pairs = multi30k_pairs(150)
    assert any(len(set(t)) < len(t) for _, t in pairs)  # repeated target words: the NLTK denominator matters
    bitext = nltk_bitext(pairs)
    theirs = nltk_translate.IBMModel1(bitext, 5)
    ours = train_ibm1(pairs, 5, normaliser="word")
    table = ours.translation_table()
    assert sum(len(row) for row in table.values()) == len(ours.translation) > 1000
    for source, row in table.items():
        for target, p in row.items():
            assert abs(p - theirs.translation_table[target][source]) < 1e-6
    check_viterbi(ours.viterbi(), ours, bitext)


def test_ibm2_equals_nltk_on_multi30k():
    pairs = multi30k_pairs(80)
    bitext = nltk_bitext(pairs)
    theirs = nltk_translate.IBMModel2(bitext, 3)  # 6 iterations of Model 1 first, then 3 of Model 2
    ours = train_ibm2(pairs, 3, normaliser="word")
    for source, row in ours.translation_table().items():
        for target, p in row.items():
            assert abs(p - theirs.translation_table[target][source]) < 1e-6
    table = ours.alignment_table()
    assert len(table) > 500
    for (i, j, l, m), p in table.items():  # noqa: E741
        assert abs(p - theirs.alignment_table[i][j][l][m]) < 1e-6
    check_viterbi(ours.viterbi(), ours, bitext)


def test_textbook_e_step_equals_nltk_without_repeated_target_words():
    pairs = [p for p in multi30k_pairs(400) if len(set(p[1])) == len(p[1])][:120]
    theirs = nltk_translate.IBMModel1(nltk_bitext(pairs), 4)
    ours = train_ibm1(pairs, 4)
    for source, row in ours.translation_table().items():
        for target, p in row.items():
            assert abs(p - theirs.translation_table[target][source]) < 1e-6


def test_em_never_lowers_the_likelihood_and_posteriors_sum_to_one():
    pairs = multi30k_pairs(200)
    for model in (train_ibm1(pairs, 6), train_ibm2(pairs, 4, ibm1_iterations=2)):
        ll = model.log_likelihood
        assert len(ll) >= 5 and all(b >= a - 1e-6 for a, b in zip(ll, ll[1:], strict=False))
        posterior, _ = _e_step(model)
        sums = np.bincount(model.links.position_group, weights=posterior)
        np.testing.assert_allclose(sums, 1.0, atol=1e-12)
        sums = np.bincount(model.links.pair_source, weights=model.translation)
        np.testing.assert_allclose(sums, 1.0, atol=1e-9)  # t(· | e) is a distribution over co-occurring words


def test_ibm1_one_iteration_by_hand():
    # two pairs; after one EM step from uniform t, t(f | e) is the posterior mass over 1 / (l + 1)
    pairs = [(["das", "haus"], ["the", "house"]), (["das", "buch"], ["the", "book"])]
    model = train_ibm1(pairs, 1)
    t = model.translation_table()
    # every link has posterior 1/3; c(the | das) = 2/3 of 2 total mass (4 target words × 1/3) for "das"
    assert t["das"]["the"] == pytest.approx((2 / 3) / (4 / 3))
    assert t["haus"]["house"] == pytest.approx((1 / 3) / (2 / 3))
    assert t[None]["the"] == pytest.approx((2 / 3) / (4 / 3))


def test_symmetrization_by_hand():
    forward = {(0, 0), (3, 3), (0, 4)}  # source→target: one source per target word
    backward = {(0, 0), (3, 3), (1, 1)}  # target→source: one target per source word
    expect = {"intersection": [(0, 0), (3, 3)], "union": [(0, 0), (0, 4), (1, 1), (3, 3)],
              "grow-diag": [(0, 0), (1, 1), (3, 3)],  # (1, 1) neighbours (0, 0); (0, 4) neighbours nothing
              "grow-diag-final": [(0, 0), (0, 4), (1, 1), (3, 3)],  # target 4 is unaligned
              "grow-diag-final-and": [(0, 0), (1, 1), (3, 3)]}  # ... but source 0 is not
    for method, points in expect.items():
        assert symmetrize(forward, backward, 4, 5, method) == points


def test_align_words_cli_writes_the_table(tmp_path, capsys):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("das Haus\ndas Buch\nein Buch\n", encoding="utf-8")
    tgt.write_text("the house\nthe book\na book\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["align-words", "--model", "ibm2", "--source", str(src), "--target", str(tgt), "--iterations", "3",
                 "--symmetrize", "grow-diag-final-and", "--min-prob", "0", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sentence_pairs"] == 3 and summary["model"] == "ibm2"
    model = train_ibm2([(s.lower().split(), t.split()) for s, t in
                        zip(src.read_text().splitlines(), tgt.read_text().splitlines(), strict=True)], 3)
    rows = [line.split("\t") for line in (out / "translation_table.tsv").read_text().splitlines()[1:]]
    table = model.translation_table()
    assert len(rows) == sum(len(r) for r in table.values())
    for source, target, p in rows:
        assert float(p) == pytest.approx(table[None if source == "<NULL>" else source][target], rel=1e-8)
    assert len((out / "alignments.txt").read_text().splitlines()) == 3
    assert (out / "alignment_table.tsv").exists()


def test_misaligned_files_name_both_counts(tmp_path, capsys):
    src, tgt = tmp_path / "a.de", tmp_path / "a.en"
    src.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    tgt.write_text("one\ntwo\n", encoding="utf-8")
    assert main(["align-words", "--source", str(src), "--target", str(tgt), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "has 3 lines" in err and "has 2" in err and "internal" not in err


def test_empty_side_is_refused():
    with pytest.raises(DataError, match="pair 2 has an empty target"):
        train_ibm1([(["a"], ["b"]), (["c"], [])], 1)
