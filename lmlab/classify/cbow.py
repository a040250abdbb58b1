"""Continuous bag-of-words classifier: the mean of a text's word embeddings → linear → softmax.

Padding is masked out of the mean, so a short text in a batch of long ones gets the same
vector as alone. The embeddings may start from word2vec vectors (``WordVectors``); they
must then have the classifier's dimension.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from ..embeddings import WordVectors
from .base import ClassifierMixin, class_weights, encode_labels
from .batches import SAMPLERS, balanced_probabilities, pad_rows
from .features import tokenize_all

PAD, UNK = 0, 1


class CBOWModule(torch.nn.Module):
    """Embedding table + linear layer over the mean of each padded row's non-padding embeddings.

    ``EmbeddingBag`` with ``padding_idx`` leaves the padding out of the mean in one fused
    kernel (the same as summing embeddings under a 0/1 mask and dividing by the mask's sum).
    """

    def __init__(self, vocab_size: int, dim: int, n_classes: int) -> None:
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=PAD)
        self.out = torch.nn.Linear(dim, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(ids))


def pad_batch(seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad id sequences with PAD into one (batch, longest) tensor."""
    return pad_rows(seqs, PAD)[0]


class CBOWClassifier(ClassifierMixin):
    """Averaged embeddings, trained with Adam on cross-entropy (optionally class-weighted).

    ``sampler="balanced"`` draws each epoch's examples (as many as the data has) with
    class-balanced probabilities instead of shuffling them.
    """

    kind = "cbow"

    def __init__(self, dim: int = 100, epochs: int = 5, lr: float = 1e-2, batch_size: int = 256,
                 min_count: int = 1, weight_decay: float = 0.0, class_weight: str = "none",
                 vectors: WordVectors | None = None, sampler: str = "shuffle", seed: int = 0) -> None:
        if vectors is not None and vectors.dim != dim:
            raise ConfigError(f"the initial word vectors have dimension {vectors.dim} but the classifier has {dim}",
                              f"pass dim={vectors.dim} or vectors of dimension {dim}")
        self.dim = int(check_number("dim", dim, low=1, integer=True))
        self.epochs = int(check_number("epochs", epochs, low=1, integer=True))
        self.lr = float(check_number("lr", lr, low=0, low_inclusive=False))
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self.min_count = int(check_number("min_count", min_count, low=1, integer=True))
        self.weight_decay = float(check_number("weight_decay", weight_decay, low=0))
        self.class_weight = class_weight
        self.sampler = check_choice("sampler", sampler, SAMPLERS)
        self.vectors = vectors
        self.seed = seed
        self.classes = None
        self.vocab: list[str] = []

    def _ids(self, docs: list[list[str]]) -> list[list[int]]:
        index = self.index
        return [[index.get(w, UNK) for w in d] for d in docs]

    def fit(self, texts: Sequence[str], labels: Sequence) -> CBOWClassifier:
        self.classes, y = encode_labels(texts, labels)
        weights = torch.tensor(class_weights(y, len(self.classes), self.class_weight), dtype=torch.float32)
        docs = tokenize_all(texts, "training texts")
        counts = Counter(w for d in docs for w in d)
        self.vocab = ["<pad>", "<unk>"] + [w for w, c in counts.items() if c >= self.min_count]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.module = CBOWModule(len(self.vocab), self.dim, len(self.classes))
        initialised = self._init_from_vectors() if self.vectors is not None else 0
        self.initialised_words = initialised
        ids = self._ids(docs)
        target = torch.from_numpy(y)
        balanced = torch.from_numpy(balanced_probabilities(y)) if self.sampler == "balanced" else None
        opt = torch.optim.Adam(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
        self.module.train()
        for _ in progress(range(self.epochs), desc="training CBOW", unit="epoch"):
            order = (torch.randperm(len(ids), generator=gen) if balanced is None
                     else torch.multinomial(balanced, len(ids), replacement=True, generator=gen))
            for lo in range(0, len(ids), self.batch_size):
                pick = order[lo:lo + self.batch_size]
                batch = pad_batch([ids[i] for i in pick.tolist()])
                loss = loss_fn(self.module(batch), target[pick])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.module.eval()
        return self

    def _init_from_vectors(self) -> int:
        """Copy the vectors of known words (exact, else lower-cased match); returns how many."""
        lower = {w.lower(): i for i, w in reversed(list(enumerate(self.vectors.words)))}
        found = 0
        with torch.no_grad():
            for i, w in enumerate(self.vocab[2:], start=2):
                j = self.vectors.index.get(w, lower.get(w))
                if j is not None:
                    self.module.embed.weight[i] = torch.from_numpy(self.vectors.vectors[j])
                    found += 1
        return found

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        ids = self._ids(tokenize_all(texts))
        out = []
        with torch.no_grad():
            for lo in range(0, len(ids), 512):
                out.append(torch.softmax(self.module(pad_batch(ids[lo:lo + 512])), dim=-1))
        return torch.cat(out).numpy()

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {"dim": self.dim, "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                  "min_count": self.min_count, "weight_decay": self.weight_decay,
                  "class_weight": self.class_weight, "sampler": self.sampler, "seed": self.seed,
                  "classes": self.classes,
                  "vocab": self.vocab}
        return config, {k: v.detach() for k, v in self.module.state_dict().items()}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> CBOWClassifier:
        keys = ("dim", "epochs", "lr", "batch_size", "min_count", "weight_decay", "class_weight", "seed")
        model = cls(**{k: config[k] for k in keys}, sampler=config.get("sampler", "shuffle"))
        model.classes = list(config["classes"])
        model.vocab = list(config["vocab"])
        model.index = {w: i for i, w in enumerate(model.vocab)}
        model.module = CBOWModule(len(model.vocab), model.dim, len(model.classes))
        model.module.load_state_dict(tensors)
        model.module.eval()
        return model
