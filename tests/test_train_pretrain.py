"""``pretrain`` and ``lmlab pretrain``: run directories that eval and generate can use, resume, errors."""

import json
import math

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.cli import main
from lmlab.core.errors import ConfigError
from lmlab.data import from_texts
from lmlab.models import load_model
from lmlab.tokenizers import WordLevelTokenizer
from lmlab.train import pretrain

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat and the log"] * 20


@pytest.mark.parametrize("family,settings,extra", [
    ("lstm", dict(d_embed=16, d_hidden=16, n_layers=1), dict(scheduled_sampling=0.2)),
    ("feedforward", dict(order=3, d_embed=8, d_hidden=16), {}),
    ("vaswani", dict(d_model=16, n_layers=1, n_heads=2), dict(label_smoothing=0.1)),
])
def test_pretrain_word_level_families(tmp_path, family, settings, extra, no_progress):
    corpus = from_texts(TEXT)
    tok = WordLevelTokenizer("word").train(corpus)
    result = pretrain(family, corpus, tok, tmp_path, model=settings, valid=from_texts(TEXT[:8]),
                      training=dict(steps=60, lr=2e-2, eval_every=20, device="cpu"),
                      batch_size=4, context=8, **extra)
    first, last = result.train.eval_losses[0][1], result.train.eval_losses[-1][1]
    assert last < first - 0.3 and last < 1.7  # uniform over the 13 ids would be 2.56
    model, tokenizer = load_model(result.model_dir)
    assert tokenizer.fingerprint() == tok.fingerprint()
    ids = torch.tensor([[tok.bos_id] + tok.encode("the cat sat on the mat")])
    assert torch.allclose(model.score(ids), result.model.score(ids))


def test_cli_pretrain_eval_generate_and_resume(tmp_path, capsys):
    data = tmp_path / "train.txt"
    data.write_text("\n".join(TEXT) + "\n")
    run = tmp_path / "run"
    args = ["pretrain", "--family", "gpt2", "--train", str(data), "--valid", str(data), "--out", str(run),
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--steps", "6", "--context", "24",
            "--batch-size", "4", "--checkpoint-every", "3", "--device", "cpu", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 6 and out["valid_loss"] is not None
    assert main(["eval", "perplexity", "--model", out["model_dir"], "--data", str(data), "--json"]) == 0
    ppl = json.loads(capsys.readouterr().out)
    # the same figure computed here from the saved model's logits, one document at a time
    model, tok = load_model(out["model_dir"])
    total, tokens = 0.0, 0
    with torch.no_grad():
        for line in TEXT:
            ids = torch.tensor([[tok.start_id] + tok.encode(line) + [tok.eos_id]])
            logp = torch.log_softmax(model(ids)[0][0, :-1].double(), dim=-1)
            total += float(logp.gather(1, ids[0, 1:, None]).sum())
            tokens += ids.shape[1] - 1
    assert ppl["tokens"] == tokens
    assert ppl["perplexity"] == pytest.approx(math.exp(-total / tokens), rel=1e-5)
    assert ppl["perplexity"] < tok.vocab_size  # 6 steps already beat uniform over the ~20 characters
    assert main(["generate", "--model", out["model_dir"], "--prompt", "the ", "--max-new-tokens", "5",
                 "--seed", "0", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["samples"][0]["tokens"]) <= 5
    assert main(["pretrain", "--resume", str(run), "--steps", "9", "--json", "--device", "cpu"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["steps"] == 9
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 10))
    # bad input: one clear line each
    assert main(["pretrain", "--resume", str(run), "--d-model", "8"]) == 1
    assert "cannot change when resuming" in capsys.readouterr().err
    assert main(["pretrain", "--family", "gpt2", "--n-heads", "3", "--train", str(data), "--out",
                 str(tmp_path / "r2")]) == 1
    assert "does not divide d_model" in capsys.readouterr().err
    assert main(["pretrain", "--family", "lstm", "--d-model", "3", "--train", str(data), "--out",
                 str(tmp_path / "r3")]) == 1
    assert "unknown setting(s) of the lstm family: d_model" in capsys.readouterr().err


def test_scheduled_sampling_is_for_recurrent_models(tmp_path):
    corpus = from_texts(TEXT)
    tok = WordLevelTokenizer("word").train(corpus)
    with pytest.raises(ConfigError, match="recurrent"):
        pretrain("gpt2", corpus, tok, tmp_path, scheduled_sampling=0.1)


def test_stream_loss_windows_and_carried_state_equal_a_direct_computation():
    from lmlab.data.shards import TokenArray
    from lmlab.models.config import TransformerConfig
    from lmlab.models.recurrent import RecurrentLM
    from lmlab.models.transformer import TransformerLM
    from lmlab.train import stream_loss

    torch.manual_seed(0)
    ids = torch.randint(0, 11, (1, 30))
    tokens = TokenArray(ids[0].numpy(), vocab_size=11)
    tf = TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=11, d_model=8, n_layers=1, n_heads=2,
                                                     context_length=30)).eval()
    direct = -float(tf.score(ids).mean())  # one window holds everything
    assert stream_loss(tf, tokens, context=30) == pytest.approx(direct, abs=1e-5)
    short = TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=11, d_model=8, n_layers=1, n_heads=2,
                                                        context_length=8)).eval()
    short.load_state_dict({k: v for k, v in tf.state_dict().items() if "positions" not in k}, strict=False)
    # windows of 8 with stride 3: each target is scored once, with at least 5 tokens of context after the first
    by_hand, done, start = [], 0, 0
    while done < 29:
        length = min(8, 29 - start)
        window = short.score(ids[:, start:start + length + 1])[0]
        by_hand += window[done - start:].tolist()
        done, start = start + length, start + 3
    assert len(by_hand) == 29
    assert stream_loss(short, tokens, context=8, stride=3, batch_size=2) == pytest.approx(-sum(by_hand) / 29, abs=1e-5)
    lstm = RecurrentLM(11, d_embed=4, d_hidden=4, n_layers=1).eval()
    assert stream_loss(lstm, tokens, context=7, batch_size=1) == pytest.approx(-float(lstm.score(ids).mean()), abs=1e-5)


