"""The Porter stemmer (Porter 1980), giving the same stems as NLTK's ``PorterStemmer``.

Three modes, as NLTK names them: ``"nltk"`` (the default: NLTK's extensions — irregular
forms, ``dies -> die``, ``logi -> log`` with the l kept in the stem, words of one or two
letters left alone), ``"martin"`` (the extensions of Martin Porter's reference
implementation) and ``"original"`` (the algorithm as published). Words are lowercased
first. ROUGE's stemming and the retrieval analysers use ``stem``; stems are cached since
words repeat.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.validate import check_choice

MODES = ("nltk", "martin", "original")
VOWELS = frozenset("aeiou")
IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
             "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
             "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
             "exceed": "exceed", "succeed": "succeed"}
DOUBLE = "*d"  # a rule suffix meaning "ends with a double consonant"

Rule = tuple[str, str, "Callable[[str], bool] | None"]
_CACHE: dict[tuple[str, str], str] = {}


def stem(word: str, mode: str = "nltk") -> str:
    """The Porter stem of ``word`` (lowercased) in ``mode`` (nltk, martin or original)."""
    key = (mode, word)
    cached = _CACHE.get(key)
    if cached is None:
        check_choice("mode", mode, MODES)
        cached = _CACHE[key] = _stem(word, mode)
    return cached


def _stem(word: str, mode: str) -> str:
    lower = word.lower()
    if mode == "nltk" and lower in IRREGULAR:
        return IRREGULAR[lower]
    if mode != "original" and len(word) <= 2:  # NLTK tests the length before lowercasing
        return lower
    w = _step1a(lower, mode)
    w = _step1b(w, mode)
    w = _step1c(w, mode)
    w = _step2(w, mode)
    w = _step3(w)
    w = _step4(w)
    w = _step5a(w, mode)
    return _step5b(w)


# --- letters and measure --------------------------------------------------------------------
def _consonants(word: str) -> list[bool]:
    """Per letter: is it a consonant? y is one at the start or after a vowel."""
    flags: list[bool] = []
    for i, ch in enumerate(word):
        flags.append(ch not in VOWELS if ch != "y" else (i == 0 or not flags[i - 1]))
    return flags


def _measure(word: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in [C](VC)^m[V]."""
    flags = _consonants(word)
    return sum(1 for a, b in zip(flags, flags[1:], strict=False) if not a and b)


def _has_vowel(word: str) -> bool:
    return not all(_consonants(word))


def _ends_double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _consonants(word)[-1]


def _ends_cvc(word: str, mode: str) -> bool:
    """*o: the word ends consonant-vowel-consonant, the last not w, x or y."""
    flags = _consonants(word)
    if len(word) >= 3 and flags[-3] and not flags[-2] and flags[-1] and word[-1] not in "wxy":
        return True
    return mode == "nltk" and len(word) == 2 and not flags[0] and flags[1]


def _m_positive(word: str) -> bool:
    return _measure(word) > 0


def _m_above_one(word: str) -> bool:
    return _measure(word) > 1


def _apply(word: str, rules: list[Rule]) -> str:
    """Apply the first rule whose suffix matches; stop there even when its condition fails."""
    for suffix, replacement, condition in rules:
        if suffix == DOUBLE and _ends_double_consonant(word):
            base = word[:-2]
            return base + replacement if condition is None or condition(base) else word
        if word.endswith(suffix):
            base = word[:len(word) - len(suffix)]
            return base + replacement if condition is None or condition(base) else word
    return word


# --- the steps ---------------------------------------------------------------------------------
def _step1a(word: str, mode: str) -> str:
    if mode == "nltk" and word.endswith("ies") and len(word) == 4:
        return word[:-3] + "ie"
    return _apply(word, [("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])


def _step1b(word: str, mode: str) -> str:
    if mode == "nltk" and word.endswith("ied"):
        return word[:-3] + ("ie" if len(word) == 4 else "i")
    if word.endswith("eed"):
        base = word[:-3]
        return base + "ee" if _measure(base) > 0 else word
    for suffix in ("ed", "ing"):
        if word.endswith(suffix) and _has_vowel(word[:-len(suffix)]):
            base = word[:-len(suffix)]
            break
    else:
        return word
    last = base[-1]
    return _apply(base, [
        ("at", "ate", None), ("bl", "ble", None), ("iz", "ize", None),
        (DOUBLE, last, lambda _: last not in "lsz"),
        ("", "e", lambda b: _measure(b) == 1 and _ends_cvc(b, mode)),
    ])


def _step1c(word: str, mode: str) -> str:
    if mode == "nltk":
        def condition(b: str) -> bool:
            return len(b) > 1 and _consonants(b)[-1]
    else:
        condition = _has_vowel
    return _apply(word, [("y", "i", condition)])


_STEP2 = [("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          None,  # bli (or abli in the original algorithm)
          ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"),
          ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"),
          ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")]


def _step2(word: str, mode: str) -> str:
    if mode == "nltk" and word.endswith("alli") and _m_positive(word[:-4]):
        return _step2(word[:-4] + "al", mode)
    bli = ("abli", "able") if mode == "original" else ("bli", "ble")
    rules: list[Rule] = [(*(pair or bli), _m_positive) for pair in _STEP2]
    if mode == "nltk":
        rules.append(("fulli", "ful", _m_positive))
        rules.append(("logi", "log", lambda _: _m_positive(word[:-3])))
    elif mode == "martin":
        rules.append(("logi", "log", _m_positive))
    return _apply(word, rules)


_STEP3: list[Rule] = [(s, r, _m_positive) for s, r in (("icate", "ic"), ("ative", ""), ("alize", "al"),
                                                       ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""))]


def _step3(word: str) -> str:
    return _apply(word, _STEP3)


_STEP4: list[Rule] = [(s, "", _m_above_one) for s in ("al", "ance", "ence", "er", "ic", "able", "ible", "ant",
                                                      "ement", "ment", "ent")]
_STEP4.append(("ion", "", lambda b: _measure(b) > 1 and b[-1] in "st"))
_STEP4 += [(s, "", _m_above_one) for s in ("ou", "ism", "ate", "iti", "ous", "ive", "ize")]


def _step4(word: str) -> str:
    return _apply(word, _STEP4)


def _step5a(word: str, mode: str) -> str:
    # both conditions are tried here (unlike _apply): m > 1, or m = 1 and not *o
    if word.endswith("e"):
        base = word[:-1]
        m = _measure(base)
        if m > 1 or (m == 1 and not _ends_cvc(base, mode)):
            return base
    return word


def _step5b(word: str) -> str:
    return _apply(word, [("ll", "l", lambda _: _measure(word[:-1]) > 1)])
