"""Machine-text detection by likelihood: perplexity, burstiness and two-model ratios.

Every figure comes from the one probability interface (``lmlab.lm``): per-token log-probabilities
from ``lm.score`` (through ``lm_metrics.score_rows``), and, for Binoculars, the full next-token
distributions from ``lm.next_scores_all``. Each detector's *machine score* is oriented so that
higher means "more likely machine-written"; ``detection_auroc`` ranks documents by it.

* **perplexity** (GPTZero's first signal, Tian 2023): sampled text is what the model itself finds
  likely, so its per-token perplexity under a similar model is low. Machine score: −log PPL.
* **burstiness** (GPTZero's second signal): human writing mixes plain and surprising sentences,
  so its per-sentence perplexity varies more. Here: the standard deviation (population) of the
  per-sentence log-perplexities (mean negative log-likelihood of each sentence's tokens, scored in
  the context of the whole document). Machine score: −burstiness. Needs two sentences or more.
* **likelihood ratio** against a smaller reference model sharing the tokenizer (the comparison
  model of Carlini et al. 2021, "Extracting training data from large language models"): the mean
  per-token log-likelihood under the model minus that under the reference. It cancels how
  predictable a text is in itself; what is left is how much *more* the large model likes it.
  Machine score: +ratio.
* **Binoculars** (Hans et al. 2024, "Spotting LLMs with Binoculars"): the model's log-perplexity
  of the text divided by its cross-perplexity — the model's expected per-token surprise when the
  next token is drawn from the reference model's distribution instead —,
  B = [−(1/L) Σ log p(x_i)] / [−(1/L) Σ_i Σ_v q_i(v) log p_i(v)] with p the model (the paper's
  code calls it the performer) and q the reference (observer). Machine score: −B.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import DataError
from ..core.progress import progress
from ..core.validate import check_number
from ..lm import LanguageModel, as_id_tensor, check_shared_tokenizer, check_tokenizer
from .lm_metrics import score_rows
from .roc import auroc

DETECTORS = ("perplexity", "burstiness", "likelihood_ratio", "binoculars")
#: detector → sign that turns its value into a machine score (higher = more likely machine)
ORIENTATION = {"perplexity": -1.0, "burstiness": -1.0, "likelihood_ratio": 1.0, "binoculars": -1.0}
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Cut ``text`` after ., ! or ? followed by whitespace, and at newlines; each piece after the first keeps
    the whitespace before it, so the pieces concatenate back to ``text`` (and tokenise like it)."""
    cuts = [m.start() for m in _SENTENCE_BREAK.finditer(text) if 0 < m.start() < len(text)]
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return [p for p in pieces if p.strip()]


