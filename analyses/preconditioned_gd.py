"""Do trained LSAs on anisotropic inputs implement preconditioned GD, GD++ or plain GD?
(issue 16, part 3; Ahn et al. 2023, von Oswald et al. 2023)

Usage:

    python analyses/preconditioned_gd.py [--quick] [--out DIR] [--workers 2]

The sweep (``analyses/sweeps/preconditioned_gd.json``, run with ``interp-icl sweep``) trains the
project's LSA (family `lsa`, full matrices, query excluded as a key) with 1, 2 and 3 layers, 3 seeds
each, on in-context linear regression with x ~ N(0, Σ), Σ of condition number 10 in a random
orthogonal basis (`task.x_condition`), d = 5, N = 20, w ~ N(0, I), no noise; Adam, batch 256 of
fresh tasks, lr 3e-3 with a cosine decay to 0, gradient clipping at 1; 8000 steps for 1 layer,
30,000 for 2 and 3 layers (the number of layers, steps and checkpoint spacing are one zip group).

Per depth L the theory (`interp_icl.theory.preconditioned_gd`) fits, on N_FIT fresh tasks in
float64, the best member of each family for the query targets ("optimal"): L plain GD steps (one
η), L preconditioned GD steps (Γ_1..Γ_L), L GD++ layers ((η_t, γ_t)); for L = 1 the PGD optimum
is the closed form Γ* = ((N+1)/N Σ + tr Σ/N I)⁻¹ (the fit is kept to check it). Ties between
families (GD++ is GD for L = 1) go to the first of GD, PGD, GD++. Per trained run, on N_EVAL other
fresh tasks:

* convergence: relative change of the held-out loss over the last 20 % of steps, and the loss
  gradient on N_GRAD fresh tasks at the end against its own sampling noise (`gradient_check`); a
  run counts as converged when the first is below LOSS_CHANGE_CONVERGED and the second below
  NOISE_RATIO_CONVERGED;
* stability of the answer: the checkpoint at 80 % of training against the same optima — is the
  closest family the same, and how much did the distance to it change;
* for each family: the relative L2 distance of the model's predictions from the family's optimum,
  the cosine of ∂ŷ/∂x_q with it, and the distance from the family member fitted to the model's own
  predictions (on the fit tasks);
* the learned key–query preconditioners Γ_l = −N (P W_V)[d, d] (W_Kᵀ W_Q)[:d, :d]ᵀ per layer:
  cosine with the optimal Γ_l (and Γ* for L = 1) and with I (plain GD's), and how strongly each
  layer also rewrites the x-slots (‖(P W_V)[:d, :d]‖ / |(P W_V)[d, d]|; GD++ does, PGD does not).

The verdict per depth: which family's optimum (no free parameters fitted to the model) is closest
to the model, and which family's member fitted to the model is closest.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study

from interp_icl import load_run
from interp_icl.runs import rundir
from interp_icl.seeding import generator
from interp_icl.theory import linear_regression_gd as lr
from interp_icl.theory import preconditioned_gd as pg
from interp_icl.viz.report import ReportPage

NAME = "preconditioned_gd"
FAMILIES = ("GD", "PGD", "GD++")
N_FIT, N_EVAL, N_GRAD = 16384, 8192, 16384
N_FIT_QUICK, N_EVAL_QUICK, N_GRAD_QUICK = 512, 512, 512
# --quick: L-BFGS iterations of the PGD and GD++ fits (the theory module's defaults are 500 and
# 200). Every fit keeps the best of its starts and its searches, and the starts hold the plain-GD
# member, so fewer iterations leave the families nested (PGD and GD++ fit no worse than GD).
FIT_ITERATIONS_QUICK = {"PGD": 50, "GD++": 20}
LAST_SHARE = 0.2  # convergence: relative loss change over this last share of the steps
LOSS_CHANGE_CONVERGED = 0.02  # |relative loss change| over the last LAST_SHARE below this ...
NOISE_RATIO_CONVERGED = 2.0  # ... and ‖∇‖ within this many times its sampling noise
QUICK = {"train.eval_every": 20, "train.n_eval": 256}
QUICK_AXES = {"model.n_layers": [1, 2], "train.steps": [60, 60], "train.checkpoint_every": [12, 12]}
QUICK_LAYERS = QUICK_AXES["model.n_layers"]


def task_sample(task, n: int, label: str) -> lr.RegressionSample:
    """`n` fresh tasks from the run's own task sampler (float64), independent of training."""
    tokens = task.sample(n, generator(12345, NAME, label)).tokens.double()
    x, y = tokens[:, :-1, :-1], tokens[:, :-1, -1]
    return lr.RegressionSample(x, y, tokens[:, -1, :-1], tokens[:, -1, -1], torch.empty(0))


