"""Do trained linear self-attention models implement gradient descent? (von Oswald et al. 2023)

Usage:

    python analyses/linear_attention_gd.py [--layers 1 2 3] [--steps 5000] [--out-dir runs]
                                           [--report analyses/out/linear_attention_gd.html]

For each number of layers L it trains (or reuses) the run ``<out-dir>/lsa-gd-L<L>`` with the
project's trainer — the `lsa-gd` preset (d = 10, N = 10, x ~ U(-1, 1)^d, w ~ N(0, I), no noise,
Adam lr 1e-3, batch 256, fresh tasks every step) with `n_layers = L` — then compares the trained
model with L steps of gradient descent from W = 0 on 4096 fresh tasks (seeded, independent of
training):

- the GD learning rate is fitted to the model's own predictions (`tune_gd_lr`, the paper's way of
  matching a model with GD) and, separately, to the true targets (`optimal_gd_lr`);
- prediction difference |y_model - y_GD| (mean, and relative L2);
- the cosine between the models' input sensitivities dy/dx_q (mean over tasks);
- losses (half squared error) of the model, GD (both learning rates), least squares and zero.

It also checks the constructed 1-layer LSA of `gd_construction` against one GD step on the same
tasks. Writes a report (verdict table beside the paper's claims, figures) through the report
machinery, with its data next to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from interp_icl.config import RunConfig
from interp_icl.models.linear_attention import LinearSelfAttention
from interp_icl.presets import lsa_gd
from interp_icl.theory import linear_regression_gd as gd
from interp_icl.runs import rundir
from interp_icl.runs import load_run
from interp_icl.seeding import generator
from interp_icl.runs import open_run
from interp_icl.viz.report import ReportPage, write_page

N_TASKS = 4096
COSINE_CLAIM = 0.99  # the bar for the 1-layer model ("cosine with GD >= 0.99")


def train_or_reuse(layers: int, steps: int, out_dir: Path) -> Path:
    """The run of `layers` LSA layers, trained with the project's trainer (resumed if partial)."""
    base = lsa_gd().to_dict()
    base["name"] = f"lsa-gd-L{layers}"
    base["model"]["n_layers"] = layers
    base["train"]["steps"] = steps
    config = RunConfig.from_dict(base)
    run = out_dir / config.name
    open_run(config, run, resume=True).run()
    return run


def compare(run: Path, sample: gd.RegressionSample) -> dict[str, float]:
    """The trained model vs `layers` GD steps on `sample` (see the module docstring)."""
    loaded = load_run(run)
    model, layers = loaded.model, loaded.config.model.n_layers
    x, y, x_q, y_q = (t.double() for t in sample[:4])
    model = model.double()
    predict = gd.lsa_predictor(model)
    to_model = gd.tune_gd_lr(predict, (x, y, x_q), steps=layers)
    to_targets = gd.optimal_gd_lr((x, y, x_q, y_q), steps=layers)
    gd_model = gd.gd_predictor(to_model.eta, steps=layers)
    with torch.no_grad():
        y_model = predict(x, y, x_q)
        y_gd = gd_model(x, y, x_q)
        y_gd_best = gd.gd_step_prediction(x, y, x_q, to_targets.eta, steps=layers)
        y_ls = gd.least_squares_prediction(x, y, x_q)
    difference = gd.prediction_difference(y_model, y_gd)
    half_se = lambda p: float(0.5 * (p - y_q).pow(2).mean())
    return {
        "layers": layers,
        "step": loaded.step,
        "eta_fitted_to_model": to_model.eta,
        "eta_best_on_targets": to_targets.eta,
        "prediction_difference_mean_abs": difference.mean_abs,
        "prediction_difference_relative_l2": difference.relative_l2,
        "sensitivity_cosine": gd.sensitivity_cosine(predict, gd_model, x, y, x_q),
        "loss_model": half_se(y_model),
        "loss_gd_fitted_to_model": half_se(y_gd),
        "loss_gd_best": half_se(y_gd_best),
        "loss_least_squares": half_se(y_ls),
        "loss_zero": half_se(torch.zeros_like(y_q)),
    }


def construction_check(sample: gd.RegressionSample, eta: float = 0.5) -> float:
    """max |y_constructed - y_GD| of the 1-layer LSA built to take one GD step, float64."""
    x, y, x_q = (t.double() for t in sample[:3])
    n_points, d = x.shape[1], x.shape[2]
    model = LinearSelfAttention.from_weights(gd.gd_construction(d, eta, n_points=n_points))
    with torch.no_grad():
        built = model.predict(gd.tokens(x, y, x_q))
    return float((built - gd.gd_step_prediction(x, y, x_q, eta)).abs().max())


