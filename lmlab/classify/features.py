"""Text → tokens → sparse bag-of-words or TF-IDF rows (torch CSR tensors).

TF-IDF follows scikit-learn's defaults: idf = ln((1 + n) / (1 + df)) + 1, rows scaled to unit
L2 norm, so its ``TfidfVectorizer`` with the same tokens gives the same matrix.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import DataError
from ..core.validate import check_choice, check_number

_TOKEN_RE = re.compile(r"[\w']+|[^\w\s]")
WEIGHTINGS = ("count", "binary", "tfidf")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks."""
    return _TOKEN_RE.findall(text.lower())


def tokenize_all(texts: Sequence[str], what: str = "texts") -> list[list[str]]:
    """Tokenise every text; a text with no token is an error naming it (it carries no evidence)."""
    docs = [tokenize(t) for t in texts]
    empty = [i for i, d in enumerate(docs) if not d]
    if empty:
        raise DataError(f"{len(empty)} of the {what} are empty after tokenisation (first: item {empty[0]}, "
                        f"{texts[empty[0]]!r})", "remove blank texts before training or predicting")
    return docs


class BagOfWords:
    """Vocabulary of the training texts (tokens seen in ``min_df`` texts) and a row weighting."""

    def __init__(self, weighting: str = "tfidf", min_df: int = 1, vocab: list[str] | None = None,
                 idf: np.ndarray | None = None) -> None:
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)
        self.min_df = int(check_number("min_df", min_df, low=1, integer=True))
        self.vocab = vocab or []
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.idf = idf

    def fit(self, docs: list[list[str]]) -> BagOfWords:
        df = Counter(w for d in docs for w in set(d))
        self.vocab = sorted(w for w, c in df.items() if c >= self.min_df)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        counts = np.array([df[w] for w in self.vocab], dtype=np.float64)
        self.idf = np.log((1 + len(docs)) / (1 + counts)) + 1
        return self

    def transform(self, docs: list[list[str]]) -> torch.Tensor:
        """Sparse CSR rows (float64), one per document, ``len(vocab)`` columns."""
        crow, cols, vals = [0], [], []
        for d in docs:
            row = Counter(self.index[w] for w in d if w in self.index)
            keys = sorted(row)
            v = np.array([row[k] for k in keys], dtype=np.float64)
            if self.weighting == "binary":
                v = np.minimum(v, 1)
            elif self.weighting == "tfidf":
                v = v * self.idf[keys] if keys else v
                norm = np.sqrt((v**2).sum())
                v = v / norm if norm > 0 else v
            cols.extend(keys)
            vals.append(v)
            crow.append(len(cols))
        values = np.concatenate(vals) if vals else np.zeros(0)
        with warnings.catch_warnings():  # torch calls its sparse CSR support "beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.tensor(crow, dtype=torch.int64), torch.tensor(cols, dtype=torch.int64),
                                           torch.from_numpy(values), size=(len(docs), len(self.vocab)),
                                           check_invariants=False)

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        return ({"weighting": self.weighting, "min_df": self.min_df, "vocab": self.vocab},
                {"idf": torch.from_numpy(self.idf)})

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> BagOfWords:
        return cls(config["weighting"], config["min_df"], list(config["vocab"]), tensors["idf"].numpy())


def to_scipy(rows: torch.Tensor):
    """The same rows as a scipy CSR matrix (for peers such as scikit-learn; scipy imported lazily)."""
    from scipy.sparse import csr_matrix

    return csr_matrix((rows.values().numpy(), rows.col_indices().numpy(), rows.crow_indices().numpy()),
                      shape=tuple(rows.shape))
