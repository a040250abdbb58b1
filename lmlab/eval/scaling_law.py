"""The Chinchilla scaling law L(N, D) = E + A/N^α + B/D^β: fit, held-out check, compute-optimal split.

Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", Approach 3: the five
parameters are fitted by minimising the Huber loss (δ = 10⁻³) of the residuals between the
predicted and the observed *log* loss, with the prediction written as a log-sum-exp of
``log A − α log N``, ``log B − β log D`` and ``log E`` (so A, B and E stay positive), by L-BFGS
started from every point of the paper's grid of initialisations; the best local minimum wins.
Besiroglu et al. (2024, "Chinchilla Scaling: A replication attempt") found the paper's own fit
stopped early, so the optimiser here runs to tight tolerances.

Under C ≈ 6ND the loss-minimising split of a compute budget C has a closed form (the paper's
eq. 4): N_opt = G (C/6)^(β/(α+β)), D_opt = G⁻¹ (C/6)^(α/(α+β)), G = (αA / (βB))^(1/(α+β)).

Everything here is numbers in, numbers out (numpy and scipy's L-BFGS-B); the runs that give the
numbers come from ``lmlab.train.scaling``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..core.errors import DataError
from ..core.plotting import pyplot
from ..core.validate import check_number

#: the exponents Hoffmann et al. (2022) report for Approach 3, for comparison
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
HUBER_DELTA = 1e-3
#: the paper's grid of initialisations: α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}
CHINCHILLA_INITS = {"alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
                    "e": (-1.0, -0.5, 0.0, 0.5, 1.0), "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)}
N_PARAMETERS = 5  # E, A, B, α, β
EXPLORE_ITERATIONS = 200  # L-BFGS iterations of every start before the best are polished
POLISHED = 8  # the best starts scipy's L-BFGS-B then runs to convergence
NEAR_BEST = 0.01  # a start "reached the best" when its explored objective is within 1 % of the final one


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A/N^α + B/D^β (N parameters, D training tokens, L loss in nats per token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params, tokens) -> np.ndarray:
        """Predicted loss at ``params`` N and ``tokens`` D (scalars or arrays, broadcast)."""
        n, d = np.asarray(params, dtype=float), np.asarray(tokens, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def optimum(self, compute: float) -> tuple[float, float]:
        """(N_opt, D_opt) minimising the loss at compute C = 6ND (Hoffmann et al. 2022, eq. 4)."""
        check_number("compute", compute, low=0.0, low_inclusive=False)
        if self.alpha <= 0 or self.beta <= 0:
            raise DataError(f"the fitted law has a non-positive exponent (α = {self.alpha:.3g}, β = {self.beta:.3g}), "
                            "so no finite compute-optimal split exists",
                            "train a grid whose loss falls with both parameters and tokens")
        total = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / total)
        return g * (compute / 6) ** (self.beta / total), (compute / 6) ** (self.alpha / total) / g

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class LawFit:
    """A fitted law, the Huber objective it reached, and how many initialisations ended within
    ``NEAR_BEST`` of it (many: the minimum is easy to find; one: treat the fit with suspicion)."""

    law: ScalingLaw
    objective: float
    runs: int
    initialisations: int
    reached_best: int


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
               delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Σ Huber_δ(LSE(a − α log N, b − β log D, e) − log L) and its gradient, for each row of θ [K, 5] =
    (a, b, e, α, β): K fits evaluated at once (values [K], gradients [K, 5])."""
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(N_PARAMETERS))
    terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))  # [3, K, runs]
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    total = weights.sum(axis=0)
    r = top + np.log(total) - log_l
    weights /= total
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)
    slope = np.where(small, r, delta * np.sign(r))
    grad = np.stack([(slope * weights[0]).sum(axis=1), (slope * weights[1]).sum(axis=1),
                     (slope * weights[2]).sum(axis=1), -(slope * weights[0] * log_n).sum(axis=1),
                     -(slope * weights[1] * log_d).sum(axis=1)], axis=1)
    return value, grad


