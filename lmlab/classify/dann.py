"""A domain-adversarial text classifier (DANN; Ganin et al. 2016) on the one trainer.

Features: the CBOW classifier's module (``cbow.CBOWModule``: mean of word embeddings → linear) with a
ReLU, i.e. one hidden layer over averaged embeddings — the shallow text network of the paper's
sentiment experiments. Two heads on them: a linear label predictor and a one-hidden-layer domain
classifier. ``lmlab.train.adversarial.DomainAdversarialLoss`` trains all three through
``lmlab.train.train``, each batch holding labelled source texts and as many unlabelled target texts
(``DomainBatches``, two ``LabeledBatches`` side by side). ``reverse=False`` is the source-only
baseline with the same network, batches and steps.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..core.validate import check_number
from ..train import TrainConfig, train
from ..train.adversarial import DomainAdversarialLoss
from .base import ClassifierMixin, encode_labels
from .batches import LabeledBatches, pad_rows
from .cbow import PAD, UNK, CBOWModule
from .features import tokenize_all


class DomainAdversarialNet(nn.Module):
    """``features(ids, mask)`` → ``classify`` (class logits) and ``domain`` (source/target logits)."""

    def __init__(self, vocab_size: int, dim: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.encoder = CBOWModule(vocab_size, dim, hidden)
        self.label_head = nn.Linear(hidden, n_classes)
        self.domain_head = nn.Linear(hidden, 2)

    def features(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.relu(self.encoder(ids))  # EmbeddingBag leaves PAD out of the mean: the mask is implied

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.label_head(features)

    def domain(self, features: torch.Tensor) -> torch.Tensor:
        return self.domain_head(features)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(ids, mask))


class DomainBatches:
    """Batch ``i`` of the labelled source batches with batch ``i`` of the target batches as
    ``target_input`` / ``target_mask`` (both pure functions of ``i``, as the trainer requires)."""

    def __init__(self, source: LabeledBatches, target: LabeledBatches) -> None:
        self.source, self.target = source, target

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict:
        out = self.source.batch(index, rank, world)
        target = self.target.batch(index, rank, world)
        out.update(target_input=target["input"], target_mask=target["mask"])
        return out


class DomainAdversarialClassifier(ClassifierMixin):
    """Fit on labelled source texts and unlabelled target texts; predict on either domain.

    ``steps`` optimizer steps (AdamW at ``lr``, constant rate) of ``batch_size`` source and as many target
    texts; the vocabulary is the words seen ``min_count`` times in both together. ``reverse`` switches
    the gradient reversal (False: source-only training, the baseline).
    """

    kind = "dann"

    def __init__(self, *, dim: int = 64, hidden: int = 64, steps: int = 1000, lr: float = 3e-3,
                 batch_size: int = 64, min_count: int = 2, reverse: bool = True, gamma: float = 10.0,
                 domain_weight: float = 1.0, seed: int = 0) -> None:
        self.dim = int(check_number("dim", dim, low=1, integer=True))
        self.hidden = int(check_number("hidden", hidden, low=1, integer=True))
        self.steps = int(check_number("steps", steps, low=1, integer=True))
        self.lr = float(check_number("lr", lr, low=0, low_inclusive=False))
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self.min_count = int(check_number("min_count", min_count, low=1, integer=True))
        self.reverse, self.gamma, self.domain_weight, self.seed = bool(reverse), gamma, domain_weight, seed
        self.classes = None
        self.net: DomainAdversarialNet | None = None
        self.objective: DomainAdversarialLoss | None = None

    def _ids(self, texts: Sequence[str], what: str = "texts") -> list[list[int]]:
        return [[self.index.get(w, UNK) for w in doc] for doc in tokenize_all(texts, what)]

    def fit(self, texts: Sequence[str], labels: Sequence, target_texts: Sequence[str]) -> DomainAdversarialClassifier:
        self.classes, y = encode_labels(texts, labels)
        source_docs = tokenize_all(texts, "source texts")
        target_docs = tokenize_all(target_texts, "target texts")
        counts = Counter(w for d in source_docs + target_docs for w in d)
        self.vocab = ["<pad>", "<unk>"] + sorted(w for w, c in counts.items() if c >= self.min_count)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        torch.manual_seed(self.seed)
        self.net = DomainAdversarialNet(len(self.vocab), self.dim, self.hidden, len(self.classes))
        source = LabeledBatches(self._ids(texts), y, batch_size=self.batch_size, pad_id=PAD, seed=self.seed)
        target = LabeledBatches(self._ids(target_texts), np.zeros(len(target_docs), dtype=np.int64),
                                batch_size=self.batch_size, pad_id=PAD, seed=self.seed + 1)
        self.objective = DomainAdversarialLoss(self.steps, reverse=self.reverse, gamma=self.gamma,
                                               domain_weight=self.domain_weight)
        config = TrainConfig(steps=self.steps, lr=self.lr, schedule="constant", weight_decay=0.0, clip=None,
                             log_every=0, device="cpu", seed=self.seed)
        with tempfile.TemporaryDirectory(prefix="lmlab-dann-") as tmp:
            train(self.net, self.objective, DomainBatches(source, target), config, tmp)
        self.net.eval()
        return self

    @torch.no_grad()
    def features(self, texts: Sequence[str]) -> np.ndarray:
        """The learned features [N, hidden] (what the domain classifier and a probe see)."""
        self._check_fitted()
        ids = self._ids(texts)
        return torch.cat([self.net.features(pad_rows(ids[lo:lo + 512], PAD)[0])
                          for lo in range(0, len(ids), 512)]).numpy()

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        feats = torch.from_numpy(self.features(texts))
        return torch.softmax(self.net.classify(feats).double(), dim=-1).numpy()
