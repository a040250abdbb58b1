"""Encoder–decoder objectives: teacher-forced seq2seq learns to copy, span corruption and
BART denoising build the right pairs, and ``lmlab pretrain --family t5|bart``."""

import json

import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.data.noising import restore_span_corruption, span_corruption
from lmlab.models.config import TransformerConfig
from lmlab.models.seq2seq import EncoderDecoder
from lmlab.train.denoising import step_generator
from lmlab.train.seq2seq_objectives import Denoising, Seq2SeqLM, SpanCorruption, pad_rows
from lmlab.train.trainer import TrainConfig, train

V = 24


def model(preset="t5", seed=0):
    torch.manual_seed(seed)
    return EncoderDecoder(TransformerConfig.from_preset(preset, vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                                                        context_length=24))


class Recorder:
    """A stand-in model that records what the objective feeds it and returns uniform logits."""

    def __call__(self, ids, state=None, attention_mask=None, *, source=None, source_mask=None):
        self.ids, self.source, self.source_mask = ids, source, source_mask
        return torch.zeros(*ids.shape, V, requires_grad=True), None


def test_pad_rows_by_hand():
    ids, mask = pad_rows([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_teacher_forcing_shifts_the_target_and_masks_padding():
    rec = Recorder()
    batch = {"source": torch.tensor([[3, 4]]), "target": torch.tensor([[5, 6, 0]]),
             "target_mask": torch.tensor([[1, 1, 0]])}
    loss, n = Seq2SeqLM(start_id=1)(rec, batch)
    assert rec.ids.tolist() == [[1, 5, 6]] and n == 2
    assert abs(float(loss.detach()) - torch.log(torch.tensor(float(V)))) < 1e-5  # uniform logits


def test_span_corruption_pairs_restore_the_window():
    rec = Recorder()
    objective = SpanCorruption(V, start_id=1, pad_id=0, eos_id=2, noise_density=0.3, seed=5)
    window = torch.randint(3, V - 6, (3, 20))
    objective(rec, {"input": window, "step": 4})
    for row in range(3):
        src = rec.source[row][rec.source_mask[row].bool()]
        assert (src >= V - 6).any()  # sentinels from the top of the vocabulary
    gen = step_generator(5, 4)  # the same noise again: the pairs restore each window
    for i, row in enumerate(window):
        inputs, targets = span_corruption(row, vocab_size=V, noise_density=0.3, eos_id=2, generator=gen)
        assert torch.equal(rec.source[i][rec.source_mask[i].bool()], inputs)
        assert torch.equal(restore_span_corruption(inputs, targets, vocab_size=V, eos_id=2), row)


def test_denoising_targets_are_the_original_windows():
    rec = Recorder()
    window = torch.randint(3, V - 1, (2, 20))
    loss, n = Denoising(V - 1, start_id=1, pad_id=0, rate=0.3, seed=0)(rec, {"input": window, "step": 0})
    assert n == 40 and rec.ids[:, 1:].tolist() == window[:, :-1].tolist()
    assert (rec.source == V - 1).any() and rec.source_mask.sum() < 40


class CopyTask:
    def batch(self, step, rank=0, world=1):
        g = torch.Generator().manual_seed(step)
        src = torch.randint(3, V, (8, 6), generator=g)
        return {"source": src, "target": src, "target_mask": torch.ones_like(src)}


def test_seq2seq_learns_to_copy_on_the_trainer(tmp_path):
    m, objective = model("bart"), Seq2SeqLM(start_id=1)
    before, _ = objective(m.eval(), CopyTask().batch(999))
    train(m, objective, CopyTask(), TrainConfig(steps=150, lr=3e-3, schedule="constant", weight_decay=0.0,
                                                device="cpu", log_every=0), tmp_path)
    after, _ = objective(m.eval(), CopyTask().batch(999))
    assert float(after.detach()) < 0.5 * float(before.detach())


def test_pretrain_t5_span_and_bart_denoise(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.models import load_model

    for family, objective in (("t5", "span"), ("bart", "denoise")):
        out = tmp_path / family
        assert main(["pretrain", "--family", family, "--objective", objective, "--train", "embedded:test",
                     "--valid", "embedded:test", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
                     "--steps", "2", "--context", "32", "--batch-size", "4", "--eval-batches", "2",
                     "--out", str(out), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["valid_loss"] is not None
        loaded, _ = load_model(out / "model")
        assert isinstance(loaded, EncoderDecoder)
    assert main(["pretrain", "--family", "gpt2", "--objective", "span", "--train", "embedded:test",
                 "--out", str(tmp_path / "x"), "--steps", "1"]) != 0