def batched_lbfgs(fun, x0: np.ndarray, *, memory: int = 10, max_iter: int = 2000, gtol: float = 1e-12,
                  ftol: float = 1e-15) -> tuple[np.ndarray, np.ndarray]:
    """Minimise K independent problems at once: ``fun(x [K, P]) -> (values [K], gradients [K, P])``.

    L-BFGS (Nocedal & Wright 2006, Algorithm 7.4: the two-loop recursion with ``memory`` pairs and the
    initial scaling sᵀy / yᵀy) with a backtracking Armijo line search, row by row but vectorised, so the
    4,500 starts of the Chinchilla grid cost a few hundred array evaluations rather than 4,500 scipy calls.
    A row stops when its largest gradient entry is below ``gtol`` or its value falls by less than
    ``ftol`` × max(|f|, 1) (scipy's L-BFGS-B tests); returns (x [K, P], values [K])."""
    x = np.array(x0, dtype=float)
    k, p = x.shape
    f, g = fun(x)
    s_hist, y_hist, rho = np.zeros((memory, k, p)), np.zeros((memory, k, p)), np.zeros((memory, k))
    gamma = np.ones(k)
    active = np.flatnonzero(np.isfinite(f) & (np.abs(g).max(axis=1) > gtol))
    for it in range(max_iter):
        if not len(active):
            break
        xa, fa, ga = x[active], f[active], g[active]
        sa, ya, ra = s_hist[:, active], y_hist[:, active], rho[:, active]
        q = ga.copy()
        alphas = np.zeros((memory, len(active)))
        for j in (it - np.arange(memory)) % memory:  # newest pair first (slot it)
            alphas[j] = ra[j] * np.einsum("kp,kp->k", sa[j], q)
            q -= alphas[j][:, None] * ya[j]
        direction = gamma[active, None] * q
        for j in (it - np.arange(memory)[::-1]) % memory:  # oldest pair first
            beta = ra[j] * np.einsum("kp,kp->k", ya[j], direction)
            direction += sa[j] * (alphas[j] - beta)[:, None]
        direction = -direction
        slope = np.einsum("kp,kp->k", ga, direction)
        uphill = slope >= 0
        direction[uphill], slope[uphill] = -ga[uphill], -np.einsum("kp,kp->k", ga[uphill], ga[uphill])
        step = np.full(len(active), 1.0) if it else 1.0 / np.maximum(np.abs(ga).max(axis=1), 1e-300)
        pending, f_new, g_new = np.ones(len(active), bool), fa.copy(), ga.copy()
        for _ in range(60):  # backtracking until the Armijo condition holds
            rows = np.flatnonzero(pending)
            if not len(rows):
                break
            value, grad = fun(xa[rows] + step[rows, None] * direction[rows])
            ok = np.isfinite(value) & (value <= fa[rows] + 1e-4 * step[rows] * slope[rows])
            f_new[rows[ok]], g_new[rows[ok]] = value[ok], grad[ok]
            pending[rows[ok]] = False
            step[rows[~ok]] *= 0.5
        moved = ~pending  # a row no step lowered is at its minimum to machine precision
        s_vec = np.where(moved[:, None], step[:, None] * direction, 0.0)
        y_vec = g_new - ga
        sy, yy = np.einsum("kp,kp->k", s_vec, y_vec), np.einsum("kp,kp->k", y_vec, y_vec)
        curved = moved & (sy > 1e-300) & (yy > 1e-300)
        slot = (it + 1) % memory  # the newest pair of the next iteration, over the oldest
        s_hist[slot, active] = np.where(curved[:, None], s_vec, 0.0)
        y_hist[slot, active] = np.where(curved[:, None], y_vec, 0.0)
        rho[slot, active] = np.where(curved, 1.0 / np.where(curved, sy, 1.0), 0.0)
        gamma[active] = np.where(curved, sy / np.where(curved, yy, 1.0), gamma[active])
        x[active], f[active], g[active] = xa + s_vec, f_new, g_new
        converged = (np.abs(g_new).max(axis=1) <= gtol) | (fa - f_new <= ftol * np.maximum(np.abs(f_new), 1.0))
        active = active[moved & ~converged]
    return x, f


