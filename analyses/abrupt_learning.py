"""Abrupt learning of in-context classification in Reddy (ICLR 2024)'s network.

Usage:

    python analyses/abrupt_learning.py [--quick] [--out DIR] [--workers 2]
    python analyses/abrupt_learning.py --theory-only   # the phenomenological model only (~5 s)

The sweep (``analyses/sweeps/abrupt_learning.json``, run with ``interp-icl sweep``) trains the
`abrupt-learning` preset: the paper's task (L = 32 labels, N = 8 pairs, D = 63, ε = 0.1, α = 0,
bursty with B = 2) and network, with K = 2^14 classes and Adam (lr 1e-3) so that the transition
happens within a CPU budget (see the preset), 2000 steps. Arms (one zip group of task.burstiness,
task.n_labels, model.n_labels; seeds 0, 1, 2 each; `arm_config` builds the same configs):

* ``main`` (setting s000): the preset;
* ``L = N`` (s001): B = 1 and L = N = 8 — every context holds all L labels (bursty contexts have
  distinct labels), so picking a context label is no better than chance and the slow phase has
  no gradient to follow;
* ``L > N control`` (s002): B = 1, L = 32, the same budget, so that the L = N arm differs from a
  learning one only in L.

``--quick`` trains seed 0 of every arm for a few steps, in a 32-wide network: the study's
mechanics only.

Measured per run, from the trainer's evaluations (every 25 steps, 512 fixed sequences per set)
and from the progress measures at every checkpoint
(`interp_icl.analysis.icl_classification.progress_over_checkpoints`, 512 sequences):

* the slow-phase plateau: picking one of the N/B context labels at random gives accuracy B/N
  (loss log(N/B)); ``learned``: final in-context (ICL) accuracy ≥ 0.9;
* the transition: t10, t50, t90 = first evaluation step at which the ICL accuracy (median of 3
  neighbouring evaluations) has covered 10 / 50 / 90 % of its rise from the plateau B/N to its
  final value (mean of the last 4 evaluations); ``abrupt``: learned and the rise
  t90 − t10 lasts at most half of the time before it (t10);
* the loss drop (runs that learned): first step at which the loss (median of 3) is below the
  midpoint of log(N/B) and its final value;
* the progress measures (label→item attention in layer 1, target→correct-label and
  target→all-labels attention in layer 2, context-label accuracy): the half-rise step of each
  over the checkpoints (`interp_icl.curves.half_rise_step`); a measure "jumps with the loss" if
  its half-rise is within (t90 − t10) + one checkpoint interval of the loss drop;
  context-label accuracy "rises first" if its half-rise (from the evaluations) precedes t10.

The phenomenological model (`interp_icl.theory.abrupt_learning`, the source text's form) is run
beside it: gradient descent from the origin for L = 32 and for L = N = 8. ``--theory-only`` runs
just that, for the source's form and for the named variant ``n_minus_1_reconstruction``, prints
the growth order, rise steps and final loss, and trains nothing.

Writes OUT/abrupt_learning.html (verdict table beside the paper's claims, runs, figures; data in
OUT/abrupt_learning_data/) and OUT/abrupt_learning.json, and prints a summary.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study

from interp_icl.config import RunConfig
from interp_icl.curves import crossing_steps, half_rise_step, smoothed
from interp_icl.presets import abrupt_learning as abrupt_learning_preset
from interp_icl.runs import load_run, rundir
from interp_icl.runs.analysis import progress_over_checkpoints
from interp_icl.theory import abrupt_learning as phenomenological
from interp_icl.viz.report import ReportPage

NAME = "abrupt_learning"
# --quick: 150 steps of a 32-wide network (the study's is 128 wide; the width changes no mechanics)
QUICK = {"train.steps": 150, "train.eval_every": 25, "train.n_eval": 128, "train.checkpoint_every": 50,
         "model.d_model": 32, "model.d_head": 32, "model.d_mlp": 32}
LEARNED = 0.9  # final ICL accuracy that counts as "learned in context"
ABRUPT_RATIO = 0.5  # the rise (t90 - t10) may last at most this fraction of the time before it
N_PROGRESS = 512  # sequences of the progress measures at each checkpoint
ATTENTION_MEASURES = ("label_to_item_attn", "target_to_correct_label_attn", "target_to_labels_attn")

ARMS = {
    # arm: (run-name prefix, task fields changed from the preset)
    "main": ("abrupt", {}),
    "L = N": ("abrupt-LeqN", {"burstiness": 1, "n_labels": 8}),
    "L > N control": ("abrupt-B1", {"burstiness": 1}),
}


def arm_config(arm: str, seed: int, steps: int) -> RunConfig:
    prefix, task_fields = ARMS[arm]
    base = abrupt_learning_preset().to_dict()
    base["name"] = f"{prefix}-s{seed}"
    base["seed"] = seed
    base["task"].update(task_fields)
    base["model"]["n_labels"] = base["task"]["n_labels"]
    base["train"]["steps"] = steps
    return RunConfig.from_dict(base)


def arm_of(config: RunConfig) -> str:
    """The arm a sweep cell belongs to, read off its task (the spec's zipped axes set them)."""
    if config.task.n_labels == config.task.n_pairs:
        return "L = N"
    return "L > N control" if config.task.burstiness == 1 else "main"


def run_summary(run: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The numbers of one run (module docstring), its evaluation curves and its progress
    measures over checkpoints (long DataFrame step, metric, value, stderr, n)."""
    loaded = load_run(run)
    task = loaded.config.task
    plateau_accuracy = task.burstiness / task.n_pairs
    plateau_loss = math.log(task.n_pairs / task.burstiness)
    metrics = loaded.metrics().set_index("step").sort_index()
    accuracy = smoothed(metrics["icl_accuracy"])
    loss = smoothed(metrics["eval_loss"])

    def final(column: str) -> float:
        """Mean of the last four evaluations."""
        return float(metrics[column].iloc[-4:].mean())

    final_accuracy, final_loss = final("icl_accuracy"), final("eval_loss")
    crossings = crossing_steps(accuracy, plateau_accuracy, final_accuracy)
    t10, t50, t90 = (
        crossings[f] if final_accuracy > plateau_accuracy else None for f in (0.1, 0.5, 0.9)
    )
    learned = final_accuracy >= LEARNED
    rise_steps = t90 - t10 if learned and None not in (t10, t90) else None
    abrupt = bool(learned and rise_steps is not None and t10 and rise_steps <= ABRUPT_RATIO * t10)
    loss_drop = (  # the transition's loss drop; none in a run that did not learn in context
        crossing_steps(loss, plateau_loss, final_loss, (0.5,))[0.5] if learned else None
    )
    progress = progress_over_checkpoints(run, n=N_PROGRESS)
    wide = progress.pivot(index="step", columns="metric", values="value")
    interval = loaded.config.train.checkpoint_every
    half_rise = {name: half_rise_step(wide[name]) for name in ATTENTION_MEASURES}
    cla_half_rise = half_rise_step(metrics["context_label_accuracy"])
    window = (rise_steps or 0) + interval
    with_loss = {
        name: None if step is None or loss_drop is None else abs(step - loss_drop) <= window
        for name, step in half_rise.items()
    }
    summary = {
        "run": str(run),
        "seed": loaded.config.seed,
        "n_labels": task.n_labels,
        "burstiness": task.burstiness,
        "steps": int(metrics.index[-1]),
        "chance_accuracy": 1 / task.n_labels,
        "plateau_accuracy": plateau_accuracy,
        "final_icl_accuracy": final_accuracy,
        "final_iwl_accuracy": final("iwl_accuracy"),
        "final_context_label_accuracy": final("context_label_accuracy"),
        "final_loss": final_loss,
        "learned": learned,
        "t10": t10,
        "t50": t50,
        "t90": t90,
        "rise_steps": rise_steps,
        "abrupt": abrupt,
        "loss_drop_step": loss_drop,
        "context_label_half_rise": cla_half_rise,
        "context_label_first": None
        if cla_half_rise is None or t10 is None
        else cla_half_rise < t10,
        **{f"{name}_half_rise": step for name, step in half_rise.items()},
        **{f"{name}_with_loss": value for name, value in with_loss.items()},
    }
    curves = metrics[["eval_loss", "icl_accuracy", "context_label_accuracy", "iwl_accuracy"]]
    return summary, curves.reset_index(), progress


def phenomenological_runs(
    variant: str = phenomenological.SOURCE,
) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Gradient descent on the phenomenological loss (``variant``, default the source's form)
    from the origin, N = 8, for L = 32 and L = N = 8 (lr 0.1, 3000 steps): {"L = 32": ...,
    "L = N = 8": ...}, each (trajectory, growth order at the default threshold 0.1)."""
    out = {}
    for name, labels in (("L = 32", 32), ("L = N = 8", 8)):
        trajectory = phenomenological.gradient_flow(
            n_items=8, n_labels=labels, steps=3000, record_every=1, variant=variant
        )
        out[name] = (trajectory, phenomenological.growth_order(trajectory))
    return out


def theory_lines(theory: dict[str, tuple[pd.DataFrame, dict]], variant: str) -> list[str]:
    """Printable summary of `phenomenological_runs`: growth order, rise steps and final loss for
    L = 32; largest parameter change and loss change from the origin for L = N = 8."""
    trajectory, growth = theory["L = 32"]
    rise = growth["rise_step"]
    equal = theory["L = N = 8"][0]
    moved = float(equal[["beta", "alpha", "xi"]].abs().to_numpy().max())
    loss_change = float((equal["loss"] - equal["loss"].iloc[0]).abs().max())
    steps = int(trajectory["step"].iloc[-1])
    greater = (
        f"{variant}, N = 8, L = 32: order {' -> '.join(growth['order'])} (rise steps, "
        f"{growth['criterion']}: xi {rise['xi']}, alpha {rise['alpha']}, beta {rise['beta']}); "
        f"loss {trajectory['loss'].iloc[0]:.4f} -> {trajectory['loss'].iloc[-1]:.4g} after "
        f"{steps} steps"
    )
    flat = (
        f"{variant}, L = N = 8: largest parameter change {moved:.1e}, largest loss change "
        f"{loss_change:.1e} from {equal['loss'].iloc[0]:.4f} = log 8 in {steps} steps"
    )
    return [greater, flat]


def step_text(step: float | None) -> str:
    """A step for the tables: an integer, or "–" when there is none (None or NaN)."""
    return "–" if step is None or math.isnan(step) else str(int(step))


def verdict_rows(results: pd.DataFrame, theory: dict) -> list[tuple[str, str, str, bool | None]]:
    main = results[results.arm == "main"]
    rows = [
        (
            f"main arm: seeds with an abrupt ICL transition ({len(main)} seeds)",
            f"{int(main.abrupt.sum())} / {len(main)} (rise t90−t10: "
            + ", ".join(step_text(s) for s in main.rise_steps)
            + " steps after t10 = "
            + ", ".join(step_text(s) for s in main.t10)
            + ")",
            "slow phase, then an abrupt rise of ICL accuracy, every seed (paper: six seeds)",
            bool(main.abrupt.all()) if len(main) else None,
        ),
        (
            "main arm: final ICL accuracy (novel classes)",
            ", ".join(f"{v:.3f}" for v in main.final_icl_accuracy),
            f"≥ {LEARNED}",
            bool((main.final_icl_accuracy >= LEARNED).all()) if len(main) else None,
        ),
        (
            "main arm: context-label accuracy rises before the transition (half-rise < t10)",
            ", ".join(
                f"{step_text(a)} < {step_text(b)}"
                for a, b in zip(main.context_label_half_rise, main.t10)
            ),
            "context-label accuracy rises first (slow phase)",
            bool(main.context_label_first.all()) if len(main) else None,
        ),
    ]
    for name, label in (
        ("label_to_item_attn", "layer-1 label→item attention"),
        ("target_to_correct_label_attn", "layer-2 target→correct-label attention"),
    ):
        rows.append(
            (
                f"main arm: {label} half-rise vs loss drop (steps)",
                ", ".join(
                    f"{step_text(a)} vs {step_text(b)}"
                    for a, b in zip(main[f"{name}_half_rise"], main.loss_drop_step)
                ),
                "jumps together with the loss",
                bool(main[f"{name}_with_loss"].all()) if len(main) else None,
            )
        )
    rows.append(
        (
            "main arm: layer-2 target→all-labels attention half-rise (steps)",
            ", ".join(step_text(s) for s in main.target_to_labels_attn_half_rise),
            "rises in the slow phase with context-label accuracy (reported, not judged)",
            None,
        )
    )
    equal = results[results.arm == "L = N"]
    control = results[results.arm == "L > N control"]
    if len(equal):
        rows.append(
            (
                f"L = N = 8 (B = 1): seeds that learn ICL within {int(equal.steps.max())} steps",
                f"{int(equal.learned.sum())} / {len(equal)} (final ICL accuracy "
                + ", ".join(f"{v:.3f}" for v in equal.final_icl_accuracy)
                + f"; chance {1 / 8:.3f})",
                "none (paper: the full model learns for L > N but not when L = N)",
                not bool(equal.learned.any()),
            )
        )
    if len(control):
        rows.append(
            (
                "L = 32 control (B = 1), same budget: seeds that learn ICL",
                f"{int(control.learned.sum())} / {len(control)} (final ICL accuracy "
                + ", ".join(f"{v:.3f}" for v in control.final_icl_accuracy)
                + ")",
                "all (L > N learns)",
                bool(control.learned.all()),
            )
        )
    greater, equal_theory = theory["L = 32"], theory["L = N = 8"]
    rise = greater[1]["rise_step"]
    rows.append(
        (
            "phenomenological model (source's form), L = 32: growth order from the origin",
            " → ".join(greater[1]["order"])
            + f" (rise steps ξ {rise['xi']}, α {rise['alpha']}, β {rise['beta']})",
            "ξ → α → β (sequential learning of the nested logits)",
            greater[1]["matches_expected_order"],
        )
    )
    moved = float(equal_theory[0][["beta", "alpha", "xi"]].abs().to_numpy().max())
    rows.append(
        (
            (
                "phenomenological model (source's form), L = N = 8: largest parameter change "
                "from the origin in 3000 steps"
            ),
            f"{moved:.1e}",
            "0 (no learning when L = N)",
            moved == 0.0,
        )
    )
    return rows


def run_rows(results: pd.DataFrame) -> list[tuple[str, str, str, bool | None]]:
    """One row per run: final accuracies and loss, transition steps, abrupt (main arm only)."""
    return [
        (
            f"{r.arm}, seed {r.seed}",
            (
                f"ICL {r.final_icl_accuracy:.3f}, IWL {r.final_iwl_accuracy:.3f}, "
                f"loss {r.final_loss:.3f}"
            ),
            (
                f"t10 / t50 / t90 {step_text(r.t10)} / {step_text(r.t50)} / {step_text(r.t90)}, "
                f"loss drop {step_text(r.loss_drop_step)}"
            ),
            r.abrupt if r.arm == "main" else None,
        )
        for r in results.itertuples()
    ]


def curves_figure(page: ReportPage, curves: pd.DataFrame) -> str:
    """ICL accuracy, context-label accuracy and loss over steps, one line per run."""
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        subplot_titles=[
            "ICL accuracy (novel classes)",
            "context-label accuracy",
            "training-distribution loss (nats)",
        ],
    )
    for (arm, seed), frame in curves.groupby(["arm", "seed"]):
        for row, column in enumerate(("icl_accuracy", "context_label_accuracy", "eval_loss"), 1):
            fig.add_trace(
                go.Scatter(
                    x=frame.step,
                    y=frame[column],
                    mode="lines",
                    name=f"{arm}, seed {seed}",
                    legendgroup=f"{arm}{seed}",
                    showlegend=row == 1,
                ),
                row=row,
                col=1,
            )
    fig.update_layout(height=760, title="evaluation curves (every 25 steps, 512 sequences)")
    fig.update_xaxes(title_text="step", row=3, col=1)
    return page.figure(fig, "curves.csv", curves)


def progress_figure(page: ReportPage, progress: pd.DataFrame) -> str:
    """The progress measures of the main arm over checkpoints, one panel per measure."""
    main = progress[progress.arm == "main"]
    metrics = [
        *ATTENTION_MEASURES,
        "previous_token_mul",
        "induction_mul",
        "context_label_accuracy",
        "icl_accuracy",
    ]
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, subplot_titles=metrics)
    for seed, frame in main.groupby("seed"):
        for row, metric in enumerate(metrics, 1):
            part = frame[frame.metric == metric]
            fig.add_trace(
                go.Scatter(
                    x=part.step,
                    y=part.value,
                    error_y={"type": "data", "array": part.stderr, "visible": True},
                    mode="lines+markers",
                    marker={"size": 3},
                    name=f"seed {seed}",
                    legendgroup=str(seed),
                    showlegend=row == 1,
                ),
                row=row,
                col=1,
            )
    fig.update_layout(
        height=200 * len(metrics), title="progress measures over checkpoints (main arm)"
    )
    fig.update_xaxes(title_text="step", row=len(metrics), col=1)
    return page.figure(fig, "progress_measures.csv", main)


