"""Pairwise comparison: rankings from judgements, position bias, and an LM as judge.

A judgement is ``{"a": name, "b": name, "winner": "a" | "b" | "tie"}`` where ``a`` was
shown first. Bradley-Terry strengths are fitted by Hunter's MM algorithm (ties count half
a win each way) and reported on the Elo scale (400·log10 strength, mean 1000); online Elo
is also given. Judging every pair in both orders (position swap) measures position bias:
how often the first answer wins, and how often the verdict survives the swap.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from ..core.errors import DataError
from ..core.validate import check_number

WINNERS = ("a", "b", "tie")
JUDGE_PROMPT = ("You are an impartial judge. Read the question and two answers, then say which answer is "
                "better.\n\nQuestion: {question}\n\nAnswer 1: {first}\n\nAnswer 2: {second}\n\n"
                "The better answer is Answer")


def _check(judgements: Sequence[dict]) -> None:
    if not judgements:
        raise DataError("no judgements to rank", "pass at least one {a, b, winner} record")
    for j in judgements:
        if j.get("winner") not in WINNERS or "a" not in j or "b" not in j or j["a"] == j["b"]:
            raise DataError(f"bad judgement {j!r}", "each needs distinct 'a' and 'b' and a winner of a, b or tie")


def win_counts(judgements: Sequence[dict]) -> tuple[list[str], dict[tuple[str, str], float]]:
    """(players, wins[(i, j)] = times i beat j, ties counting one half each)."""
    _check(judgements)
    wins: dict[tuple[str, str], float] = defaultdict(float)
    players: set[str] = set()
    for j in judgements:
        a, b = j["a"], j["b"]
        players.update((a, b))
        if j["winner"] == "a":
            wins[a, b] += 1.0
        elif j["winner"] == "b":
            wins[b, a] += 1.0
        else:
            wins[a, b] += 0.5
            wins[b, a] += 0.5
    return sorted(players), wins


def bradley_terry(judgements: Sequence[dict], *, prior: float = 0.0, iterations: int = 10_000,
                  tol: float = 1e-12) -> dict[str, float]:
    """Bradley-Terry maximum-likelihood ratings on the Elo scale (mean 1000).

    P(i beats j) = s_i / (s_i + s_j). ``prior`` adds that many wins each way to every pair
    that met (a pseudo-count), which keeps a player who never won finite.
    """
    check_number("prior", prior, low=0.0)
    check_number("prior", prior, low=0.0)
    players, wins = win_counts(judgements)
    for (i, j) in {pair for (a, b) in list(wins) for pair in ((a, b), (b, a))}:
        wins[i, j] += prior
    games: dict[tuple[str, str], float] = defaultdict(float)
    for (i, j), w in wins.items():
        games[i, j] += w
        games[j, i] += w
    total_wins = {p: sum(w for (i, _), w in wins.items() if i == p) for p in players}
    never = [p for p, w in total_wins.items() if w == 0]
    if never:
        raise DataError(f"{', '.join(never)} never won, so its Bradley-Terry strength is 0",
                        "pass a prior > 0 (pseudo-wins each way per pair) to keep ratings finite")
    strength = dict.fromkeys(players, 1.0)
    for _ in range(iterations):
        new = {}
        for p in players:
            denom = sum(n / (strength[p] + strength[q]) for (i, q), n in games.items() if i == p)
            new[p] = total_wins[p] / denom if denom else strength[p]
        log_mean = sum(math.log(v) for v in new.values()) / len(new)
        new = {p: v / math.exp(log_mean) for p, v in new.items()}
        change = max(abs(math.log(new[p] / strength[p])) for p in players)
        strength = new
        if change < tol:
            break
    return {p: 1000.0 + 400.0 * math.log10(s) for p, s in strength.items()}


def elo(judgements: Sequence[dict], *, k: float = 32.0, initial: float = 1000.0) -> dict[str, float]:
    """Online Elo in the order given (order matters; Bradley-Terry does not)."""
    check_number("k", k, low=0.0, low_inclusive=False)
    _check(judgements)
    rating: dict[str, float] = defaultdict(lambda: initial)
    for j in judgements:
        a, b = j["a"], j["b"]
        expected_a = 1.0 / (1.0 + 10 ** ((rating[b] - rating[a]) / 400.0))
        score_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[j["winner"]]
        rating[a] += k * (score_a - expected_a)
        rating[b] -= k * (score_a - expected_a)
    return dict(rating)


def position_bias(judgements: Sequence[dict]) -> dict[str, float | int]:
    """How often the first-shown answer wins, and how often swapped pairs agree.

    Pairs are judgements of the same (prompt, two players) in both orders; a pair agrees
    when the same player wins both times (or both are ties).
    """
    _check(judgements)
    decisive = [j for j in judgements if j["winner"] != "tie"]
    first_wins = sum(j["winner"] == "a" for j in decisive)
    seen: dict[tuple, str] = {}
    pairs = agree = 0
    for j in judgements:
        winner = {"a": j["a"], "b": j["b"], "tie": "tie"}[j["winner"]]
        key = (j.get("prompt"), j["a"], j["b"])
        swapped = (j.get("prompt"), j["b"], j["a"])
        if swapped in seen:
            pairs += 1
            agree += seen.pop(swapped) == winner
        else:
            seen[key] = winner
    return {"first_position_win_rate": first_wins / len(decisive) if decisive else float("nan"),
            "decisive": len(decisive), "swapped_pairs": pairs,
            "swap_consistency": agree / pairs if pairs else float("nan")}


def judge(runner, question: str, first: str, second: str, *, prompt: str = JUDGE_PROMPT) -> str:
    """The judge model's verdict ("a" = first, "b" = second) from the log-likelihoods of ' 1' and ' 2'."""
    context = prompt.format(question=question, first=first, second=second)
    one, two = runner.loglikelihood([(context, " 1"), (context, " 2")])
    return "a" if one > two else "b" if two > one else "tie"


def judge_all_pairs(runner, records: Sequence[dict], *, swap: bool = True) -> list[dict]:
    """Judge every pair of answers per record ({"prompt", "answers": {name: text}}), in both orders if ``swap``."""
    judgements = []
    for r in records:
        answers = r.get("answers")
        if not isinstance(answers, dict) or len(answers) < 2 or "prompt" not in r:
            raise DataError("each record needs a 'prompt' and 'answers' from at least two models")
        names = sorted(answers)
        for x in range(len(names)):
            for y in range(x + 1, len(names)):
                orders = [(names[x], names[y]), (names[y], names[x])] if swap else [(names[x], names[y])]
                for a, b in orders:
                    verdict = judge(runner, r["prompt"], answers[a], answers[b])
                    judgements.append({"prompt": r["prompt"], "a": a, "b": b, "winner": verdict})
    return judgements
