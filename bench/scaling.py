"""Scaling laws on WikiText-2: a grid of tiny GPT-2-style transformers (5 sizes × 3 token budgets by
default), the Chinchilla fit L(N, D) = E + A/N^α + B/D^β on 12 runs predicting the 3 runs of largest
compute, and the compute-optimal N and D for a budget.

The grid trains with ``lmlab.train.scaling.run_grid`` (the one trainer; a BPE tokenizer of 2,048 ids
trained on the training split) into ``--out``; a rerun with the same ``--out`` skips finished runs. The
fit is ``lmlab.eval.scaling_law.fit_runs`` (Hoffmann et al. 2022 Approach 3: a vectorised L-BFGS from
each of the paper's 4,500 initialisations, the best finished by scipy's L-BFGS-B). Its peer, measured in
the same run: scipy's L-BFGS-B started from every one of the 4,500 initialisations (the paper's recipe
done literally) — the best objective must match; the times are compared. Writes the PNG (``--png``) and
prints one JSON object last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab.cli.scaling import counts, sizes  # noqa: E402
from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import dataset_corpus  # noqa: E402
from lmlab.eval.scaling_law import (  # noqa: E402
    CHINCHILLA,
    CHINCHILLA_INITS,
    fit_runs,
    huber_objective,
    plot_law,
)
from lmlab.tokenizers import load  # noqa: E402
from lmlab.tokenizers.trainers import train_tokenizer  # noqa: E402
from lmlab.train.scaling import GridSettings, grid, read_results, run_grid  # noqa: E402


def cpu_seconds(run_dir: Path, steps: int) -> float:
    """A run's training CPU time: mean logged CPU time per step × steps (every process of a resumed run)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["cpu_ms_per_step"] for r in records if "cpu_ms_per_step" in r]
    return sum(times) / len(times) * steps / 1000 if times else 0.0


def scipy_every_start(fitted: list[dict]) -> tuple[float, float]:
    """(best objective, seconds) of scipy's L-BFGS-B run from every point of the paper's grid."""
    from scipy.optimize import minimize

    n, d, loss = ([r[k] for r in fitted] for k in ("params", "tokens", "loss"))
    g = CHINCHILLA_INITS
    began, best = time.perf_counter(), float("inf")
    for start in itertools.product(g["a"], g["b"], g["e"], g["alpha"], g["beta"]):
        result = minimize(huber_objective, np.array(start), args=(n, d, loss), jac=True, method="L-BFGS-B",
                          options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12})
        best = min(best, float(result.fun))
    return best, time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="runs directory (default: a new temporary directory)")
    p.add_argument("--data", default="wikitext-2", help="a data set with train and valid splits (wikitext-2, ptb)")
    p.add_argument("--sizes", type=sizes, default="32x2,48x2,64x3,96x3,128x4")
    p.add_argument("--tokens", type=lambda text: counts(text, "--tokens"), default="250k,500k,1M")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--holdout", type=int, default=3)
    p.add_argument("--budget", type=float, default=1e15, help="FLOPs for the compute-optimal prediction")
    p.add_argument("--png", default=None, help="the plot (default OUT/scaling_fit.png)")
    p.add_argument("--no-peer", action="store_true", help="skip scipy's L-BFGS-B from every start")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    set_quiet(True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    train, valid = dataset_corpus(args.data, "train"), dataset_corpus(args.data, "valid")
    began = time.perf_counter()
    tokenizer = load(out) if (out / "tokenizer.json").exists() else train_tokenizer("bpe", train, args.vocab_size)
    tokenizer_s = time.perf_counter() - began
    runs = grid(args.sizes, args.tokens)
    began = time.perf_counter()
    run_grid(out, runs, tokenizer, train, valid, GridSettings(data=args.data, tokenizer_label=f"bpe:{args.vocab_size}"))
    grid_s = time.perf_counter() - began
    names = {r.name for r in runs}
    results = [r for r in read_results(out) if r["name"] in names]
    began = time.perf_counter()
    report = fit_runs(results, holdout=args.holdout, budget=args.budget)
    fit_s = time.perf_counter() - began
    png = plot_law(report, args.png or out / "scaling_fit.png")
    peer = {}
    if not args.no_peer:
        fitted = [r for r in results if r["name"] in {x["name"] for x in report["fitted"]}]
        best, seconds = scipy_every_start(fitted)
        peer = {"scipy_every_start_objective": best, "scipy_every_start_s": round(seconds, 2),
                "lmlab_objective": report["objective"], "objective_ratio": report["objective"] / best,
                "fit_time_ratio_vs_scipy": round(fit_s / seconds, 3)}
    rows = [{k: r[k] for k in ("name", "params", "params_total", "tokens", "compute", "loss", "epochs")}
            | {"cpu_s": round(cpu_seconds(out / r["name"], r["steps"]), 1), "wall_s": r["seconds"]} for r in results]
    print(json.dumps({"bench": "scaling", "data": args.data, "vocab_size": tokenizer.vocab_size, "runs_dir": str(out),
                      "png": png, "threads": args.threads, "load": [round(x, 2) for x in os.getloadavg()],
                      "runs": rows, "grid_cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
                      "grid_wall_s_this_process": round(grid_s, 1), "tokenizer_s": round(tokenizer_s, 1),
                      "fit": {k: report[k] for k in ("E", "A", "B", "alpha", "beta")}, "chinchilla": CHINCHILLA,
                      "params_convention": report["params_convention"], "runs_fitted": report["runs_fitted"],
                      "heldout_error": report["heldout_error"], "heldout_max_error": report["heldout_max_error"],
                      "heldout_relative_error": report["heldout_relative_error"], "heldout": report["heldout"],
                      "fit_rms_error": report["fit_rms_error"], "optimum": report.get("optimum"),
                      "fit_s": round(fit_s, 2), "initialisations": report["initialisations"],
                      "reached_best": report["reached_best"], **peer}))


if __name__ == "__main__":
    main()
