"""Answers in model outputs: a regular expression picks the answer out of generated text, and
numbers are compared in GSM8K's form. Evaluation (``lmlab.eval``) scores benchmark outputs with
these; verifiable rewards (``lmlab.align.rewards``) score RL rollouts with the same rules.
"""

from __future__ import annotations

import re

#: lm-evaluation-harness's GSM8K "flexible-extract": the last number in the output
FLEXIBLE_NUMBER = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"


def extract_answer(text: str, pattern: str, *, last: bool = False) -> str:
    """The first matched group of the first (or ``last``) match of ``pattern`` ("[invalid]" if none).

    Without a pattern, the stripped text. Of several groups, the first that matched counts
    (as lm-evaluation-harness's regex filter takes it).
    """
    if not pattern:
        return text.strip()
    matches = list(re.finditer(pattern, text))
    if not matches:
        return "[invalid]"
    match = matches[-1] if last else matches[0]
    if not match.groups():
        return match.group(0).strip()
    return next((g for g in match.groups() if g), match.group(0)).strip()


def normalize_number_answer(text: str) -> str:
    """GSM8K's comparison form: no commas, dollar signs or trailing period."""
    return re.sub(r"\.$", "", text.replace(",", "").replace("$", "").strip())


#: "The answer is 42." — how chain-of-thought exemplars end (Wei et al. 2022)
ANSWER_IS = r"answer is[:\s]*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)"
NUMBER = r"-?[0-9][0-9,]*(?:\.[0-9]+)?"


def numeric_answer(text: str, *, last: bool = True) -> str:
    """The numeric answer of a generated text in GSM8K's comparison form: the number after
    "answer is" when the text says it, else its last (or first) number; "[invalid]" without one."""
    stated = extract_answer(text, ANSWER_IS)
    if stated != "[invalid]":
        return normalize_number_answer(stated)
    return normalize_number_answer(extract_answer(text, NUMBER, last=last))


def same_number(prediction: str, gold: str) -> bool:
    """Whether two answers are the same number (18 = 18.0 = 18.00), else the same text."""
    from fractions import Fraction

    try:
        return Fraction(normalize_number_answer(prediction)) == Fraction(normalize_number_answer(gold))
    except (ValueError, ZeroDivisionError):
        return prediction.strip() == gold.strip()