def main(argv: list[str] | None = None) -> dict:
    def extra(parser) -> None:
        parser.add_argument("--theory-only", action="store_true",
                            help="run only the phenomenological model (both variants), print it and train nothing")

    args = _study.parse_args(NAME, "abrupt learning of in-context classification (Reddy 2024)", argv, extra)
    if args.theory_only:
        lines = [line for variant in phenomenological.VARIANTS
                 for line in theory_lines(phenomenological_runs(variant), variant)]
        print("\n".join(lines))
        return {"theory": lines}
    spec = _study.committed_spec(NAME)
    if args.quick:
        spec = _study.quick_spec(spec, seeds=[0], config=QUICK)
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    started = time.perf_counter()
    summaries, curves, progress = [], [], []
    for cell, run in _study.cell_dirs(sweep).items():
        config = load_run(run).config
        arm, seed = arm_of(config), config.seed
        summary, run_curves, run_progress = run_summary(run)
        summaries.append({"arm": arm, "cell": cell, **summary})
        curves.append(run_curves.assign(arm=arm, seed=seed))
        progress.append(run_progress.assign(arm=arm, seed=seed))
    results = pd.DataFrame(summaries)
    theory = phenomenological_runs()
    analysis_seconds = time.perf_counter() - started
    steps = int(results["steps"].max())
    seeds = sorted(results["seed"].unique().tolist())

    pd.set_option("display.width", 200)
    shown = [
        "arm",
        "seed",
        "final_icl_accuracy",
        "learned",
        "t10",
        "t90",
        "rise_steps",
        "abrupt",
        "loss_drop_step",
        "context_label_half_rise",
        "label_to_item_attn_half_rise",
        "target_to_correct_label_attn_half_rise",
    ]
    print(results[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    page = ReportPage()
    rows = verdict_rows(results, theory)
    header = ["quantity", "measured", "paper / expected", "holds"]
    for quantity, measured, _, holds in rows:
        print(f"{'yes' if holds else ('no' if holds is False else '  ')}  {quantity}: {measured}")
    page.add(
        "verdicts",
        "Verdicts",
        page.verdict_table("verdicts.csv", rows, header)
        + f"<p>Runs: the <code>abrupt-learning</code> preset (K = 2<sup>14</sup>, Adam lr 1e-3, "
        f"batch 128), {steps} steps, seeds {', '.join(map(str, seeds))}, trained by "
        f"<code>interp-icl sweep</code> (sweep {sweep_seconds:.0f} s, analysis {analysis_seconds:.0f} s). Plateau "
        "level: B/N (a random pick among the N/B context labels). Abrupt: the rise from 10 % to "
        f"90 % of the way from B/N to the final accuracy lasts at most {ABRUPT_RATIO:g} × the "
        "steps before it. The phenomenological model is the source text's form, with "
        "y = sigmoid(β) reconstructed (docs/abrupt_learning.md).</p>",
    )
    page.add(
        "runs",
        "Runs",
        page.verdict_table(
            "runs.csv", run_rows(results), ["run", "final accuracies, loss", "transition", "abrupt"]
        ),
    )
    page.data["summary.csv"] = results
    curve_frame = pd.concat(curves, ignore_index=True)
    progress_frame = pd.concat(progress, ignore_index=True)
    figures = curves_figure(page, curve_frame) + progress_figure(page, progress_frame)
    for name, (trajectory, growth) in theory.items():
        fig, data = phenomenological.trajectory_figure(trajectory, growth)
        fig.update_layout(title=f"phenomenological model (source's form), N = 8, {name}")
        slug = name.replace(" ", "").replace("=", "_")
        figures += page.figure(fig, f"phenomenological_{slug}.csv", data)
    page.add("figures", "Figures", figures)
    summary = {
        "quick": args.quick,
        "sweep_seconds": sweep_seconds,
        "analysis_seconds": analysis_seconds,
        "n_runs": len(results),
        "steps": steps,
        "seeds": seeds,
        "verdicts": [dict(zip(header, row)) for row in rows],
        "runs": results.to_dict("records"),
        "versions": rundir.package_versions(),
    }
    path = _study.write_study(page, args.out, NAME, "Abrupt learning in in-context classification", summary)
    print(f"sweep {sweep_seconds:.0f} s, analysis {analysis_seconds:.0f} s; report: {path}")
    return summary


if __name__ == "__main__":
    main()
