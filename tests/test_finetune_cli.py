"""``lmlab finetune``, ``lmlab adapters`` and ``--adapter`` through the CLI, on a tiny transformer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sft_tiny import rows, save_tiny, write_jsonl

from lmlab.cli import main
from lmlab.models import load_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    base = save_tiny(root / "base")
    data = write_jsonl(root / "data.jsonl", rows(48))
    return root, base, data


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def finetune(setup, capsys, method: str, *extra: str) -> dict:
    root, base, data = setup
    return run_json(capsys, "finetune", "--model", str(base), "--method", method, "--data", str(data),
                    "--eval-rows", "8", "--steps", "12", "--batch-size", "4", "--max-seq-len", "48",
                    "--out", str(root / method), *extra)


def test_lora_result_has_the_documented_fields_and_learns(setup, capsys, no_progress):
    r = finetune(setup, capsys, "lora", "--lr", "1e-2")
    for key in ("trainable_params", "tokens_per_s", "peak_memory_bytes", "eval_loss_before", "eval_loss_after"):
        assert key in r
    # r=8 on q/k/v/o (32→32, 32→16) and gate/up (32→64), down (64→32), 2 layers: 8·(in+out) each
    per_layer = 8 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 2 + (64 + 32))
    assert r["trainable_params"] == 2 * per_layer
    assert r["eval_loss_after"] < r["eval_loss_before"]
    assert r["tokens_per_s"] > 0 and r["peak_memory_bytes"] > 0
    assert set(r["predicted_memory_bytes"]) == {"weights", "gradients", "optimizer_states", "activations", "total"}
    out = setup[0] / "lora"
    assert (out / "adapter_model.safetensors").is_file() and (out / "finetune.json").is_file()
    assert not (out / "run" / "checkpoints").exists()  # the adapter is the result, not a copy of the base


@pytest.mark.parametrize("method", ["qlora", "adapter", "prefix", "prompt", "ia3", "bitfit", "full"])
def test_every_method_trains_and_saves(setup, capsys, no_progress, method):
    r = finetune(setup, capsys, method, "--steps", "3")
    assert r["method"] == method and r["steps"] == 3 and r["trainable_params"] > 0
    # three steps already lower the held-out loss of every method (ia3 least: by about 2e-4)
    assert math.isfinite(r["eval_loss_before"]) and math.isfinite(r["eval_loss_after"])
    assert r["eval_loss_after"] < r["eval_loss_before"]


def test_dry_run_predicts_memory_without_training(setup, capsys):
    root, base, data = setup
    r = run_json(capsys, "finetune", "--model", str(base), "--method", "full", "--data", str(data), "--dry-run")
    assert r["dry_run"] and "eval_loss_after" not in r
    mem = r["predicted_memory_bytes"]
    assert mem["gradients"] == 4 * r["trainable_params"]  # float32, every parameter trains
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")


def test_adapter_is_used_by_generate_and_merges(setup, capsys, no_progress):
    root, base, _ = setup
    if not (root / "lora" / "adapter_config.json").exists():
        finetune(setup, capsys, "lora", "--lr", "1e-2")
    argv = ("generate", "--model", str(base), "--prompt", "what is c?", "--chat", "--greedy", "--max-new-tokens", "6")
    plain = run_json(capsys, *argv)
    tuned = run_json(capsys, *argv, "--adapter", str(root / "lora"))
    assert tuned["tokens"] != plain["tokens"]
    merged = run_json(capsys, "adapters", "merge", "--model", str(base), "--adapter", str(root / "lora"),
                      "--out", str(root / "merged"))
    assert merged["method"] == "lora"
    again = run_json(capsys, "generate", "--model", str(root / "merged"), "--prompt", "what is c?", "--chat",
                     "--greedy", "--max-new-tokens", "6")
    assert again["tokens"] == tuned["tokens"]  # the chat template travelled with the merged model
    listed = run_json(capsys, "adapters", "list", str(root))
    assert {"lora"} <= {a["method"] for a in listed["adapters"]}


def test_merged_full_model_equals_adapter(setup, capsys, no_progress):
    root, base, _ = setup
    if not (root / "full" / "adapter_config.json").exists():
        finetune(setup, capsys, "full", "--steps", "3")
    run_json(capsys, "adapters", "merge", "--model", str(base), "--adapter", str(root / "full"),
             "--out", str(root / "merged_full"))
    from lmlab.peft import load_adapter

    tuned, _ = load_model(base)
    load_adapter(tuned, root / "full")
    merged, _ = load_model(root / "merged_full")
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(tuned(ids)[0], merged(ids)[0])


def error_of(capsys, *argv: str) -> str:
    assert main(list(argv)) == 1
    return capsys.readouterr().err


def test_bad_inputs_get_one_clear_message(setup, capsys, tmp_path):
    root, base, data = setup
    common = ("finetune", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "o"), "--steps", "1")
    err = error_of(capsys, *common, "--method", "lora", "--targets", "no_such_layer")
    assert "'no_such_layer' matched no module" in err and "blocks.<i>.attn.q_proj" in err
    bad = write_jsonl(tmp_path / "bad.jsonl", rows(3) + [{"messages": [{"role": "user", "content": "hi"}]}])
    err = error_of(capsys, "finetune", "--model", str(base), "--method", "lora", "--data", str(bad),
                   "--out", str(tmp_path / "o"))
    assert "bad.jsonl:4 has no assistant turn" in err
    other = save_tiny(tmp_path / "other", seed=1)
    if not (root / "lora" / "adapter_config.json").exists():
        finetune(setup, capsys, "lora", "--steps", "2")
    err = error_of(capsys, "generate", "--model", str(other), "--adapter", str(root / "lora"), "--prompt", "x")
    assert "trained on another base model" in err
    if not (root / "prefix" / "adapter_config.json").exists():
        finetune(setup, capsys, "prefix", "--steps", "1")
    err = error_of(capsys, "adapters", "merge", "--model", str(base), "--adapter", str(root / "prefix"),
                   "--out", str(tmp_path / "m"))
    assert "a prefix adapter cannot be merged" in err
    err = error_of(capsys, "finetune", "--model", str(base), "--method", "lora", "--data", str(data))
    assert "--out" in err and "Traceback" not in err