def encode_document(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """(ids: the start token, if any, then each sentence's tokens; the token count of each sentence)."""
    sentences = [tokenizer.encode(s, add_special_tokens=False) for s in split_sentences(text)]
    start = tokenizer.start_id
    ids = ([start] if start is not None else []) + [i for s in sentences for i in s]
    return ids, [len(s) for s in sentences if s]


def _burstiness(token_logprobs: np.ndarray, sentence_lengths: list[int]) -> tuple[float | None, list[float]]:
    bounds = np.cumsum([0, *sentence_lengths])
    per_sentence = [float(-token_logprobs[a:b].mean()) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return (float(np.std(per_sentence)) if len(per_sentence) >= 2 else None), per_sentence


def _with_reference(lm: LanguageModel, reference: LanguageModel, ids: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """One document through both models' full next-token distributions (``next_scores_all``): the model's and
    the reference's log-probability of each token, and Binoculars' cross term — the model's expected
    negative log-likelihood under the reference's next-token distribution, averaged over positions."""
    x = as_id_tensor([ids], lm.vocab_size, lm.device)
    with torch.no_grad():
        p_scores, _ = lm.next_scores_all(x[:, :-1], lm.initial_state(1))
        q_scores, _ = reference.next_scores_all(x[:, :-1].to(reference.device), reference.initial_state(1))
    log_p = torch.log_softmax(p_scores[0].double().cpu(), dim=-1)
    log_q = torch.log_softmax(q_scores[0].double().cpu(), dim=-1)
    target = x[0, 1:].cpu().unsqueeze(1)
    # where p gives a token probability 0 its log is -inf, and q there may be 0 too: that term counts 0
    cross = -(log_q.exp() * torch.where(torch.isfinite(log_p), log_p, torch.zeros_like(log_p))).sum(-1).mean()
    return log_p.gather(1, target).squeeze(1).numpy(), log_q.gather(1, target).squeeze(1).numpy(), float(cross)


def score_documents(lm: LanguageModel, tokenizer, texts: Sequence[str], *, reference: LanguageModel | None = None,
                    reference_tokenizer=None, min_tokens: int = 8, batch_size: int = 16) -> list[dict]:
    """Per document: ``tokens``, ``perplexity``, ``burstiness`` (None with fewer than two sentences),
    ``sentence_log_perplexities`` and, with a ``reference`` model (which must share ``tokenizer``),
    ``likelihood_ratio`` and ``binoculars``. A document with fewer than ``min_tokens`` tokens is an error
    (its scores would be noise)."""
    check_tokenizer(lm, tokenizer)
    check_number("min_tokens", min_tokens, low=2, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    if reference is not None:
        check_shared_tokenizer("reference", reference_tokenizer if reference_tokenizer is not None else tokenizer,
                               tokenizer)
    texts = list(texts)
    if not texts:
        raise DataError("no documents to score", "give a file with at least one non-blank document")
    encoded = [encode_document(tokenizer, t) for t in texts]
    for i, (ids, _) in enumerate(encoded):
        if len(ids) - 1 < min_tokens:  # predicted tokens: all but the start token (or the first, without one)
            raise DataError(f"document {i} has {len(ids) - 1} scored tokens, fewer than the minimum of {min_tokens} "
                            f"({texts[i][:40]!r})", "drop short documents or lower --min-tokens")
    limit = min((m.context_length for m in (lm, reference) if m is not None and m.context_length), default=None)
    longest = max(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    if limit is not None and len(encoded[longest][0]) > limit:
        raise DataError(f"document {longest} has {len(encoded[longest][0])} tokens, more than the model's context of "
                        f"{limit}", "split long documents into parts that fit")
    if tokenizer.start_id is None:  # no start token: the first token is context, never predicted
        encoded = [(ids, [max(lengths[0] - 1, 0), *lengths[1:]]) for ids, lengths in encoded]
    out: list[dict] = []
    for lo in progress(range(0, len(texts), batch_size), desc="detecting", unit="batch"):
        chunk = encoded[lo:lo + batch_size]
        if reference is None:
            scores, mask = score_rows(lm, [ids for ids, _ in chunk])
            scored = [(scores[row, mask[row]].numpy(), None, None) for row in range(len(chunk))]
        else:  # the full distributions give the model's token log-probabilities as well: one forward pass
            scored = [_with_reference(lm, reference, ids) for ids, _ in chunk]
        for row, ((_, lengths), (lp, ref_lp, cross)) in enumerate(zip(chunk, scored, strict=True)):
            burst, per_sentence = _burstiness(lp, lengths)
            doc = {"index": lo + row, "tokens": int(lp.size), "perplexity": math.exp(-lp.mean()),
                   "burstiness": burst, "sentence_log_perplexities": per_sentence}
            if reference is not None:
                doc["likelihood_ratio"] = float(lp.mean() - ref_lp.mean())
                doc["binoculars"] = float(-lp.mean() / cross)
            out.append(doc)
    return out


def machine_scores(documents: Sequence[dict], detector: str) -> np.ndarray:
    """The detector's value per document turned into a machine score (higher = more likely machine);
    NaN where it is undefined (burstiness of a one-sentence document)."""
    sign = ORIENTATION[detector]
    values = []
    for d in documents:
        v = d.get(detector)
        if v is not None and detector == "perplexity":
            v = math.log(v)
        values.append(float("nan") if v is None else sign * v)
    return np.array(values, dtype=np.float64)


def detector_scores(documents: Sequence[dict], labels: Sequence[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For every detector present in ``documents``: (machine scores, labels) of the documents it could score
    (burstiness leaves out one-sentence documents)."""
    y = np.asarray(labels)
    out = {}
    for name in DETECTORS:
        if any(d.get(name) is not None for d in documents):
            s = machine_scores(documents, name)
            keep = np.isfinite(s)
            out[name] = (s[keep], y[keep])
    return out


def detection_auroc(documents: Sequence[dict], labels: Sequence[int]) -> dict[str, dict]:
    """AUROC of every detector present in ``documents`` at telling ``labels`` 1 (machine) from 0 (human),
    with how many documents it scored and left out; None (and a note) where the documents it could score
    are all of one class."""
    out = {}
    for name, (s, y) in detector_scores(documents, labels).items():
        both = 0 < int(y.sum()) < len(y)
        out[name] = {"auroc": auroc(s, y) if both else None, "documents": int(len(s)),
                     "left_out": len(documents) - int(len(s))}
        if not both:
            out[name]["note"] = "the documents this detector could score are all of one class"
    return out

LABELS = {"human": 0, "machine": 1, 0: 0, 1: 1}


def read_documents(path: str) -> tuple[list[str], list[int] | None]:
    """Documents to score and their labels (0 human, 1 machine; None when the file has none): a ``.jsonl`` file
    of ``{"text": …, "label": "human"|"machine"|0|1}`` objects (label optional), or any other text file with
    one document per line. An empty file is an error."""
    from ..data.corpus import read_jsonl, text_file

    if str(path).endswith(".jsonl"):
        records = read_jsonl(path)
        for i, r in enumerate(records):
            if not isinstance(r.get("text"), str):
                raise DataError(f"{path}: record {i} has no string 'text'", 'write {"text": "...", "label": "human"}')
        texts = [r["text"] for r in records]
        given = [r.get("label") for r in records]
        bad = next((i for i, v in enumerate(given) if v is not None and v not in LABELS), None)
        if bad is not None:
            raise DataError(f"{path}: record {bad} has label {given[bad]!r}", "use human/machine (or 0/1)")
        labels = [LABELS[v] for v in given] if all(v is not None for v in given) else None
    else:
        texts, labels = [line for line in text_file(path, keep_blank=True) if line.strip()], None
    if not texts:
        raise DataError(f"{path} holds no documents", "give one document per line (or a JSONL file with 'text')")
    return texts, labels
