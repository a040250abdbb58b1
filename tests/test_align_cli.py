"""Every ``lmlab align`` verb end to end on a tiny chat model (seconds each), the adapter it leaves
used for generation, and exact resumption of a killed run (DPO, and PPO mid-rollout)."""

from __future__ import annotations

import json

import pytest
import torch
from align_tiny import hh_rows, preference_rows, prompt_rows, save_tiny_chat, write_jsonl
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.cli import main

QUICK = ["--steps", "3", "--json", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("align")
    return {"model": save_tiny_chat(d / "model"), "prefs": write_jsonl(d / "prefs.jsonl", preference_rows()),
            "hh": write_jsonl(d / "hh.jsonl", hh_rows()), "prompts": write_jsonl(d / "prompts.jsonl", prompt_rows())}


def _run(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("verb,extra", [
    ("reward", ["--data", "prefs"]), ("reward", ["--data", "hh", "--model", "minilm"]), ("dpo", ["--data", "hh"]), ("dpo", ["--data", "prefs", "--loss", "ipo"]),
    ("dpo", ["--data", "prefs", "--loss", "robust", "--label-smoothing", "0.1", "--reference", "precomputed"]),
    ("kto", ["--data", "prefs"]), ("simpo", ["--data", "prefs"]), ("orpo", ["--data", "prefs"]),
])
def test_preference_verbs(files, tmp_path, capsys, verb, extra):
    extra = [str(files[e]) if e in files else e for e in extra]
    out = tmp_path / "out"
    result = _run(capsys, ["align", verb, "--model", str(files["model"]), *extra, "--out", str(out), *QUICK])
    for key in ("eval_before", "eval_after", "tokens_per_s", "metric"):
        assert key in result
    assert 0.0 <= result["eval_after"] <= 1.0 and result["tokens_per_s"] > 0
    assert (out / "curves.png").stat().st_size > 1000 and (out / "run" / "metrics.jsonl").exists()
    assert (out / ("reward_model.json" if verb == "reward" else "adapter_config.json")).exists()
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    if verb == "reward":
        assert "ece" in result["calibration"] and "accuracy" in records[-1]
        assert result["length_baseline"]["rule"] in ("longer wins", "shorter wins")
    elif verb != "kto":
        assert "reward_accuracy" in records[-1]
    if verb == "dpo":
        assert result["before"]["reward_accuracy"] == 0.5  # policy == reference: every pair a tie
        assert result["after"]["kl_to_reference"] >= 0.0


@pytest.mark.parametrize("verb,extra", [
    ("grpo", ["--group-size", "4"]), ("grpo", ["--group-size", "4", "--process", "--aggregation", "constant"]),
    ("rloo", []), ("reinforce", ["--baseline", "learned"]), ("ppo", ["--minibatches", "2", "--epochs", "1"]),
])
def test_rl_verbs(files, tmp_path, capsys, verb, extra):
    out = tmp_path / "out"
    result = _run(capsys, ["align", verb, "--model", str(files["model"]), "--prompts", str(files["prompts"]),
                           "--eval-rows", "8", "--max-new-tokens", "5", "--reward", "number,format:0.5",
                           *extra, "--out", str(out), *QUICK])
    assert result["metric"] == "held-out mean number+0.5*format reward (greedy)"
    assert result["tokens_per_s"] > 0 and len(result["ms_per_step"]) == 3
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "reward" in records[0] and "entropy" in records[0] and "clip_fraction" in records[0]
    assert (out / "adapter_config.json").exists() and (out / "curves.png").stat().st_size > 1000
    if verb in ("grpo", "rloo"):
        assert "kl" in records[0]
    # the adapter is what chat / generate load
    assert main(["generate", "--model", str(files["model"]), "--adapter", str(out), "--prompt", "what",
                 "--max-new-tokens", "3", "--quiet"]) == 0


def test_bad_inputs_get_one_clear_line(files, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "hi", "chosen": "a"}] * 12)
    assert main(["align", "dpo", "--model", str(files["model"]), "--data", str(bad), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 1
    assert "has no 'rejected'" in capsys.readouterr().err
    for flags, message in ((["--group-size", "1"], "group of 1"), (["--kl-coef", "-0.5"], "--kl-coef = -0.5")):
        assert main(["align", "grpo", "--model", str(files["model"]), "--prompts", str(files["prompts"]),
                     "--eval-rows", "8", "--out", str(tmp_path / "o"), "--quiet", *flags]) == 1
        assert message in capsys.readouterr().err


class Killed(Exception):
    pass


def _kill_at(step):
    def on_step(s, loss):
        if s == step:
            raise Killed
    return on_step


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def _resume_case(kind, files):
    """(model, objective, source) built from scratch, as a fresh process would."""
    from lmlab.align import (
        Adapter,
        LengthReward,
        PolicyGradient,
        PolicyWithValue,
        PreferenceObjective,
        Reference,
        RLConfig,
        RolloutSchedule,
        encode_prompts,
        read_preferences,
        read_prompts,
    )
    from lmlab.align.preferences import ItemBatches, Truncation, encode_preferences, pair_batch
    from lmlab.generate.engine import rollout_generate
    from lmlab.models import load_model

    lm, tok = load_model(files["model"])
    torch.manual_seed(0)
    Adapter(rank=4).apply(lm)
    if kind == "dpo":
        pairs = encode_preferences(tok, read_preferences(files["prefs"]), Truncation(64, 32))
        source = ItemBatches(pairs, 3, lambda xs: pair_batch(xs, 0), seed=1)
        return lm, PreferenceObjective("sigmoid", reference=Reference(lm)), source
    config = RLConfig.preset("ppo", prompts_per_step=2, max_new_tokens=4, epochs=2, minibatches=2)
    prompts = encode_prompts(tok, read_prompts(files["prompts"]))
    objective = PolicyGradient(config, prompts=prompts, generate=rollout_generate(lm, tok), tokenizer=tok,
                               reward=LengthReward(target=2), reference=Reference(lm), stop_id=lm.eos_id, seed=3)
    return PolicyWithValue(lm), objective, RolloutSchedule(len(prompts), config, seed=3)


@pytest.mark.parametrize("kind", ["dpo", "ppo"])
def test_a_killed_run_resumes_exactly(files, tmp_path, kind, no_progress):
    from lmlab.train import TrainConfig, train

    # PPO: 4 optimizer steps per rollout batch, checkpoints every 3 — the kill lands mid-rollout
    config = TrainConfig(steps=8, checkpoint_every=3, lr=1e-2, device="cpu", warmup=0)
    train(*_resume_case(kind, files), config, tmp_path / "whole")
    with pytest.raises(Killed):
        train(*_resume_case(kind, files), config, tmp_path / "killed", on_step=_kill_at(5))
    train(*_resume_case(kind, files), config, tmp_path / "killed", resume=True)
    whole, resumed = _losses(tmp_path / "whole"), _losses(tmp_path / "killed")
    assert [s for s, _ in resumed] == list(range(1, 9))
    assert resumed == whole
    assert len({loss for _, loss in whole}) > 2  # the runs did train
