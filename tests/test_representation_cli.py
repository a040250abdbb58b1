"""The representation-learning verbs on tiny settings: ``lmlab vae`` (a sentence VAE), ``lmlab simcse``
(contrastive sentence embeddings) and ``lmlab clip`` (an image–text dual encoder on the digits) — each
trains through the library, prints one JSON object, saves a model directory that loads back to the same
outputs, and refuses bad input naming the argument."""

import json

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.cli import main
from lmlab.models.directory import read_model_dir

WORDS = "the a cat dog sat ran on under mat rug big small red".split()


def sentences(n, seed=0):
    rng = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(k),), generator=rng))
            for k in torch.randint(3, 8, (n,), generator=rng)]


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_vae_trains_reports_the_bound_and_saves(tmp_path, capsys, no_progress):
    from lmlab.models.sentence_vae import SentenceVAE
    from lmlab.tokenizers import load
    from lmlab.train.vae import SentencePairs, evaluate_vae

    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n".join(sentences(40)) + "\n")
    valid.write_text("\n".join(sentences(10, seed=1)) + "\n")
    out = tmp_path / "vae"
    r = run_json(capsys, ["vae", str(train), "--valid", str(valid), "--out", str(out), "--steps", "4",
                          "--batch-size", "8", "--d-embed", "8", "--d-hidden", "16", "--d-latent", "4",
                          "--kl-schedule", "cyclical", "--free-bits", "0.1", "--word-dropout", "0.2", "--json",
                          "--interpolate", sentences(2)[0], sentences(2)[1], "--interpolation-steps", "3"])
    assert r["steps"] == 4 and r["kl_schedule"] == "cyclical" and 0 <= r["active_units"] <= 4
    assert len(r["interpolation"]) == 3 and all(isinstance(t, str) for t in r["interpolation"])
    assert r["perplexity_bound"] == pytest.approx(2.718281828 ** r["nll_bound_per_token"], rel=1e-6)
    model = SentenceVAE.from_state(*read_model_dir(out / "model"))
    tok = load(out / "model")
    pairs = SentencePairs([tok.encode(t) for t in valid.read_text().split("\n") if t], 1, bos_id=tok.bos_id,
                          eos_id=tok.eos_id, pad_id=tok.pad_id)
    assert evaluate_vae(model, pairs)["nll_bound_per_token"] == pytest.approx(r["nll_bound_per_token"], rel=1e-5)
    assert main(["vae", str(train), "--out", str(tmp_path / "x"), "--no-latent", "--free-bits", "1"]) == 1
    assert "--no-latent" in capsys.readouterr().err
    assert main(["vae", str(train), "--out", str(tmp_path / "x"), "--steps", "0"]) == 1
    assert "--steps" in capsys.readouterr().err
    assert main(["vae", str(train), "--out", str(tmp_path / "x"), "--no-latent", "--interpolate", "a", "b"]) == 1
    assert "--interpolate" in capsys.readouterr().err


def test_simcse_trains_an_encoder_that_lmlab_embed_reads(tmp_path, capsys, no_progress):
    from lmlab.models.config import TransformerConfig
    from lmlab.models.directory import save_model_dir
    from lmlab.models.transformer import TransformerLM
    from lmlab.tokenizers import WordLevelTokenizer

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sentences(32)) + "\n")
    tok = WordLevelTokenizer("word").train(sentences(32))
    torch.manual_seed(0)
    base = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=tok.vocab_size, d_model=16, n_layers=1,
                                                       n_heads=2, context_length=16))
    save_model_dir(tmp_path / "base", *base.to_state(), tokenizer=tok)
    out = tmp_path / "simcse"
    r = run_json(capsys, ["simcse", str(texts), "--model", str(tmp_path / "base"), "--out", str(out), "--steps", "3",
                          "--batch-size", "8", "--max-length", "12", "--lr", "1e-3", "--json"])
    assert r["mode"] == "unsupervised" and r["steps"] == 3 and r["texts"] == 32
    config, tensors = read_model_dir(out / "model")
    assert config["dropout"] == 0.0 and not config["causal"]
    assert not torch.equal(tensors["blocks.0.attn.q_proj.weight"], base.state_dict()["blocks.0.attn.q_proj.weight"])
    e = run_json(capsys, ["embed", "--model", str(out / "model"), "--text", "the cat sat", "--json"])
    assert e["dim"] == 16 and abs(sum(x * x for x in e["embeddings"][0]) - 1) < 1e-4
    positives = tmp_path / "positives.txt"
    positives.write_text("\n".join(sentences(5)) + "\n")
    assert main(["simcse", str(texts), "--positives", str(positives), "--model", str(tmp_path / "base"),
                 "--out", str(tmp_path / "x"), "--batch-size", "4"]) == 1
    assert "32 sentences but 5 positives" in capsys.readouterr().err


def test_clip_trains_on_the_digits_and_saves(tmp_path, capsys, no_progress):
    pytest.importorskip("sklearn", reason="the digits ship in scikit-learn")
    from lmlab.data.digits import load_digits
    from lmlab.models.vision import DualEncoder

    out = tmp_path / "clip"
    r = run_json(capsys, ["clip", "--out", str(out), "--steps", "3", "--d-model", "16", "--image-layers", "1",
                          "--batch-size", "16", "--json"])
    assert r["steps"] == 3 and 0 <= r["zero_shot_accuracy"] <= 1 and 0 <= r["text_to_image_precision@10"] <= 1
    model = DualEncoder.from_state(*read_model_dir(out / "model"))
    images = load_digits("test").images[:4]
    assert model.embed_images(images).shape == (4, 16)
    assert main(["clip", "--out", str(tmp_path / "x"), "--patch-size", "3"]) == 1
    assert "patch size 3 does not divide the image size 8" in capsys.readouterr().err