def figures(page: ReportPage, results: pd.DataFrame, runs: dict[int, Path]) -> str:
    curves = make_subplots(rows=1, cols=len(runs), subplot_titles=[f"{k} layer(s)" for k in runs])
    frames = []
    for i, (layers, run) in enumerate(runs.items(), start=1):
        metrics = pd.DataFrame(rundir.read_metrics(run))
        frames.append(metrics[["step", "eval_loss", "gd1_loss", "zero_loss"]].assign(layers=layers))
        for column, name in [("eval_loss", "LSA"), ("gd1_loss", "one GD step (best lr)")]:
            curves.add_trace(
                go.Scatter(
                    x=metrics["step"] + 1,
                    y=metrics[column],
                    name=name,
                    showlegend=i == 1,
                    line={"color": "#1f77b4" if column == "eval_loss" else "gray"},
                ),
                row=1,
                col=i,
            )
    curves.update_xaxes(type="log", title_text="step + 1")
    curves.update_yaxes(type="log")
    curves.update_layout(title="held-out loss (half squared error) during training", height=380)
    bars = go.Figure(
        go.Bar(
            x=[f"{k} layer(s)" for k in results["layers"]],
            y=results["sensitivity_cosine"],
            text=[f"{v:.4f}" for v in results["sensitivity_cosine"]],
            textposition="outside",
        )
    )
    bars.add_hline(y=COSINE_CLAIM, line_dash="dash")
    bars.update_layout(
        title="cosine(dy/dx_q of the LSA, of k GD steps with the fitted lr)",
        yaxis_range=[0, 1.05],
        height=360,
    )
    return page.figure(curves, "training_curves.csv", pd.concat(frames)) + page.figure(
        bars, "comparison.csv", results
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--out-dir", type=Path, default=Path("runs"))
    parser.add_argument(
        "--report", type=Path, default=Path("analyses/out/linear_attention_gd.html")
    )
    args = parser.parse_args()
    started = time.perf_counter()
    runs = {layers: train_or_reuse(layers, args.steps, args.out_dir) for layers in args.layers}
    task = load_run(runs[args.layers[0]]).config.task
    sample = gd.sample_regression(
        N_TASKS,
        task.n_points,
        task.x_dim,
        generator(12345, "study", "lsa-gd"),
        x_scale=task.x_scale,
    )
    results = pd.DataFrame([compare(run, sample) for run in runs.values()])
    construction_error = construction_check(sample)
    pd.set_option("display.width", 200)
    print(results.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"constructed 1-layer LSA vs one GD step: max |diff| = {construction_error:.2e}")

    page = ReportPage()
    rows = [
        (
            "constructed 1-layer LSA = one GD step (max |Δŷ|, float64)",
            f"{construction_error:.1e}",
            "exact (≤ 1e-6)",
            construction_error <= 1e-6,
        ),
    ]
    for r in results.itertuples():
        rows.append(
            (
                f"{r.layers} layer(s): cosine of input sensitivities with {r.layers} GD step(s)",
                f"{r.sensitivity_cosine:.4f}",
                "≈ 1 (paper); ≥ 0.99 for 1 layer (issue)",
                r.sensitivity_cosine >= COSINE_CLAIM if r.layers == 1 else None,
            )
        )
        rows.append(
            (
                f"{r.layers} layer(s): prediction difference (relative L2)",
                f"{r.prediction_difference_relative_l2:.4f}",
                "small (paper: GD and LSA align)",
                None,
            )
        )
        rows.append(
            (
                f"{r.layers} layer(s): loss model / GD with its best lr",
                f"{r.loss_model:.4f} / {r.loss_gd_best:.4f}",
                "1 layer ≈ 1 GD step; more layers beat one step",
                None,
            )
        )
    header = ["quantity", "measured", "paper / expected", "holds"]
    page.add(
        "verdicts",
        "Verdicts",
        page.verdict_table("verdicts.csv", rows, header)
        + f"<p>{N_TASKS} fresh tasks; GD learning rate fitted to each model's predictions "
        "(tune_gd_lr). The ≥ 0.99 bar is the issue's acceptance for 1 layer.</p>",
    )
    page.add("figures", "Figures", figures(page, results, runs))
    page.data["report.json"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "runs": {k: str(v) for k, v in runs.items()},
        "versions": rundir.package_versions(),
    }
    write_page(page, args.report, "Linear self-attention vs gradient descent")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