def family_predict(family: str, params, x, y, x_q, layers: int) -> torch.Tensor:
    if family == "GD":
        return lr.gd_step_prediction(x, y, x_q, params, steps=layers)
    if family == "PGD":
        return pg.pgd_prediction(x, y, x_q, params)
    return pg.gdpp_prediction(x, y, x_q, params)


def fit_family(family: str, sample, targets, layers: int, quick: bool = False):
    """The family's parameters fitted to `targets` on `sample`: η, Γ [L, d, d] or [L, 2]
    (`quick`: FIT_ITERATIONS_QUICK L-BFGS iterations)."""
    x, y, x_q = sample.x, sample.y, sample.x_q
    iterations = {"iterations": FIT_ITERATIONS_QUICK[family]} if quick and family in FIT_ITERATIONS_QUICK else {}
    if family == "GD":
        return lr.fit_gd_lr(x, y, x_q, targets, steps=layers).eta
    if family == "PGD":
        return pg.fit_pgd(x, y, x_q, targets, steps=layers, **iterations).params
    return pg.fit_gdpp(x, y, x_q, targets, steps=layers, **iterations).params


def optima(task, layers: int, n_fit: int, quick: bool = False) -> dict:
    """Each family's best member for the query targets, fitted on fresh tasks (per depth). For
    one layer the PGD optimum is the closed form Γ* (exact for the population, where a fit carries
    sampling error); the fit is kept as "PGD fitted", to check the closed form against."""
    fit = task_sample(task, n_fit, "fit")
    best = {family: fit_family(family, fit, fit.y_q, layers, quick) for family in FAMILIES}
    if layers == 1:
        best["PGD fitted"] = best["PGD"]
        best["PGD"] = pg.optimal_preconditioner(task.x_covariance(), task.config.n_points, task.config.noise)[None]
    return best


def closest_family(distances: dict[str, float], tolerance: float = 1e-6) -> str:
    """The family with the smallest distance; families within `tolerance` (relative) of it count
    as tied and the first in FAMILIES order wins (for one layer GD++ is GD: their tie reads GD)."""
    smallest = min(distances.values())
    return next(f for f in FAMILIES if distances[f] <= smallest * (1 + tolerance))


def convergence(run_dir: Path) -> dict:
    metrics = pd.DataFrame(rundir.read_metrics(run_dir)).dropna(subset=["eval_loss"])
    metrics = metrics[metrics["step"] > 0]
    last = int(metrics["step"].max())
    start = metrics[metrics["step"] >= (1 - LAST_SHARE) * last].iloc[0]
    final = metrics.iloc[-1]
    return {
        "final_step": last,
        "eval_loss_final": float(final["eval_loss"]),
        "eval_loss_at_80%": float(start["eval_loss"]),
        "relative_change_last_20%": float((start["eval_loss"] - final["eval_loss"]) / final["eval_loss"]),
    }


def gradient_check(model, task, n: int) -> dict:
    """Is the model at a stationary point, as far as `n` fresh tasks can tell?

    g₁, g₂ are the loss gradients (all parameters, float64) on two independent halves of `n` fresh
    tasks and g = (g₁ + g₂)/2 the gradient on all of them. At a stationary point of the population
    loss E g = 0, and ‖g‖ and the sampling-noise estimate ‖g₁ − g₂‖/2 have the same expected
    square (tr Cov(∇ℓ)/n); a ratio ‖g‖ / (‖g₁ − g₂‖/2) well above 1 means a real gradient remains.
    """
    tokens = task.sample(n, generator(12345, NAME, "grad")).tokens.double()
    halves = []
    for part in (tokens[: n // 2], tokens[n // 2:]):
        model.zero_grad()
        task.train_loss(model, part).backward()
        halves.append(torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None]))
    model.zero_grad()
    mean = (halves[0] + halves[1]) / 2
    noise = float((halves[0] - halves[1]).norm() / 2)
    return {"gradient_norm": float(mean.norm()), "gradient_noise": noise,
            "gradient_noise_ratio": float(mean.norm()) / noise}


