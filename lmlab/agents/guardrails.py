"""Guardrails: input and output checks as small composable functions, and the refusal path.

A check is any callable ``text → Verdict``; ``combine`` runs several and returns the first that
stops the text. The agent runs its ``input_checks`` on the user's task before the model sees it
and its ``output_checks`` on the final answer; a stopped text ends the run with status
``refused`` and the refusal message instead of an answer (the trace keeps the verdict).

Checks here: ``blocked_topics`` (keyword lists per topic, whole words), ``pii`` (e-mail addresses,
phone numbers, payment cards that pass the Luhn check, US social security numbers, IPv4
addresses), ``classifier_check`` (any ``lmlab.classify`` classifier: stop when a blocked label's
probability reaches a threshold), ``lm_judge`` (a model answers yes/no to a question about the
text) and ``leak_check`` (the text repeats a secret or a long stretch of the system prompt).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.validate import check_number

REFUSAL = "I can't help with that request."


@dataclass
class Verdict:
    """Whether a text may pass; ``check`` names the check and ``reason`` says why it stopped."""

    allowed: bool
    check: str = ""
    reason: str = ""


Check = Callable[[str], Verdict]


def combine(*checks: Check) -> Check:
    """One check running ``checks`` in order: the first verdict that stops the text, else a pass."""

    def run(text: str) -> Verdict:
        for check in checks:
            verdict = check(text)
            if not verdict.allowed:
                return verdict
        return Verdict(True, "all")

    return run


def blocked_topics(topics: Mapping[str, Iterable[str]] | Iterable[str]) -> Check:
    """Stop texts that mention a topic's keywords (whole words or phrases, any case)."""
    table = dict(topics) if isinstance(topics, Mapping) else {t: [t] for t in topics}
    if not table:
        raise ConfigError("blocked_topics needs at least one topic")
    patterns = {topic: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.I)
                for topic, words in table.items()}

    def check(text: str) -> Verdict:
        for topic, pattern in patterns.items():
            hit = pattern.search(text)
            if hit:
                return Verdict(False, "blocked_topics", f"mentions {topic!r} ({hit.group(0)!r})")
        return Verdict(True, "blocked_topics")

    return check


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of payment card numbers (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


PII_PATTERNS = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "phone": re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}(?![\w.])"),
    "card": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    "ssn": re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)"),
    "ipv4": re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"),
}


def find_pii(text: str, kinds: Sequence[str] = tuple(PII_PATTERNS)) -> list[tuple[str, str]]:
    """(kind, matched text) for every piece of personal data found. Cards count only when Luhn-valid;
    a run of 13-19 digits that is no valid card is not read as a phone number either."""
    for kind in kinds:
        if kind not in PII_PATTERNS:
            raise ConfigError(f"unknown PII kind {kind!r}", f"use some of {', '.join(PII_PATTERNS)}")
    card_spans = [m.span() for m in PII_PATTERNS["card"].finditer(text)]
    out = []
    for kind in kinds:
        for m in PII_PATTERNS[kind].finditer(text):
            if kind == "card" and not luhn_valid(re.sub(r"\D", "", m.group(0))):
                continue
            if kind != "card" and any(a <= m.start() < b for a, b in card_spans):
                continue
            out.append((kind, m.group(0)))
    return out


def pii(kinds: Sequence[str] = tuple(PII_PATTERNS)) -> Check:
    """Stop texts holding personal data of the given kinds."""
    find_pii("", kinds)  # unknown kinds fail now, not at the first text

    def check(text: str) -> Verdict:
        found = find_pii(text, kinds)
        if found:
            return Verdict(False, "pii", "contains " + ", ".join(sorted({k for k, _ in found})))
        return Verdict(True, "pii")

    return check


def redact_pii(text: str, kinds: Sequence[str] = tuple(PII_PATTERNS)) -> str:
    """``text`` with each piece of personal data replaced by ``[KIND]``."""
    for kind, value in sorted(find_pii(text, kinds), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"[{kind.upper()}]")
    return text


def classifier_check(classifier: Any, blocked: Sequence[str], threshold: float = 0.5) -> Check:
    """Stop a text when an ``lmlab.classify`` classifier gives one of the ``blocked`` labels a probability
    of ``threshold`` or more."""
    check_number("threshold", threshold, low=0.0, high=1.0)
    classes = [str(c) for c in (getattr(classifier, "classes", None) or [])]
    unknown = [b for b in blocked if b not in classes]
    if not classes or unknown:
        raise ConfigError(f"the classifier has no label(s) {unknown or list(blocked)}", f"its labels are {classes}")
    columns = [classes.index(b) for b in blocked]

    def check(text: str) -> Verdict:
        proba = classifier.predict_proba([text])[0]
        for label, col in zip(blocked, columns, strict=True):
            if float(proba[col]) >= threshold:
                return Verdict(False, "classifier", f"classified {label!r} (p = {float(proba[col]):.2f})")
        return Verdict(True, "classifier")

    return check


JUDGE_PROMPT = ("Read the text between the markers and answer the question with yes or no.\n"
                "<<text>>\n{text}\n<</text>>\nQuestion: {question}\nAnswer (yes or no):")


def lm_judge(model: Any, question: str, max_chars: int = 2000) -> Check:
    """A model as the judge: stop the text when it answers "yes" to ``question`` about it (e.g. "Does
    the text ask for instructions to build a weapon?"). In-process models are held to "yes"/"no"."""
    from .models import Generation

    def check(text: str) -> Verdict:
        prompt = JUDGE_PROMPT.format(text=text[:max_chars], question=question)
        request = Generation(messages=[{"role": "user", "content": prompt}], max_tokens=3,
                             constraint=("regex", "(yes|no|Yes|No)") if model.constrains else None)
        reply = model.generate([request])[0][0].text.strip().lower()
        if reply.startswith("yes"):
            return Verdict(False, "lm_judge", f"the judge answered yes to: {question}")
        return Verdict(True, "lm_judge")

    return check


def leak_check(secrets: Sequence[str], window: int = 24) -> Check:
    """Stop a text that contains any secret short enough to match whole, or ``window`` consecutive
    characters of a longer one (a system prompt repeated in part), ignoring case and spacing."""
    check_number("window", window, low=4, integer=True)

    def norm(s: str) -> str:
        return " ".join(s.lower().split())

    pieces = []
    for secret in secrets:
        s = norm(secret)
        if len(s) <= window:
            if s:
                pieces.append(s)
        else:
            pieces += [s[i:i + window] for i in range(0, len(s) - window + 1, max(1, window // 3))]

    def check(text: str) -> Verdict:
        t = norm(text)
        for p in pieces:
            if p in t:
                return Verdict(False, "leak", f"repeats protected text ({p[:20]!r}…)")
        return Verdict(True, "leak")

    return check