def huber_objective(theta, params, tokens, losses, delta: float = HUBER_DELTA):
    """The fitted objective at θ = (log A, log B, log E, α, β) with its gradient: a float and [5] for one θ,
    [K] and [K, 5] for a batch θ [K, 5]."""
    theta = np.asarray(theta, dtype=float)
    value, grad = _objective(np.atleast_2d(theta), np.log(np.asarray(params, dtype=float)),
                             np.log(np.asarray(tokens, dtype=float)), np.log(np.asarray(losses, dtype=float)), delta)
    return (float(value[0]), grad[0]) if theta.ndim == 1 else (value, grad)


def check_finite(losses, names: Sequence[str]) -> None:
    """Refuse NaN or infinite losses (a diverged run), naming the runs and the fix."""
    bad = [name for name, loss in zip(names, losses, strict=True) if not math.isfinite(float(loss))]
    if bad:
        raise DataError(f"run(s) {', '.join(bad)} have no finite loss (NaN or infinite: training diverged)",
                        "retrain them with a lower learning rate (delete their run directories and rerun "
                        "`lmlab scaling run`), or remove them from the runs directory")


def check_points(params, tokens, losses, names: Sequence[str] | None = None) -> tuple[np.ndarray, ...]:
    """The (N, D, L) arrays, refused with the fix when they cannot be fitted: fewer points than the law's
    five parameters, one size or one token budget only, non-finite or non-positive values."""
    n, d, loss = (np.asarray(x, dtype=float).ravel() for x in (params, tokens, losses))
    if not len(n) == len(d) == len(loss):
        raise DataError(f"{len(n)} parameter counts, {len(d)} token counts and {len(loss)} losses do not pair up",
                        "give one N, D and loss per run")
    labels = list(names) if names is not None else [f"point {i}" for i in range(len(n))]
    check_finite(loss, labels)
    bad = [labels[i] for i in range(len(n)) if not (n[i] > 0 and d[i] > 0 and loss[i] > 0 and np.isfinite(n[i] * d[i]))]
    if bad:
        raise DataError(f"run(s) {', '.join(bad)} have a parameter count, token count or loss that is not positive",
                        "the law is fitted in log space: every N, D and loss must be > 0")
    if len(n) < N_PARAMETERS:
        raise DataError(f"the scaling law has {N_PARAMETERS} parameters (E, A, B, alpha, beta) but only {len(n)} "
                        f"run(s) to fit it", f"train at least {N_PARAMETERS} runs for the fit (more sizes or token "
                        "budgets in the grid), or hold fewer out")
    if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
        raise DataError(f"the fitted runs have {len(np.unique(n))} model size(s) and {len(np.unique(d))} token "
                        "budget(s); A/N^alpha and B/D^beta each need at least two",
                        "train the grid over several sizes and several token budgets")
    return n, d, loss