def checkpoint_before_end(run_dir: Path) -> int:
    """The saved checkpoint nearest to (1 − LAST_SHARE) of the run's last step."""
    steps = rundir.resolve_steps(run_dir, "all")
    return min(steps, key=lambda step: abs(step - (1 - LAST_SHARE) * steps[-1]))


def earlier_verdict(run_dir: Path, best: dict, ev, layers: int, final: dict) -> dict:
    """Would stopping LAST_SHARE earlier change the answer? The checkpoint at 80 % of training
    against each family's optimum, on the same evaluation tasks: loss, distances, closest family."""
    step = checkpoint_before_end(run_dir)
    predict = lr.lsa_predictor(load_run(run_dir, step=step).model.double().eval())
    with torch.no_grad():
        y_model = predict(ev.x, ev.y, ev.x_q)
    row = {"step_80%": step, "loss_model_80%": float(0.5 * (y_model - ev.y_q).pow(2).mean())}
    for family in FAMILIES:
        y_opt = family_predict(family, best[family], ev.x, ev.y, ev.x_q, layers)
        row[f"dist_{family}_opt_80%"] = lr.prediction_difference(y_model, y_opt).relative_l2
    row["closest_opt_80%"] = closest_family({f: row[f"dist_{f}_opt_80%"] for f in FAMILIES})
    row["verdict_same_at_80%"] = row["closest_opt_80%"] == final["closest_opt"]
    row["dist_closest_change_80%_to_end"] = final[f"dist_{final['closest_opt']}_opt"] - row[f"dist_{final['closest_opt']}_opt_80%"]
    return row


def measure_run(run_dir: Path, best: dict, quick: bool) -> tuple[dict, list[dict]]:
    """One finished cell: convergence, distances from each family, learned preconditioners."""
    run = load_run(run_dir)
    model, task = run.model.double().eval(), run.task
    layers, n_points = run.config.model.n_layers, task.config.n_points
    row = {"layers": layers, "seed": run.config.seed, **convergence(run_dir)}
    row.update(gradient_check(model, task, N_GRAD_QUICK if quick else N_GRAD))
    row["converged"] = bool(abs(row["relative_change_last_20%"]) < LOSS_CHANGE_CONVERGED
                            and row["gradient_noise_ratio"] < NOISE_RATIO_CONVERGED)
    fit = task_sample(task, N_FIT_QUICK if quick else N_FIT, "fit")
    ev = task_sample(task, N_EVAL_QUICK if quick else N_EVAL, "eval")
    predict = lr.lsa_predictor(model)
    with torch.no_grad():
        y_model = predict(ev.x, ev.y, ev.x_q)
        y_model_fit = predict(fit.x, fit.y, fit.x_q)
    half_se = lambda p: float(0.5 * (p - ev.y_q).pow(2).mean())
    row["loss_model"] = half_se(y_model)
    row["loss_zero"] = half_se(torch.zeros_like(ev.y_q))
    for family in FAMILIES:
        params = best[family]
        y_opt = family_predict(family, params, ev.x, ev.y, ev.x_q, layers)
        row[f"loss_{family}_opt"] = half_se(y_opt)
        row[f"dist_{family}_opt"] = lr.prediction_difference(y_model, y_opt).relative_l2
        opt_predict = lambda x, y, x_q, f=family, p=params: family_predict(f, p, x, y, x_q, layers)
        row[f"cos_{family}_opt"] = lr.sensitivity_cosine(predict, opt_predict, ev.x, ev.y, ev.x_q)
        fitted = fit_family(family, fit, y_model_fit, layers, quick)
        y_fitted = family_predict(family, fitted, ev.x, ev.y, ev.x_q, layers)
        row[f"dist_{family}_fit"] = lr.prediction_difference(y_model, y_fitted).relative_l2
    row["closest_opt"] = closest_family({f: row[f"dist_{f}_opt"] for f in FAMILIES})
    row["closest_fit"] = closest_family({f: row[f"dist_{f}_fit"] for f in FAMILIES})
    row.update(earlier_verdict(run_dir, best, ev, layers, row))

    learned, x_update = pg.learned_preconditioners(model, n_points)
    sigma = task.x_covariance()
    closed = pg.optimal_preconditioner(sigma, n_points, task.config.noise)
    eye = torch.eye(sigma.shape[0], dtype=torch.float64)
    layer_rows = []
    for layer in range(layers):
        gamma, opt = learned[layer], best["PGD"][layer]
        layer_rows.append({
            "layers": layers, "seed": run.config.seed, "layer": layer + 1,
            "cos(learned Γ, optimal Γ_l)": pg.matrix_cosine(gamma, opt),
            "cos(learned Γ, I)": pg.matrix_cosine(gamma, eye),
            "cos(optimal Γ_l, I)": pg.matrix_cosine(opt, eye),
            "cos(learned Γ, Σ⁻¹)": pg.matrix_cosine(gamma, torch.linalg.inv(sigma)),
            "cos(learned Γ, closed-form Γ*)": pg.matrix_cosine(gamma, closed),
            "scale ⟨Γ,Γ_opt⟩/‖Γ‖²": float((gamma * opt).sum() / (gamma * gamma).sum()),
            "x_update": float(x_update[layer]),
            "singular values of learned Γ / the largest": " ".join(
                f"{v:.3f}" for v in (torch.linalg.svdvals(gamma) / torch.linalg.svdvals(gamma)[0]).tolist()),
        })
    return row, layer_rows


