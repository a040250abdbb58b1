"""Pruning (magnitude, Wanda, 2:4) and distillation (KD loss, half-depth student) on tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import LmlabError
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.quant.pruning import prune_mask, prune_model, sparsity_of
from lmlab.train.distill import Distillation, kd_loss, student_from_teacher


def make(seed: int = 0, layers: int = 2) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig.from_preset("llama", vocab_size=40, d_model=64, n_layers=layers,
                                                       n_heads=4, n_kv_heads=2, d_ff=128, context_length=64)).eval()


def test_two_four_keeps_the_two_largest_of_every_four():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 0.1, 0.9, 0.7]])
    assert prune_mask(score, 0.5, "2:4").tolist() == [[True, False, True, False, False, False, True, True]]


def test_magnitude_and_wanda_reach_the_sparsity():
    lm = prune_model(make(), 0.5)
    assert sparsity_of(lm) == pytest.approx(0.5, abs=0.01)
    calib = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(0))
    wanda = prune_model(make(), 0.3, score="wanda", calibration=calib)
    row = wanda.blocks[0].mlp.down.weight
    assert ((row == 0).sum(1) == int(row.shape[1] * 0.3)).all()  # Wanda compares within each output row
    two_four = prune_model(make(), pattern="2:4")
    w = two_four.blocks[1].attn.q_proj.weight.reshape(-1, 4)
    assert ((w == 0).sum(1) >= 2).all() and sparsity_of(two_four) == pytest.approx(0.5, abs=0.01)


def test_wanda_uses_activation_norms():
    # one input feature carries large activations: Wanda keeps its weights, magnitude does not
    w = torch.ones(2, 4)
    w[:, 0] = 0.5
    x_norm = torch.tensor([100.0, 1.0, 1.0, 1.0])
    assert prune_mask(w.abs() * x_norm, 0.25, per_row=True)[:, 0].all()
    assert not prune_mask(w.abs(), 0.25)[:, 0].any()


def test_pruning_errors():
    with pytest.raises(LmlabError, match="calibration"):
        prune_model(make(), score="wanda")
    with pytest.raises(LmlabError, match="pattern"):
        prune_model(make(), pattern="4:8")


def test_kd_loss_equals_its_formula():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    temp = 3.0
    p = torch.softmax(t / temp, -1)
    expected = temp ** 2 * (p * (p.log() - torch.log_softmax(s / temp, -1))).sum(-1).mean()
    assert torch.allclose(kd_loss(s, t, temp), expected, atol=1e-6)
    # and as torch's own KL divergence with batchmean over tokens
    ref = F.kl_div(torch.log_softmax(s / temp, -1).reshape(-1, 11), p.reshape(-1, 11), reduction="batchmean")
    assert torch.allclose(kd_loss(s, t, temp), temp ** 2 * ref, atol=1e-6)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    per = (p * (p.log() - torch.log_softmax(s / temp, -1))).sum(-1)
    assert torch.allclose(kd_loss(s, t, temp, mask), temp ** 2 * per[mask.bool()].mean(), atol=1e-6)


def test_distillation_objective_mixes_kd_and_lm_loss():
    teacher, student = make(0, 4), make(1, 2)
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(2))
    batch = {"input": ids[:, :-1], "target": ids[:, 1:]}
    loss, tokens = Distillation(teacher, temperature=2.0, alpha=0.25)(student, batch)
    s, t = student(batch["input"])[0], teacher(batch["input"])[0]
    lm = F.cross_entropy(s.reshape(-1, 40), batch["target"].reshape(-1))
    assert tokens == 16 and torch.allclose(loss, 0.25 * kd_loss(s, t, 2.0) + 0.75 * lm, atol=1e-5)
    loss.backward()
    assert student.blocks[0].attn.q_proj.weight.grad is not None
    assert teacher.blocks[0].attn.q_proj.weight.grad is None


def test_student_takes_every_other_teacher_layer():
    teacher = make(0, 4)
    student = student_from_teacher(teacher)
    assert len(student.blocks) == student.config.n_layers == 2
    assert torch.equal(student.blocks[1].mlp.up.weight, teacher.blocks[2].mlp.up.weight)
    assert student.blocks[1].mlp.up.weight.data_ptr() != teacher.blocks[2].mlp.up.weight.data_ptr()
    ids = torch.randint(0, 40, (1, 6))
    assert student(ids)[0].shape == (1, 6, 40)


def test_distillation_runs_on_the_trainer(tmp_path):
    from lmlab.data.loaders import RandomWindows
    from lmlab.data.shards import TokenArray
    from lmlab.train.trainer import TrainConfig, train

    teacher = make(0, 4)
    student = student_from_teacher(teacher)
    ids = torch.randint(0, 40, (400,), generator=torch.Generator().manual_seed(3)).tolist()
    source = RandomWindows(TokenArray(ids, 40), batch_size=2, context=16)
    before = student.blocks[0].mlp.up.weight.detach().clone()
    train(student, Distillation(teacher), source, TrainConfig(steps=3, lr=1e-3, device="cpu"), tmp_path / "run")
    assert not torch.equal(before, student.blocks[0].mlp.up.weight)
    assert torch.equal(teacher.blocks[0].mlp.up.weight, before)  # the teacher is untouched


def test_distilbert_recipe_on_an_encoder(tmp_path):
    """Sanh et al. 2019 on a BERT: both read the same masked input; KD and MLM at the masked
    positions, hidden-state cosine at every position; trains on the trainer."""
    from lmlab.train.denoising import MaskedLM
    from lmlab.train.trainer import TrainConfig, train

    torch.manual_seed(0)
    teacher = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=30, d_model=32, n_layers=4, n_heads=4,
                                                          context_length=16)).eval()
    student = student_from_teacher(teacher).eval()
    masking = MaskedLM(29, 30, rate=0.3, special_ids=[0], seed=1)
    ids = torch.randint(1, 29, (3, 16), generator=torch.Generator().manual_seed(4))
    objective = Distillation(teacher, temperature=2.0, alpha=0.4, cosine=1.5, masking=masking)
    loss, n = objective(student, {"input": ids, "target": ids, "step": 5})

    noised, labels = masking.noise(ids, 5)
    keep = labels != -100
    assert 0 < int(keep.sum()) < ids.numel() and not torch.equal(noised, ids)
    with torch.no_grad():
        s, t = student(noised)[0], teacher(noised)[0]
        s_h, t_h = student.hidden_states(noised)[0], teacher.hidden_states(noised)[0]
    kd = 4.0 * F.kl_div(F.log_softmax(s[keep] / 2, -1), F.softmax(t[keep] / 2, -1), reduction="batchmean")
    mlm = F.cross_entropy(s[keep], labels[keep])
    cos = 1 - F.cosine_similarity(s_h, t_h, dim=-1).mean()
    assert n == int(keep.sum())
    torch.testing.assert_close(loss.detach(), 0.4 * kd + 0.6 * mlm + 1.5 * cos, rtol=1e-5, atol=1e-5)

    class Rows:
        def batch(self, step, rank=0, world=1):
            return {"input": ids, "target": ids}

    before = student.blocks[1].mlp.up.weight.detach().clone()
    train(student.train(), objective, Rows(), TrainConfig(steps=3, lr=1e-3, device="cpu"), tmp_path / "run")
    assert not torch.equal(before, student.blocks[1].mlp.up.weight)
    assert torch.equal(teacher.blocks[2].mlp.up.weight, before)  # student layer 1 was teacher layer 2