def fit_law(params, tokens, losses, *, delta: float = HUBER_DELTA, inits: dict | None = None,
            names: Sequence[str] | None = None) -> LawFit:
    """Fit L = E + A/N^α + B/D^β to runs of ``params`` N, ``tokens`` D and ``losses`` L (Approach 3 of
    Hoffmann et al. 2022): L-BFGS from every combination of ``inits`` (default the paper's grid)."""
    from scipy.optimize import minimize

    n, d, loss = check_points(params, tokens, losses, names)
    check_number("delta", delta, low=0.0, low_inclusive=False)
    grid = CHINCHILLA_INITS if inits is None else inits
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    starts = list(itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"]))
    x, values = batched_lbfgs(lambda theta: _objective(theta, log_n, log_d, log_l, delta), np.array(starts),
                              max_iter=EXPLORE_ITERATIONS)
    finite = np.flatnonzero(np.isfinite(values))
    ends = []
    for row in finite[np.argsort(values[finite])[:POLISHED]]:  # scipy runs the best starts to convergence
        result = minimize(huber_objective, x[row], args=(n, d, loss, delta), jac=True, method="L-BFGS-B",
                          options={"maxiter": 10000, "ftol": 1e-15, "gtol": 1e-12})
        ends.append((float(result.fun), result.x) if result.fun <= values[row] else (float(values[row]), x[row]))
    best_value, best = min(ends, key=lambda end: end[0])
    reached = int((values[finite] <= best_value * (1 + NEAR_BEST) + 1e-300).sum())
    a, b, e, alpha, beta = (float(x) for x in best)
    law = ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)
    return LawFit(law=law, objective=best_value, runs=len(n), initialisations=len(starts), reached_best=reached)


def split_heldout(results: list[dict], holdout: int | Sequence[str] = 3) -> tuple[list[dict], list[dict]]:
    """(fitted runs, held-out runs): ``holdout`` is how many runs of the largest compute to hold out — the
    extrapolation a scaling law is for — or the names of the runs to hold out."""
    if isinstance(holdout, int):
        check_number("holdout", holdout, low=0, integer=True)
        order = sorted(results, key=lambda r: (r["params"] * r["tokens"], r["name"]))
        cut = len(order) - holdout
        return order[:max(cut, 0)], order[max(cut, 0):]
    names = {r["name"] for r in results}
    unknown = sorted(set(holdout) - names)
    if unknown:
        raise DataError(f"no finished run named {', '.join(unknown)} to hold out",
                        f"finished runs: {', '.join(sorted(names))}")
    return [r for r in results if r["name"] not in holdout], [r for r in results if r["name"] in holdout]


def optimum_report(law: ScalingLaw, compute: float) -> dict[str, float]:
    """The compute-optimal split of ``compute`` FLOPs under ``law``, with the loss it predicts."""
    n_opt, d_opt = law.optimum(compute)
    return {"compute": compute, "params": n_opt, "tokens": d_opt, "tokens_per_param": d_opt / n_opt,
            "loss": float(law.loss(n_opt, d_opt))}


def fit_runs(results: list[dict], *, holdout: int | Sequence[str] = 3, budget: float | None = None,
             inits: dict | None = None) -> dict:
    """Fit the law on the runs not held out, predict the held-out runs' losses, and (with ``budget``) the
    compute-optimal N and D; everything as one JSON-ready report (``heldout_error`` is the mean absolute
    error of the held-out predictions, nats per token)."""
    check_finite([r["loss"] for r in results], [r["name"] for r in results])
    fitted, held = split_heldout(results, holdout)
    if len(fitted) < N_PARAMETERS:
        raise DataError(f"the scaling law has {N_PARAMETERS} parameters (E, A, B, alpha, beta) but only "
                        f"{len(fitted)} run(s) are left to fit it ({len(results)} finished, {len(held)} held out)",
                        f"train at least {N_PARAMETERS + len(held)} runs (more sizes or token budgets in the grid), "
                        "or hold fewer out")
    fit = fit_law([r["params"] for r in fitted], [r["tokens"] for r in fitted], [r["loss"] for r in fitted],
                  inits=inits, names=[r["name"] for r in fitted])
    law = fit.law

    def row(r: dict) -> dict:
        predicted = float(law.loss(r["params"], r["tokens"]))
        return {"name": r["name"], "params": r["params"], "tokens": r["tokens"], "loss": r["loss"],
                "predicted": predicted, "error": predicted - r["loss"]}

    heldout_rows = [row(r) for r in held]
    fitted_rows = [row(r) for r in fitted]
    errors = np.array([abs(x["error"]) for x in heldout_rows])
    report = {**law.to_dict(), "heldout_error": float(errors.mean()) if len(errors) else None,
              "heldout_max_error": float(errors.max()) if len(errors) else None,
              "heldout_relative_error": float(np.mean([abs(x["error"]) / x["loss"] for x in heldout_rows]))
              if heldout_rows else None,
              "fit_rms_error": float(np.sqrt(np.mean([x["error"] ** 2 for x in fitted_rows]))),
              "runs_fitted": len(fitted), "runs_heldout": len(held), "heldout": heldout_rows, "fitted": fitted_rows,
              "objective": fit.objective, "initialisations": fit.initialisations, "reached_best": fit.reached_best,
              "params_convention": results[0].get("params_convention", "as recorded in the runs"),
              "chinchilla": CHINCHILLA, "method": "Hoffmann et al. 2022 Approach 3: Huber(delta=1e-3) on log "
              "loss, log-sum-exp form, L-BFGS from the paper's 4500-point grid of initialisations"}
    if budget is not None:
        report["optimum"] = optimum_report(law, budget)
    return report