def verdict_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for layers, group in runs.groupby("layers"):
        row = {"layers": layers, "seeds": len(group)}
        row["loss model"] = group["loss_model"].mean()
        for family in FAMILIES:
            row[f"loss {family} opt"] = group[f"loss_{family}_opt"].mean()
        for family in FAMILIES:
            row[f"dist {family} opt"] = group[f"dist_{family}_opt"].mean()
        for family in FAMILIES:
            row[f"dist {family} fit"] = group[f"dist_{family}_fit"].mean()
        row["closest optimum (runs)"] = ", ".join(f"{k}×{v}" for k, v in group["closest_opt"].value_counts().items())
        row["closest fitted (runs)"] = ", ".join(f"{k}×{v}" for k, v in group["closest_fit"].value_counts().items())
        row["max rel. change last 20%"] = group["relative_change_last_20%"].abs().max()
        row["max ‖∇‖ / noise"] = group["gradient_noise_ratio"].max()
        row["converged (runs)"] = f"{int(group['converged'].sum())}/{len(group)}"
        row["closest optimum the same at 80% (runs)"] = f"{int(group['verdict_same_at_80%'].sum())}/{len(group)}"
        rows.append(row)
    return pd.DataFrame(rows)


def theory_table(best_by_depth: dict, task) -> pd.DataFrame:
    sigma = task.x_covariance()
    n = task.config.n_points
    closed = pg.optimal_preconditioner(sigma, n, task.config.noise)
    eye = torch.eye(sigma.shape[0], dtype=torch.float64)
    one_step = best_by_depth[1]["PGD fitted"] if 1 in best_by_depth else None
    rows = [{"depth": 1, "what": "closed-form Γ* (Ahn et al. Thm 1)", "cos with I": pg.matrix_cosine(closed, eye),
             "cos with Σ⁻¹": pg.matrix_cosine(closed, torch.linalg.inv(sigma)),
             "cos with fitted 1-step Γ": pg.matrix_cosine(closed, one_step[0]) if one_step is not None else float("nan"),
             "population loss": pg.pgd_population_loss(closed, sigma, n, task.config.noise)}]
    for depth, best in best_by_depth.items():
        for layer, gamma in enumerate(best["PGD"]):
            what = "optimal Γ_1 = the closed-form Γ*" if depth == 1 else f"fitted optimal Γ_{layer + 1}"
            rows.append({"depth": depth, "what": what, "cos with I": pg.matrix_cosine(gamma, eye),
                         "cos with Σ⁻¹": pg.matrix_cosine(gamma, torch.linalg.inv(sigma)),
                         "cos with fitted 1-step Γ": pg.matrix_cosine(gamma, one_step[0]) if one_step is not None else float("nan"),
                         "population loss": float("nan")})
        rows.append({"depth": depth, "what": f"GD η = {best['GD']:.4g}; GD++ (η, γ) = "
                     + "; ".join(f"({e:.3g}, {g:.3g})" for e, g in best["GD++"].tolist()),
                     "cos with I": float("nan"), "cos with Σ⁻¹": float("nan"), "cos with fitted 1-step Γ": float("nan"),
                     "population loss": float("nan")})
    return pd.DataFrame(rows)


