"""The evaluation suite's metrics as decoding utilities, and its answer extraction as a vote key.

``utility(metric)`` turns BLEU, chrF, ROUGE-L or BERTScore into u(hypothesis, pseudo-reference) over
aligned lists — the utility of minimum Bayes risk decoding (``lmlab.generate.select.MBR``), where
the other hypotheses play the references. ``task_answer(task)`` extracts a task's answer from a
generated text with the task's own rules (GSM8K: the last number, normalised as the task scores
it) — the key of self-consistency's majority vote (``lmlab.generate.select.MajorityVote``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.errors import ConfigError
from ..core.validate import check_choice
from .bleu import sentence_bleu
from .chrf import sentence_chrf
from .rouge import rouge_scores
from .tasks import BUILTIN, extract_answer, normalize_number_answer

UTILITY_METRICS = ("bleu", "chrf", "rouge", "bertscore")


def utility(metric: str, *, encoder: str = "minilm") -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """u(hypotheses[i], references[i]) for aligned lists: sentence BLEU or chrF (sacrebleu's definitions,
    0–100), ROUGE-L F1 or BERTScore F1 (0–1) with the named ``encoder``."""
    check_choice("metric", metric, UTILITY_METRICS)
    if metric == "bleu":
        return lambda hyps, refs: [sentence_bleu(h, [r]).score for h, r in zip(hyps, refs, strict=True)]
    if metric == "chrf":
        return lambda hyps, refs: [sentence_chrf(h, [r]).score for h, r in zip(hyps, refs, strict=True)]
    if metric == "rouge":
        return lambda hyps, refs: [rouge_scores(r, h, ("rougeL",))["rougeL"].fmeasure
                                   for h, r in zip(hyps, refs, strict=True)]
    return bertscore_utility(encoder)


def bertscore_utility(encoder: str = "minilm") -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """BERTScore F1 per pair; each distinct text is encoded once per call (MBR pairs every hypothesis
    with every other)."""
    from .bertscore import bert_score
    from .encoders import ENCODERS

    model = ENCODERS.get(encoder)()

    def score(hyps: Sequence[str], refs: Sequence[str]) -> list[float]:
        distinct = sorted(set(hyps) | set(refs))
        encoded = dict(zip(distinct, model.tokens(distinct), strict=True))
        result = bert_score(list(hyps), list(refs), lambda texts: [encoded[t] for t in texts])
        return [pair["f1"] for pair in result["per_pair"]]

    return score


def task_answer(task: str = "gsm8k", *, flexible: bool = True) -> Callable[[str], str]:
    """The answer of a generated text by ``task``'s extraction rules, normalised as the task compares
    answers: the last number (``flexible``) or the strict pattern (GSM8K: after '####'); "[invalid]"
    when nothing matches."""
    if task not in BUILTIN or BUILTIN[task][0].get("type") != "generate":
        tasks = sorted(k for k, v in BUILTIN.items() if v[0].get("type") == "generate")
        raise ConfigError(f"{task!r} is not a generation task with answer rules", f"use one of {', '.join(tasks)}")
    spec = BUILTIN[task][0]
    pattern = spec["flexible_regex"] if flexible and spec.get("flexible_regex") else spec["answer_regex"]
    last = flexible and bool(spec.get("flexible_regex"))

    def answer(text: str) -> str:
        found = extract_answer(text, pattern, last=last)
        return found if found == "[invalid]" else normalize_number_answer(found)

    answer.__name__ = f"{task}_answer"
    return answer
