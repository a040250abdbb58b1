"""BIO (IOB2) tag sets: which transitions they allow, and checks that labelled data keeps to them.

In BIO every entity starts with ``B-TYPE`` and continues with ``I-TYPE``; ``O`` is outside. So
``I-TYPE`` may follow only ``B-TYPE`` or ``I-TYPE`` and may not start a sentence — the hard
constraints a CRF decodes under. Data in IOB1 (where ``I-`` may open an entity) breaks them; the
check names the first such transition rather than letting the CRF meet an impossible gold path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import DataError


def split_tag(tag: str) -> tuple[str, str]:
    """(``"B"``/``"I"``/``"O"``, type) of a BIO tag; DataError for anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not kind:
        raise DataError(f"tag {tag!r} is not a BIO tag (O, B-TYPE or I-TYPE)",
                        "use BIO (IOB2) entity tags, or train without BIO constraints (--no-constraints)")
    return prefix, kind


def is_bio_tag_set(tags: Sequence[str]) -> bool:
    """True when every tag is O, B-TYPE or I-TYPE (so BIO constraints make sense)."""
    try:
        for tag in tags:
            split_tag(tag)
    except DataError:
        return False
    return True


def allowed_after(previous: str | None, tag: str) -> bool:
    """May ``tag`` follow ``previous`` (None = the sentence start) under BIO?"""
    prefix, kind = split_tag(tag)
    if prefix != "I":
        return True
    if previous is None:
        return False
    before, before_kind = split_tag(previous)
    return before in ("B", "I") and before_kind == kind


def bio_constraints(tags: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed [K, K]: tag i may be followed by tag j, start_allowed [K]) of a BIO tag list."""
    allowed = torch.tensor([[allowed_after(a, b) for b in tags] for a in tags], dtype=torch.bool)
    start = torch.tensor([allowed_after(None, t) for t in tags], dtype=torch.bool)
    return allowed, start


def check_bio_sequences(sequences: Sequence[Sequence[str]], what: str = "the training data") -> None:
    """DataError naming the first transition BIO forbids (sentence, token, ``previous → tag``)."""
    for s, tags in enumerate(sequences):
        previous = None
        for t, tag in enumerate(tags):
            if not allowed_after(previous, tag):
                shown = "sentence start" if previous is None else previous
                raise DataError(f"{what} is not BIO-consistent: sentence {s + 1}, token {t + 1}: "
                                f"{shown} → {tag}",
                                "convert IOB1 tags to BIO (IOB2: every entity starts with B-), or train "
                                "without BIO constraints (--no-constraints)")
            previous = tag