def test_bad_input_gives_one_clear_message_each(tmp_path, capsys):
    import shutil

    from lmlab.core.errors import ModelError
    from lmlab.data.loaders import RandomWindows
    from lmlab.data.shards import TokenArray
    from lmlab.models.config import TransformerConfig
    from lmlab.models.transformer import TransformerLM
    from lmlab.train import CausalLM, TrainConfig, train

    data = tmp_path / "train.txt"
    data.write_text("\n".join(TEXT) + "\n")
    tiny = ["--train", str(data), "--steps", "2", "--batch-size", "2", "--device", "cpu", "--quiet"]
    # a context longer than the learned positions: refused before any work
    assert main(["pretrain", "--family", "gpt2", "--d-model", "8", "--n-heads", "2", "--n-layers", "1",
                 "--context", "32", "--context-length", "16", "--out", str(tmp_path / "long"), *tiny]) == 1
    err = capsys.readouterr().err
    assert "longer than the 16 positions" in err and "Traceback" not in err
    # resuming a run whose checkpoint belongs to another model
    for name, family, shape in (("a", "gpt2", ["--d-model", "8", "--n-heads", "2", "--n-layers", "1"]),
                                ("b", "lstm", ["--d-embed", "8", "--d-hidden", "8", "--n-layers", "1"])):
        assert main(["pretrain", "--family", family, *shape, "--context", "8", "--out", str(tmp_path / name),
                     *tiny]) == 0
    shutil.rmtree(tmp_path / "a" / "checkpoints")
    shutil.copytree(tmp_path / "b" / "checkpoints", tmp_path / "a" / "checkpoints")
    assert main(["pretrain", "--resume", str(tmp_path / "a"), "--steps", "3", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "is of another model" in err and "Traceback" not in err
    assert main(["pretrain", "--resume", str(tmp_path), "--quiet"]) == 1
    assert "not a pretraining run directory" in capsys.readouterr().err
    # token ids beyond the model's vocabulary
    torch.manual_seed(0)
    small = TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=5, d_model=8, n_layers=1, n_heads=2,
                                                        context_length=8))
    source = RandomWindows(TokenArray(np.arange(40) % 9, vocab_size=9), 2, 8)
    with pytest.raises(ModelError, match="ids up to 8, but the model's vocabulary has 5"):
        train(small, CausalLM(), source, TrainConfig(steps=1, device="cpu"), tmp_path / "oov")
