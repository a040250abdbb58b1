"""BERTScore (Zhang et al., 2020) against any token encoder.

``encoder(texts)`` returns, per text, its tokens and their contextual embeddings
(``list[tuple[list[str], array[T, D]]]``) — the MiniLM encoder plugs in here, and so does
any other. Each token is matched greedily to its most cosine-similar token on the other
side: recall averages over reference tokens, precision over candidate tokens, optionally
weighted by inverse document frequency computed on the references
(idf(w) = log((M + 1) / (df(w) + 1)), special tokens weighted 0).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ..core.errors import InputError
from .rouge import PRF, f1

TokenEncoder = Callable[[list[str]], list[tuple[list[str], np.ndarray]]]
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "<s>", "</s>", "<pad>", "[PAD]"})


def idf_weights(references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BERTScore's idf from tokenised references; unseen tokens get log(M + 1)."""
    m = len(references)
    df = Counter(t for tokens in references for t in set(tokens))
    return {t: math.log((m + 1) / (n + 1)) for t, n in df.items()}


def _normalise(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1.0, norms)


def _weights(tokens: Sequence[str], idf: dict[str, float] | None, default: float) -> np.ndarray:
    if idf is None:
        return np.array([0.0 if t in SPECIAL_TOKENS else 1.0 for t in tokens])
    return np.array([0.0 if t in SPECIAL_TOKENS else idf.get(t, default) for t in tokens])


def greedy_match(cand: tuple[list[str], np.ndarray], ref: tuple[list[str], np.ndarray],
                 idf: dict[str, float] | None = None, default_idf: float = 1.0) -> PRF:
    """Precision, recall and F1 of one candidate against one reference by greedy cosine matching."""
    (c_tokens, c_emb), (r_tokens, r_emb) = cand, ref
    if not len(c_tokens) or not len(r_tokens):
        return PRF(0.0, 0.0, 0.0)
    sim = _normalise(c_emb) @ _normalise(r_emb).T  # [candidate tokens, reference tokens]
    wc, wr = _weights(c_tokens, idf, default_idf), _weights(r_tokens, idf, default_idf)
    precision = float((sim.max(axis=1) * wc).sum() / wc.sum()) if wc.sum() > 0 else 0.0
    recall = float((sim.max(axis=0) * wr).sum() / wr.sum()) if wr.sum() > 0 else 0.0
    return PRF(precision, recall, f1(precision, recall))


def signature(encoder: str, idf: bool) -> str:
    """What a BERTScore figure was computed with, sacrebleu-style (lmlab does not rescale with a baseline)."""
    return f"encoder:{encoder}|idf:{'yes' if idf else 'no'}|rescaled:no"


def bert_score(candidates: Sequence[str], references: Sequence[str], encoder: TokenEncoder, *,
               idf: bool = False) -> dict:
    """Per-pair and mean BERTScore precision, recall and F1 of ``candidates`` against ``references``."""
    if len(candidates) != len(references):
        raise InputError(f"{len(candidates)} candidates but {len(references)} references",
                         "give one reference per candidate")
    if not candidates:
        raise InputError("no candidates to score")
    cands, refs = encoder(list(candidates)), encoder(list(references))
    weights = idf_weights([t for t, _ in refs]) if idf else None
    default = math.log(len(refs) + 1)
    scores = [greedy_match(c, r, weights, default) for c, r in zip(cands, refs, strict=True)]
    return {"precision": float(np.mean([s.precision for s in scores])),
            "recall": float(np.mean([s.recall for s in scores])),
            "f1": float(np.mean([s.fmeasure for s in scores])),
            "per_pair": [{"precision": s.precision, "recall": s.recall, "f1": s.fmeasure} for s in scores],
            "idf": idf}
