"""Pairwise rankings: Bradley-Terry MLE, Elo updates, position bias, and an LM as judge."""

from __future__ import annotations

import json
import math
import random

import pytest

from lmlab.core.errors import DataError
from lmlab.data import from_texts
from lmlab.eval.pairwise import bradley_terry, elo, judge_all_pairs, position_bias, win_counts
from lmlab.eval.requests import RequestRunner
from lmlab.ngram import UnigramLM
from lmlab.tokenizers import WordLevelTokenizer


def games(a, b, a_wins, b_wins, ties=0):
    return ([{"a": a, "b": b, "winner": "a"}] * a_wins + [{"a": a, "b": b, "winner": "b"}] * b_wins
            + [{"a": a, "b": b, "winner": "tie"}] * ties)


def test_two_player_bradley_terry_is_the_odds():
    # A beats B 3 times in 4: the MLE strength ratio is 3, i.e. 400·log10(3) Elo points apart
    r = bradley_terry(games("A", "B", 3, 1))
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (r["A"] + r["B"]) / 2 == pytest.approx(1000)
    r = bradley_terry(games("A", "B", 2, 1, ties=2))  # ties are half a win each: 3 to 2
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(1.5), abs=1e-6)


def test_bradley_terry_solves_the_likelihood_equations():
    rng = random.Random(0)
    true = {"x": 1.0, "y": 2.0, "z": 4.0, "w": 0.5}
    names = sorted(true)
    js = []
    for _ in range(3000):
        a, b = rng.sample(names, 2)
        js.append({"a": a, "b": b, "winner": "a" if rng.random() < true[a] / (true[a] + true[b]) else "b"})
    r = bradley_terry(js)
    s = {p: 10 ** ((v - 1000) / 400) for p, v in r.items()}
    _, wins = win_counts(js)
    for p in names:  # MLE: observed wins = expected wins for every player
        observed = sum(w for (i, _), w in wins.items() if i == p)
        expected = sum((wins[i, j] + wins[j, i]) * s[p] / (s[p] + s[j]) for (i, j) in list(wins) if i == p)
        assert observed == pytest.approx(expected, rel=1e-6)
    assert r["z"] - r["y"] == pytest.approx(400 * math.log10(2), abs=40)
    assert sorted(names, key=r.get) == ["w", "x", "y", "z"]


def test_never_winning_player_needs_a_prior():
    with pytest.raises(DataError, match="never won"):
        bradley_terry(games("A", "B", 2, 0))
    r = bradley_terry(games("A", "B", 2, 0), prior=0.5)  # 2.5 to 0.5
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(5), abs=1e-6)


def test_elo_updates():
    assert elo(games("A", "B", 1, 0)) == {"A": 1016.0, "B": 984.0}
    assert elo(games("A", "B", 0, 0, ties=1)) == {"A": 1000.0, "B": 1000.0}
    r = elo(games("A", "B", 1, 1))  # after 1016/984, B's win is worth more than 16
    assert r["B"] > r["A"] and r["A"] + r["B"] == pytest.approx(2000)


def test_position_bias_and_swap_consistency():
    always_first = [{"prompt": "p", "a": "A", "b": "B", "winner": "a"}, {"prompt": "p", "a": "B", "b": "A", "winner": "a"}]
    bias = position_bias(always_first)
    assert bias["first_position_win_rate"] == 1.0 and bias["swap_consistency"] == 0.0 and bias["swapped_pairs"] == 1
    fair = [{"prompt": "p", "a": "A", "b": "B", "winner": "a"}, {"prompt": "p", "a": "B", "b": "A", "winner": "b"}]
    assert position_bias(fair) == {"first_position_win_rate": 0.5, "decisive": 2, "swapped_pairs": 1,
                                   "swap_consistency": 1.0}


def test_a_language_model_as_judge_shows_its_position_bias(no_progress):
    text = "1 1 1 2 the answer is better"
    tok = WordLevelTokenizer("word").train([text])
    judge_lm = UnigramLM.fit_corpus(from_texts([text]), tok)  # prefers '1' whatever it reads
    records = [{"prompt": "what?", "answers": {"m1": "yes", "m2": "no", "m3": "maybe"}}]
    js = judge_all_pairs(RequestRunner(judge_lm, tok), records)
    assert len(js) == 6 and all(j["winner"] == "a" for j in js)
    assert position_bias(js)["swap_consistency"] == 0.0


def test_compare_cli(capsys, tmp_path):
    from lmlab.cli import main

    path = tmp_path / "j.jsonl"
    path.write_text("".join(json.dumps(j) + "\n" for j in games("A", "B", 3, 1) + games("B", "C", 3, 1)))
    assert main(["eval", "compare", "--judgements", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ranking"] == ["A", "B", "C"] and result["judgements"] == 8
    assert main(["eval", "compare"]) == 1
