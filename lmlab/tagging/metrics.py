"""Sequence-labelling metrics: entity-level precision / recall / F1 (CoNLL's ``conlleval``, as
``seqeval`` computes it by default) and token accuracy.

Entities are read from tags with conlleval's chunk rules: a chunk starts at B (or S), at I/E after
O or a chunk end, or where the type changes; it ends before B/S/O or a type change, and after E/S.
So an ``I-PER`` after ``O`` opens a PER entity — predictions that break BIO still score the way
conlleval and seqeval score them. Precision is correct entities over predicted ones, recall over
gold ones (micro-averaged over types); an entity is correct when its type, start and end all match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..core.errors import DataError


def _parts(tag: str) -> tuple[str, str]:
    """(chunk tag, type) as seqeval reads a prefix-style tag."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    return (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag not in ("O", ".") and prev_type != kind))


def _starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    return (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag not in ("O", ".") and prev_type != kind))


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first token, last token) of every entity in one sentence's tags."""
    found, prev_tag, prev_type, begin = [], "O", "", 0
    for i, full in enumerate([*tags, "O"]):
        tag, kind = _parts(full)
        if _ends(prev_tag, tag, prev_type, kind):
            found.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, kind):
            begin = i
        prev_tag, prev_type = tag, kind
    return found


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / gold if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def _check_lengths(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(predicted):
        raise DataError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones", "predict every sentence")
    for k, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise DataError(f"sentence {k + 1} has {len(g)} gold tags but {len(p)} predicted ones",
                            "predict one tag per word")


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro precision / recall / F1 over entities, per-type scores with their gold ``support``, and counts."""
    _check_lengths(gold, predicted)
    gold_by_type, pred_by_type = defaultdict(set), defaultdict(set)
    for k, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        for kind, start, end in entities(g):
            gold_by_type[kind].add((k, start, end))
        for kind, start, end in entities(p):
            pred_by_type[kind].add((k, start, end))
    per_type, totals = {}, [0, 0, 0]
    for kind in sorted(set(gold_by_type) | set(pred_by_type)):
        correct = len(gold_by_type[kind] & pred_by_type[kind])
        counts = (correct, len(pred_by_type[kind]), len(gold_by_type[kind]))
        per_type[kind] = {**_prf(*counts), "support": counts[2]}
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return {**_prf(*totals), "correct": totals[0], "predicted": totals[1], "gold": totals[2], "per_type": per_type}


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Share of tokens whose predicted tag equals the gold one."""
    _check_lengths(gold, predicted)
    total = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, predicted, strict=True) for a, b in zip(g, p, strict=True))
    return right / total if total else 0.0
