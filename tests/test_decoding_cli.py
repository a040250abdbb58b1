"""The decoding-method flags of ``lmlab generate``: speculative (draft model, n-gram, prompt lookup),
contrastive decoding and search, FUDGE, MBR, self-consistency and reward reranking; bad combinations
and a draft with another tokenizer are one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.classify import LogisticRegression, save_classifier
from lmlab.cli import main
from lmlab.models import save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.ngram.arpa import write_arpa
from lmlab.ngram.model import NgramLM
from lmlab.tokenizers import WordLevelTokenizer

TEXT = "the cat sat on the mat. the dog sat on the log. the cat ran after the dog."


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def model_dir(path, tok, layers: int, seed: int):
    torch.manual_seed(seed)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=layers,
                                                     n_heads=4, n_kv_heads=2, context_length=128),
                       special_ids={"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                                    "unk_id": tok.unk_id}).eval()
    with torch.no_grad():
        lm.head.weight.mul_(20)
    save_model_dir(path, *lm.to_state(), tokenizer=tok)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoding-cli")
    tok = WordLevelTokenizer("char").train([TEXT])
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}. {% endfor %}"  # for lmlab chat
    words = WordLevelTokenizer("word").train([TEXT])
    write_arpa(NgramLM.fit_corpus([TEXT], words, order=2, smoothing="wb"), words, root / "words.arpa")
    clf = LogisticRegression(max_iter=100).fit(["good", "great fun", "bad", "awful mess"], ["1", "1", "0", "0"])
    save_classifier(root / "clf", clf)
    return {"target": model_dir(root / "target", tok, 2, 0), "draft": model_dir(root / "draft", tok, 1, 1),
            "arpa": str(root / "words.arpa"), "clf": str(root / "clf")}


def generate(capsys, models, *flags):
    code, out, err = run(capsys, "generate", "--model", models["target"], "--prompt", "the cat", "--max-new-tokens",
                         "12", "--json", *flags)
    assert code == 0, err
    return json.loads(out)


def test_speculative_flags_give_plain_greedy_tokens_and_report_acceptance(capsys, models):
    plain = generate(capsys, models, "--greedy")
    for spec in (models["draft"], "ngram", "prompt-lookup"):
        got = generate(capsys, models, "--greedy", "--speculative", spec, "--draft-tokens", "3")
        assert got["tokens"] == plain["tokens"] and got["strategy"] == "speculative"
        assert 0.0 <= got["acceptance_rate"] <= 1.0 and got["decode_tokens_per_s"] >= 0
    got = generate(capsys, models, "--greedy", "--speculative", "prompt-lookup", "--adaptive-draft")
    assert got["tokens"] == plain["tokens"]


def test_method_and_selection_flags(capsys, models):
    cd = generate(capsys, models, "--greedy", "--contrastive-amateur", models["draft"], "--alpha", "0.2")
    assert cd["strategy"] == "contrastive" and len(cd["tokens"]) == 12
    cs = generate(capsys, models, "--penalty-alpha", "0.6", "--top-k", "3")
    assert cs["strategy"] == "contrastive_search"
    fudge = generate(capsys, models, "--greedy", "--fudge", models["clf"], "--fudge-label", "1", "--strength", "3")
    assert fudge["strategy"] == "fudge"
    mbr = generate(capsys, models, "--mbr", "chrf", "--samples", "4", "--seed", "1")
    assert mbr["strategy"] == "best_of" and mbr["settings"]["select"] == "MBR(chrf)" and "score" in mbr
    beam = generate(capsys, models, "--mbr", "bleu", "--samples", "3", "--mbr-evidence", "beam")
    assert beam["strategy"] == "beam"
    sc = generate(capsys, models, "--self-consistency", "3", "--seed", "2")
    assert sc["votes"] >= 0 and sc["hypotheses"] == 3
    reward = generate(capsys, models, "--best-of", "3", "--seed", "2", "--reward", models["clf"])
    assert reward["settings"]["select"].startswith("Reward(")


@pytest.mark.parametrize("flags, match", [
    (("--speculative", "prompt-lookup", "--penalty-alpha", "0.5"), "two decoding methods"),
    (("--mbr", "chrf", "--self-consistency", "3"), "two selection rules"),
    (("--mbr", "chrf", "--best-of", "3"), "--samples"),
    (("--speculative", "prompt-lookup", "--beam-size", "2"), "greedy or sampled"),
    (("--reward", "CLF"), "--best-of"),
    (("--speculative", "ARPA"), "do not share a tokenizer"),
])
def test_bad_method_flags_are_one_clear_line(capsys, models, flags, match):
    flags = [models["clf"] if f == "CLF" else models["arpa"] if f == "ARPA" else f for f in flags]
    code, out, err = run(capsys, "generate", "--model", models["target"], "--prompt", "the", *flags)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("lmlab: error:") and match in lines[0], err


def test_chat_takes_the_method_flags(capsys, models, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("the cat\nthe dog\n"))
    code, out, err = run(capsys, "chat", "--model", models["target"], "--speculative", models["draft"],
                         "--max-new-tokens", "8", "--seed", "1", "--json")
    assert code == 0, err
    turns = json.loads(out)["turns"]
    assert len(turns) == 2 and all(t["tokens"] <= 8 for t in turns)