def curves_figure(dirs: dict[str, Path], results: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    fig, frames = go.Figure(), []
    for cell, run_dir in dirs.items():
        metrics = pd.DataFrame(rundir.read_metrics(run_dir)).dropna(subset=["eval_loss"])
        layers = int(results.loc[cell, "model.n_layers"])
        frames.append(metrics[["step", "eval_loss"]].assign(cell=cell, layers=layers))
        fig.add_scatter(x=metrics["step"] + 1, y=metrics["eval_loss"], name=f"L={layers} {cell}")
    fig.update_xaxes(type="log", title_text="step + 1")
    fig.update_yaxes(type="log", title_text="held-out loss (half squared error)")
    return fig, pd.concat(frames)


def main(argv: list[str] | None = None) -> dict:
    args = _study.parse_args(NAME, "LSAs vs preconditioned GD, GD++ and GD (issue 16)", argv)
    spec = _study.committed_spec(NAME)
    if args.quick:
        spec = _study.quick_spec(spec, seeds=[0], config=QUICK, axes=QUICK_AXES)
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    started = time.perf_counter()
    dirs = _study.cell_dirs(sweep)
    results = sweep.results.set_index("cell")
    task = load_run(next(iter(dirs.values()))).task
    depths = sorted({int(results.loc[c, "model.n_layers"]) for c in dirs})
    best_by_depth = {L: optima(task, L, N_FIT_QUICK if args.quick else N_FIT, args.quick) for L in depths}
    rows, layer_rows = [], []
    for cell, run_dir in dirs.items():
        row, per_layer = measure_run(run_dir, best_by_depth[int(results.loc[cell, "model.n_layers"])], args.quick)
        rows.append({"cell": cell, **row})
        layer_rows += per_layer
    runs, layers_table = pd.DataFrame(rows), pd.DataFrame(layer_rows)
    verdicts = verdict_table(runs)
    theory = theory_table(best_by_depth, task)
    analysis_seconds = time.perf_counter() - started

    page = ReportPage()
    page.add("setting", "Setting", f"<pre>{json.dumps(spec, indent=1)}</pre><p>Σ eigenvalues: "
             + ", ".join(f"{v:.3f}" for v in torch.linalg.eigvalsh(task.x_covariance()).tolist())
             + f"; sweep {sweep_seconds:.0f} s, analysis {analysis_seconds:.0f} s.</p>")
    page.add("verdicts", "Verdicts per depth", "<p>dist: relative L2 distance of the model's predictions "
             "from the family's optimum (opt, fitted to the targets) or from the member fitted to the model (fit); "
             "losses are half squared errors on fresh tasks.</p>" + _study.table_html(page, verdicts, "verdicts.csv"))
    page.add("theory", "Theory: optimal preconditioners", _study.table_html(page, theory, "theory.csv"))
    page.add("preconditioners", "Learned key–query preconditioners", _study.table_html(page, layers_table, "layers.csv"))
    fig, data = curves_figure(dirs, results)
    page.add("curves", "Training curves", page.figure(fig, "curves.csv", data))
    page.add("runs", "Every run", _study.table_html(page, runs, "runs.csv"))
    summary = {
        "quick": args.quick,
        "sweep_seconds": sweep_seconds,
        "analysis_seconds": analysis_seconds,
        "n_runs": len(runs),
        "sigma_eigenvalues": torch.linalg.eigvalsh(task.x_covariance()).tolist(),
        "verdicts": verdicts.to_dict("records"),
        "theory": theory.to_dict("records"),
        "layers": layers_table.to_dict("records"),
        "runs": runs.to_dict("records"),
    }
    path = _study.write_study(page, args.out, NAME, "Preconditioned GD (LSA, anisotropic x)", summary)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.4g}".format):
        print(verdicts.to_string(index=False))
        print(layers_table.to_string(index=False))
        print(theory.to_string(index=False))
    print(f"sweep {sweep_seconds:.0f} s, analysis {analysis_seconds:.0f} s; report: {path}")
    return summary


if __name__ == "__main__":
    main()
