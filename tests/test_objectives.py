"""Encoder objectives on the one trainer: masked LM (noise reproducible, only selected tokens
scored, loss falls), ELECTRA (shared embeddings, replaced-token labels) and ``lmlab pretrain
--objective mlm|electra``."""

import json

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.train.denoising import Electra, ElectraModel, MaskedLM, word_starts
from lmlab.train.trainer import TrainConfig, train

V, MASK = 30, 29


def bert(seed=0, context_length=16, **kw):
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig.from_preset("bert", vocab_size=V, d_model=32, n_layers=2, n_heads=4,
                                                       context_length=context_length, **kw))


class Copies:
    """Rows that repeat one of 8 tokens: a masked token is predictable only from the other tokens."""

    def batch(self, step, rank=0, world=1):
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(1, 9, (8, 1), generator=g).expand(8, 16).clone()
        return {"input": ids, "target": ids}


def test_masking_noise_is_a_function_of_the_step_and_only_selected_tokens_count():
    mlm = MaskedLM(MASK, V, rate=0.3, special_ids=[0], seed=3)
    ids = torch.randint(1, MASK, (4, 50))
    ids[:, 0] = 0
    a, la = mlm.noise(ids, 7)
    b, lb = mlm.noise(ids, 7)
    c, _ = mlm.noise(ids, 8)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert (la[:, 0] == -100).all()  # special tokens are never selected
    selected = la != -100
    assert torch.equal(la[selected], ids[selected]) and torch.equal(a[~selected], ids[~selected])
    _, n = mlm(bert(context_length=64), {"input": ids, "step": 7})
    assert n == int(selected.sum())


def test_masked_lm_learns_on_the_trainer(tmp_path):
    model, mlm = bert(), MaskedLM(MASK, V, rate=0.2, seed=0)
    batches = [Copies().batch(10_000 + i) for i in range(4)]
    before = mlm.evaluate(model.eval(), batches)
    train(model, mlm, Copies(), TrainConfig(steps=200, lr=3e-3, schedule="constant", weight_decay=0.0, device="cpu",
                                            log_every=0), tmp_path)
    after = mlm.evaluate(model.eval(), batches)
    assert after["loss"] < before["loss"] - 1.0 and after["accuracy"] > 0.9


def test_electra_shares_embeddings_and_labels_replacements(tmp_path):
    electra = ElectraModel(bert(), generator_layers=1)
    assert electra.generator.embed is electra.discriminator.embed
    assert electra.generator.head.weight is electra.discriminator.embed.weight
    assert len(electra.generator.blocks) == 1
    objective = Electra(MASK, V, rate=0.2, rtd_weight=50.0, seed=0)
    loss, n = objective(electra, Copies().batch(0))
    assert torch.isfinite(loss) and n == 8 * 16
    result = train(electra, objective, Copies(), TrainConfig(steps=30, lr=3e-3, device="cpu", log_every=0), tmp_path)
    assert result.final_loss < float(loss.detach())


def test_whole_word_table_needs_a_marked_vocabulary():
    class Pieces:
        vocab_size = 4

        def __init__(self, pieces):
            self.pieces = pieces

        def id_to_token(self, i):
            return self.pieces[i]

    assert word_starts(Pieces(["[CLS]", "play", "##ing", "run"])).tolist() == [True, True, False, True]
    with pytest.raises(ConfigError):
        word_starts(Pieces(["a", "b", "c", "d"]))


def test_pretrain_cli_mlm_makes_a_bidirectional_model(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.models import load_model

    out = tmp_path / "run"
    assert main(["pretrain", "--family", "bert", "--objective", "mlm", "--train", "embedded:test",
                 "--valid", "embedded:test", "--d-model", "32", "--n-layers", "1", "--n-heads", "2",
                 "--steps", "3", "--context", "32", "--batch-size", "4", "--eval-batches", "2",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid_loss"] is not None
    model, tokenizer = load_model(out / "model")
    assert model.config.causal is False
    assert model.vocab_size == tokenizer.vocab_size + 1  # a [MASK] id appended to a char vocabulary
    assert main(["pretrain", "--family", "lstm", "--objective", "mlm", "--train", "embedded:test",
                 "--out", str(tmp_path / "x"), "--steps", "1"]) != 0
    assert "needs a transformer" in capsys.readouterr().err
