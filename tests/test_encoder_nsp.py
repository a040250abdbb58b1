"""Next-sentence prediction summed with the masked LM: the pairs are cut from the windows and
packed [CLS] A [SEP] B [SEP] with segments, half of them with a random B; the loss is MLM + NSP
and reaches the pooler; ``lmlab pretrain --objective mlm --nsp`` trains and saves the encoder."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError
from lmlab.data.noising import IGNORE_INDEX, IS_NEXT, NOT_NEXT
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.train.denoising import MaskedLMWithNsp, NspModel
from lmlab.train.objectives import token_loss

CLS, SEP, PAD, MASK, V = 1, 2, 0, 3, 40


def objective(**kw):
    return MaskedLMWithNsp(MASK, V, cls_id=CLS, sep_id=SEP, pad_id=PAD, special_ids=[PAD, CLS, SEP, MASK], **kw)


def test_pairs_are_packed_with_segments_and_half_are_random():
    windows = torch.arange(10, 10 + 16 * 400).remainder(V - 4).add(4).view(400, 16)  # distinct rows
    windows[:, 0] = torch.arange(400) % (V - 4) + 4
    ids, segments, mask, labels = objective().pairs(windows, step=3)
    assert ids.shape == segments.shape == mask.shape == (400, 16)
    assert abs(labels.float().mean().item() - 0.5) < 0.07  # NOT_NEXT = 1 half of the time
    for row, seg, m, label, window in zip(ids, segments, mask, labels, windows, strict=True):
        n = int(m.sum())
        real, seg = row[:n].tolist(), seg[:n].tolist()
        assert real[0] == CLS and real[-1] == SEP and real.count(SEP) == 2 and row[n:].eq(PAD).all()
        first_sep = real.index(SEP)
        a, b = real[1:first_sep], real[first_sep + 1:-1]
        assert seg == [0] * (first_sep + 1) + [1] * (len(b) + 1)
        assert a == window[:len(a)].tolist()  # A is the start of the window
        if label == IS_NEXT:
            assert a + b == window[:13].tolist()  # B is what followed (13 = 16 - [CLS] - 2 [SEP])
        else:
            assert label == NOT_NEXT
    again = objective().pairs(windows, step=3)
    assert all(torch.equal(x, y) for x, y in zip(again, (ids, segments, mask, labels), strict=True))


def test_loss_is_masked_lm_plus_next_sentence_and_reaches_the_pooler():
    torch.manual_seed(0)
    enc = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=V, d_model=32, n_layers=1, n_heads=4,
                                                      context_length=16))
    model = NspModel(enc)
    obj = objective(seed=5)
    batch = {"input": torch.randint(4, V, (6, 16)), "step": 2}
    loss, n = obj(model, batch)
    packed, segments, mask, labels = obj.pairs(batch["input"], 2)
    inputs, mlm_labels = obj.noise(packed, 2)
    assert n == int((mlm_labels != IGNORE_INDEX).sum()) > 0
    hidden, _ = enc.hidden_states(inputs, attention_mask=mask, token_type_ids=segments)
    expected = token_loss(enc.logits(hidden), mlm_labels) + F.cross_entropy(model.next_sentence_logits(hidden), labels)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert model.pooler.weight.grad.abs().sum() > 0 and model.classifier.weight.grad.abs().sum() > 0
    assert enc.segments.weight.grad[1].abs().sum() > 0  # segment B is used


def test_pretrain_mlm_with_nsp_from_the_cli(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.models import load_model
    from lmlab.train import pretrain

    out = tmp_path / "bert"
    assert main(["pretrain", "--family", "bert", "--objective", "mlm", "--nsp", "--train", "embedded:test",
                 "--valid", "embedded:test", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--steps", "2",
                 "--context", "32", "--batch-size", "4", "--eval-batches", "2", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid_loss"] is not None
    assert json.loads((out / "run.json").read_text())["nsp"] is True
    loaded, _ = load_model(out / "model")
    assert isinstance(loaded, TransformerLM) and not loaded.config.causal  # the encoder, without the NSP head
    with pytest.raises(ConfigError, match="next-sentence"):
        pretrain("bert", None, None, tmp_path / "x", objective="electra", nsp=True)
