"""Scaling laws: the Chinchilla fit recovers a known law, the closed-form optimum is the minimum, bad grids
are refused, and ``lmlab scaling run|fit|predict`` trains, resumes and fits (lmlab.train.scaling,
lmlab.eval.scaling_law)."""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import pytest
from scipy.optimize import check_grad, minimize, minimize_scalar
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.cli import main
from lmlab.core.errors import DataError
from lmlab.core.io import write_json
from lmlab.eval.scaling_law import (
    CHINCHILLA,
    ScalingLaw,
    batched_lbfgs,
    check_points,
    fit_law,
    fit_runs,
    huber_objective,
)

LAW = ScalingLaw(**CHINCHILLA)
SIZES = [1e7, 3e7, 1e8, 3e8, 1e9]
BUDGETS = [1e9, 1e10, 1e11]


def law_runs(noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Fifteen runs whose losses follow the Chinchilla law, times exp(noise · N(0, 1))."""
    rng = np.random.default_rng(seed)
    return [{"name": f"n{n:.0e}-d{d:.0e}", "params": n, "tokens": d,
             "loss": float(LAW.loss(n, d)) * math.exp(noise * rng.standard_normal())}
            for n, d in itertools.product(SIZES, BUDGETS)]


def test_the_fit_recovers_a_noise_free_law_exactly():
    runs = law_runs()
    small_grid = {"alpha": (0.0, 1.0), "beta": (0.0, 1.0), "e": (-1.0, 1.0), "a": (0.0, 10.0), "b": (0.0, 10.0)}
    fit = fit_law([r["params"] for r in runs], [r["tokens"] for r in runs], [r["loss"] for r in runs],
                  inits=small_grid)
    assert fit.initialisations == 32 and fit.objective < 1e-18
    for key, value in CHINCHILLA.items():
        assert getattr(fit.law, key) == pytest.approx(value, rel=1e-5), key


def test_the_objective_gradient_and_the_batched_lbfgs_agree_with_scipy():
    runs = law_runs(noise=0.01)
    n, d, loss = ([r[k] for r in runs] for k in ("params", "tokens", "loss"))
    rng = np.random.default_rng(1)
    for theta in rng.uniform([2, 2, -0.5, 0.1, 0.1], [8, 8, 1.0, 0.6, 0.6], size=(5, 5)):
        assert check_grad(lambda t: huber_objective(t, n, d, loss)[0], lambda t: huber_objective(t, n, d, loss)[1],
                          theta) < 1e-6 * max(1.0, np.abs(huber_objective(theta, n, d, loss)[1]).max())
    starts = rng.uniform([0, 0, -1, 0, 0], [25, 25, 1, 2, 2], size=(12, 5))
    scipy_best = min(minimize(huber_objective, s, args=(n, d, loss), jac=True, method="L-BFGS-B",
                              options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12}).fun for s in starts)
    _, values = batched_lbfgs(lambda t: huber_objective(t, n, d, loss), starts)
    assert np.nanmin(values) == pytest.approx(scipy_best, rel=1e-6)


def test_fit_cli_recovers_a_noisy_law_and_predicts_held_out_runs(tmp_path, capsys):
    for run in law_runs(noise=0.002):
        write_json(tmp_path / run["name"] / "result.json", run)
    assert main(["scaling", "fit", str(tmp_path), "--budget", "1e21", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs_fitted"] == 12 and report["runs_heldout"] == 3
    assert {r["name"] for r in report["heldout"]} == {"n3e+08-d1e+11", "n1e+09-d1e+10", "n1e+09-d1e+11"}
    for key in ("E", "alpha", "beta"):
        assert report[key] == pytest.approx(CHINCHILLA[key], rel=0.1), key
    for key in ("A", "B"):
        assert report[key] == pytest.approx(CHINCHILLA[key], rel=0.5), key
    assert report["heldout_error"] < 0.05
    assert (tmp_path / "fit.json").exists() and (tmp_path / "scaling_fit.png").read_bytes()[:4] == b"\x89PNG"
    fitted = ScalingLaw(**{k: report[k] for k in CHINCHILLA})
    assert report["optimum"]["params"] == pytest.approx(fitted.optimum(1e21)[0], rel=1e-12)
    assert main(["scaling", "predict", str(tmp_path), "--params", "1e9", "--tokens", "2e10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(float(fitted.loss(1e9, 2e10)), rel=1e-12)


def test_the_closed_form_optimum_is_the_minimum_at_fixed_compute():
    symmetric = ScalingLaw(E=1.0, A=50.0, B=50.0, alpha=0.5, beta=0.5)
    assert symmetric.optimum(6e12) == pytest.approx((1e6, 1e6), rel=1e-12)  # G = 1, N = D = √(C/6)
    for compute in (1e15, 1e18, 1e21, 1e24):
        n_opt, d_opt = LAW.optimum(compute)
        assert 6 * n_opt * d_opt == pytest.approx(compute, rel=1e-12)
        best = minimize_scalar(lambda log_n, c=compute: float(LAW.loss(math.exp(log_n), c / (6 * math.exp(log_n)))),
                               bounds=(0, 60), method="bounded", options={"xatol": 1e-10})
        assert math.exp(best.x) == pytest.approx(n_opt, rel=1e-4)
    # N_opt ∝ C^(β/(α+β)): Hoffmann et al.'s a = 0.28 / 0.62
    ratio = LAW.optimum(1e22)[0] / LAW.optimum(1e21)[0]
    assert ratio == pytest.approx(10 ** (0.28 / 0.62), rel=1e-12)


def test_grids_too_small_to_fit_and_bad_losses_are_refused(tmp_path):
    runs = law_runs()[:7]
    with pytest.raises(DataError, match=r"5 parameters .* only 4 run\(s\) are left .*\(7 finished, 3 held out\).*at least 8"):
        fit_runs(runs, holdout=3)
    with pytest.raises(DataError, match=r"5 parameters .* only 4 run\(s\)"):
        check_points([1e6, 2e6, 3e6, 4e6], [1e8, 1e9, 1e8, 1e9], [3.0, 2.9, 2.8, 2.7])
    with pytest.raises(DataError, match="1 model size"):
        check_points([1e6] * 6, [1e8, 2e8, 3e8, 4e8, 5e8, 6e8], [3, 2.9, 2.8, 2.7, 2.6, 2.5])
    broken = law_runs()
    broken[4]["loss"] = math.nan
    with pytest.raises(DataError, match=re.escape(broken[4]["name"]) + " have no finite loss .*lower learning rate"):
        fit_runs(broken)
    assert main(["scaling", "fit", str(tmp_path)]) == 1  # no finished runs


def test_no_finished_runs_message(tmp_path):
    from lmlab.train.scaling import read_results

    with pytest.raises(DataError, match="holds no finished scaling runs .*lmlab scaling run"):
        read_results(tmp_path)


def test_non_embedding_parameters_are_counted_by_hand():
    from lmlab.tokenizers import WordLevelTokenizer
    from lmlab.train import build_model
    from lmlab.train.scaling import parameter_counts

    tokenizer = WordLevelTokenizer("char").train(["abcdefgh"])
    d, layers = 32, 3
    model = build_model("gpt2", {"d_model": d, "n_layers": layers, "n_heads": 2, "context_length": 16}, tokenizer)
    counts = parameter_counts(model)
    # per block: qkv 3d²+3d, out d²+d, MLP 8d²+5d, two layer norms 4d; then the final norm 2d
    assert counts["non_embedding"] == layers * (12 * d * d + 13 * d) + 2 * d
    assert counts["total"] == counts["non_embedding"] + tokenizer.vocab_size * d + 16 * d  # tied head


def test_cli_grid_writes_runs_and_resumes(tmp_path, capsys, monkeypatch):
    text = "the cat sat on the mat . the dog sat on the log .\n" * 40
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "valid.txt").write_text(text[:600])
    runs = tmp_path / "runs"
    argv = ["scaling", "run", "--out", str(runs), "--train", str(tmp_path / "train.txt"), "--valid",
            str(tmp_path / "valid.txt"), "--sizes", "16x1", "--tokens", "512,1k", "--tokenizer", "char",
            "--context", "16", "--batch-size", "4", "--eval-tokens", "200", "--quiet", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in first["runs"]] == ["d16-l1-512", "d16-l1-1k"] and first["skipped"] == 0
    for r in first["runs"]:
        saved = json.loads((runs / r["name"] / "result.json").read_text())
        assert saved["tokens"] == r["steps"] * 4 * 16 and saved["compute"] == 6 * saved["params"] * saved["tokens"]
        assert math.isfinite(saved["loss"]) and not (runs / r["name"] / "checkpoints").exists()
    import lmlab.train.scaling as scaling

    monkeypatch.setattr(scaling, "train_run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert main([a for a in argv if a not in ("char", "--tokenizer")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == 2 and again["runs"] == first["runs"]
    assert main([a if a != "16" else "32" for a in argv if a not in ("char", "--tokenizer")]) == 1
    assert "other settings (context: 16 there, 32 now)" in capsys.readouterr().err
