"""Domain-adversarial training: the gradient-reversal layer exactly, and DANN's effect on a toy shift."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmlab.classify.dann import DomainAdversarialClassifier
from lmlab.train.adversarial import DomainAdversarialLoss, dann_lambda, reverse_gradient


@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0, 2.5])
def test_reversal_gradient_is_minus_lambda_times_the_identity(lam):
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.equal(reverse_gradient(x, lam), x)
    jacobian = torch.autograd.functional.jacobian(lambda t: reverse_gradient(t, lam), x)
    assert torch.equal(jacobian.reshape(15, 15), -lam * torch.eye(15, dtype=torch.float64))
    upstream = torch.randn(3, 5, dtype=torch.float64)
    (reverse_gradient(x, lam) * upstream).sum().backward()
    assert torch.equal(x.grad, -lam * upstream)


def test_lambda_schedule_is_the_papers():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.25, gamma=4.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1.0
    loss = DomainAdversarialLoss(100, reverse=False)
    assert loss.lam(50) == 0.0 and DomainAdversarialLoss(100).lam(50) == pytest.approx(dann_lambda(0.5))


def toy_domains(n: int, seed: int) -> tuple[list[str], list[int], list[str], list[int]]:
    """Two classes told apart by shared words (c0*, c1*); each domain adds its own words (s*, t*), which
    carry the domain and nothing about the class."""
    rng = np.random.default_rng(seed)

    def texts(prefix: str) -> tuple[list[str], list[int]]:
        labels = rng.integers(0, 2, n)
        out = [" ".join([f"c{y}{w}" for w in rng.integers(0, 4, 2)] + [f"{prefix}{w}" for w in rng.integers(0, 6, 4)])
               for y in labels]
        return out, labels.tolist()

    return *texts("s"), *texts("t")


def domain_head_accuracy(model: DomainAdversarialClassifier, source: list[str], target: list[str]) -> float:
    """How often the model's own domain classifier tells each text's domain from its features."""
    with torch.no_grad():
        logits = model.net.domain(torch.from_numpy(np.concatenate([model.features(source), model.features(target)])))
    truth = np.r_[np.zeros(len(source)), np.ones(len(target))]
    return float((logits.argmax(-1).numpy() == truth).mean())


def test_reversal_confuses_the_domain_classifier_on_a_toy_shift():
    source, source_y, target, target_y = toy_domains(400, seed=0)
    accuracy = {}
    for reverse in (False, True):
        model = DomainAdversarialClassifier(dim=16, hidden=16, steps=500, lr=3e-3, batch_size=32, min_count=1,
                                            reverse=reverse, seed=0).fit(source, source_y, target)
        accuracy[reverse] = (domain_head_accuracy(model, source, target), model.score(target, target_y))
    (domain_plain, _), (domain_dann, label_dann) = accuracy[False], accuracy[True]
    assert domain_plain > 0.85  # without reversal the features carry the domain
    assert domain_dann < domain_plain - 0.1  # with it the domain classifier is left guessing far more often
    assert label_dann > 0.95  # and the class still transfers to the target