def plot_law(report: dict, path, *, budgets: Sequence[float] | None = None) -> str:
    """A PNG of a ``fit_runs`` report: left, loss against tokens D for each model size N (fitted runs as
    dots, held-out runs as stars) with the fitted law's curves; right, iso-FLOP profiles — the predicted
    loss against N at fixed compute C = 6ND — with each profile's minimum and the compute-optimal
    frontier N_opt(C) through them. Returns the path."""
    from ..core.io import atomic_path

    plt = pyplot("the scaling-law plot")

    law = ScalingLaw(**{k: report[k] for k in ("E", "A", "B", "alpha", "beta")})
    runs = report["fitted"] + report["heldout"]
    held = {r["name"] for r in report["heldout"]}
    sizes = sorted({r["params"] for r in runs})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(sizes)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    d_all = np.array([r["tokens"] for r in runs], dtype=float)
    d_line = np.geomspace(d_all.min() / 1.5, d_all.max() * 1.5, 100)
    for size, colour in zip(sizes, colours, strict=True):
        left.plot(d_line, law.loss(size, d_line), color=colour, lw=1, label=f"N = {size:,.0f}")
        for r in (r for r in runs if r["params"] == size):
            out = r["name"] in held
            left.scatter(r["tokens"], r["loss"], color=colour, marker="*" if out else "o", s=120 if out else 30,
                         edgecolors="black" if out else "none", zorder=3)
    left.set(xscale="log", xlabel="training tokens D", ylabel="held-out loss (nats/token)",
             title=f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}"
                   + (f"\nstars: held out (mean |error| {report['heldout_error']:.3f})" if held else ""))
    left.legend(fontsize=8)
    compute = np.array([r["params"] * r["tokens"] * 6 for r in runs], dtype=float)
    budgets = np.asarray(budgets if budgets is not None else np.geomspace(compute.min(), compute.max() * 10, 6))
    frontier = []
    for c, colour in zip(budgets, plt.get_cmap("plasma")(np.linspace(0, 0.85, len(budgets))), strict=True):
        n_opt, d_opt = law.optimum(float(c))
        n_line = np.geomspace(n_opt / 30, n_opt * 30, 200)
        right.plot(n_line, law.loss(n_line, c / (6 * n_line)), color=colour, lw=1, label=f"C = {c:.2g}")
        right.scatter([n_opt], [law.loss(n_opt, d_opt)], color=colour, zorder=3)
        frontier.append((n_opt, float(law.loss(n_opt, d_opt))))
    right.plot(*zip(*frontier, strict=True), "k--", lw=1, label="compute-optimal N_opt(C)")
    right.set(xscale="log", xlabel="parameters N", ylabel="predicted loss (nats/token)",
              title=f"iso-FLOP profiles: N_opt ∝ C^{law.beta / (law.alpha + law.beta):.2f}, "
                    f"D_opt ∝ C^{law.alpha / (law.alpha + law.beta):.2f}")
    right.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return str(path)
