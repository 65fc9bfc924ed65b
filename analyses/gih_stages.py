"""Stage-wise training dynamics of the gih model from a non-aligned start (REFERENCE §1).

Usage:

    python analyses/gih_stages.py [--quick] [--out DIR] [--workers 2]

The sweep (``analyses/sweeps/gih_stages.json``, run with ``interp-icl sweep``) trains
TF(M = 3, H = 3, d = 3, D = 2) on parents {1, 2}, α = 0.1 (the ``paper-gih`` preset: full-batch
SGD, lr 1, last-token loss, on a fixed set of 5,000 sequences; the paper: 10,000) from a
non-aligned initialisation (w+ = w− = 0 plus N(0, 0.3²) noise on every position logit, drawn from
the seed; c_S = a = 0.01), in three arms of 700 epochs each, 5 seeds each:

* **staged**: FFN weights c_S only for 300 epochs (lr 1), then the RPE weights w for 200 epochs
  (lr 300: their gradient is proportional to a = 0.01, so at lr 1 they hardly move), then the
  scalar a for 200 epochs (lr 1) — the paper's stages I, II, III;
* **joint**: every parameter together, lr 1;
* **staged (reference start)**: the staged arm from the reference initialisation (head h prefers
  offset h + 1: w+ = 3, w− = 0.1), the start the paper's stage-wise analysis assumes.

Checkpoints every 5 epochs (plus log-spaced early ones); every measurement below reads the
parameters of those checkpoints (no forward passes):

* stage I: p_S of every head subset; S* = the subset with the largest p_S at the end of the
  stage; for every other subset S a linear fit of log(p_S* / p_S) against the epoch over the
  growth phase (stage start to the first checkpoint with p_S* >= 0.99, or the stage end):
  rate (per epoch) and R²;
* the heads' dominant offsets (largest softmax(w) mass) and that mass at the start and end of
  every stage (at a non-aligned start the offsets are barely preferred);
* stage II: each S* head's attention mass on its final dominant offset: start, end, half-rise
  epoch (from the stage start); whether the S* heads' final offsets are the true parents;
* stage III: fit a = c0 + c1·log(t − t_start) over the stage's checkpoints after its start;
* joint arm: half-rise epochs (`interp_icl.curves.half_rise_step`) of p_S* (S* = the largest p_S
  at the end), the mean mass of the S* heads on their final dominant offsets, and a; the order of
  the three, and whether it is the paper's selector < copier < classifier. Computed here from the
  checkpoints' parameters, not with the sweep's ``dynamics`` step (that step runs the analysis
  passes at every checkpoint of every cell: too slow with dense checkpoints).

``--quick``: 1 seed per arm, stages of 10 epochs, 200 training sequences; mechanics only.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study  # noqa: E402

from interp_icl.analysis.dynamics import PAPER_STAGE_ORDER  # noqa: E402
from interp_icl.analysis.result import set_label  # noqa: E402
from interp_icl.curves import crossing_steps, half_rise_step  # noqa: E402
from interp_icl.models.gih import head_subsets  # noqa: E402
from interp_icl.runs import rundir  # noqa: E402
from interp_icl.viz.report import ReportPage  # noqa: E402

NAME = "gih_stages"
GROWTH_CAP = 0.99  # stage I's growth phase ends where p_S* first reaches this
STAGE_NAMES = ("I (ffn)", "II (rpe)", "III (a)")
QUICK_STAGES = [{"groups": ["ffn"], "steps": 10}, {"groups": ["rpe"], "steps": 10, "lr": 300.0}, {"groups": ["a"], "steps": 10}]
QUICK = {"train.steps": 30, "train.n_train": 200, "train.batch_size": 200, "train.eval_every": 10,
         "train.n_eval": 100, "train.checkpoint_every": 5}


@dataclass
class Trajectory:
    """The parameters of one run at its K checkpoints.

    steps [K] (epochs), p [K, n_subsets] (p_S in `subsets` order), mass [K, H, M] (softmax(w)
    of each head over offsets 1..M), a [K]; stage_starts: the first epoch of every stage and the
    last epoch (one stage [0, steps] for the joint arm)."""

    cell: str
    seed: int
    arm: str
    steps: np.ndarray
    p: np.ndarray
    mass: np.ndarray
    a: np.ndarray
    subsets: list[tuple[int, ...]]
    parents: tuple[int, ...]
    stage_starts: list[int]


def read_trajectory(cell: str, run_dir: Path) -> Trajectory:
    config = rundir.read_config(run_dir)
    steps, p, mass, a = [], [], [], []
    for step in rundir.list_checkpoints(run_dir):
        state, _, _ = rundir.load_checkpoint(rundir.checkpoint_path(run_dir, step))
        c2 = state["blocks.0.mlp.c"].double() ** 2
        steps.append(step)
        p.append((c2 / c2.sum()).numpy())
        mass.append(torch.softmax(state["blocks.0.attn.w_rpe"].double(), dim=-1).numpy())
        a.append(float(state["blocks.1.attn.a"]))
    starts = [0]
    for stage in config.train.stages or ():
        starts.append(starts[-1] + stage.steps)
    if len(starts) == 1:
        starts.append(config.train.steps)
    arm = ("staged" if config.train.stages else "joint") + ("" if config.model.rpe_noise > 0 else " (reference start)")
    return Trajectory(cell, config.seed, arm, np.array(steps),
                      np.array(p), np.array(mass), np.array(a),
                      head_subsets(config.model.n_heads, config.model.max_degree), tuple(config.task.parents), starts)


# ----- small helpers -------------------------------------------------------------------------

def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares y = intercept + slope·x over [n] points: (slope, intercept, R²); NaN for
    fewer than 3 points or a constant x; R² is NaN for a constant y."""
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    slope, intercept = np.polyfit(x, y, 1)
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        return float(slope), float(intercept), math.nan
    residual = float(((y - (intercept + slope * x)) ** 2).sum())
    return float(slope), float(intercept), min(max(1.0 - residual / total, 0.0), 1.0)


def stage_index(traj: Trajectory, k: int) -> np.ndarray:
    """Indices of the checkpoints in stage k: epochs stage_starts[k] .. stage_starts[k+1]."""
    lo, hi = traj.stage_starts[k], traj.stage_starts[k + 1]
    return np.nonzero((traj.steps >= lo) & (traj.steps <= hi))[0]


def at_step(traj: Trajectory, step: int) -> int:
    """Index of the last checkpoint at or before `step`."""
    return int(np.nonzero(traj.steps <= step)[0][-1])


def dominant_offsets(mass: np.ndarray) -> list[int]:
    """Each head's offset (1-based) with the largest mass; mass [H, M] -> [H]."""
    return [int(m) + 1 for m in mass.argmax(-1)]


def heads_text(mass: np.ndarray) -> str:
    """'H0:3(0.42) H1:2(0.42) ...': each head's dominant offset and its mass; mass [H, M]."""
    return " ".join(f"H{h}:{o}({mass[h, o - 1]:.2f})" for h, o in enumerate(dominant_offsets(mass)))


def subset_text(subset: tuple[int, ...], mass: np.ndarray) -> str:
    """A head subset and the offsets its heads prefer under `mass` [H, M], e.g. 'H0H2 {1,3}'."""
    if not subset:
        return "∅"
    offsets = dominant_offsets(mass)
    return "".join(f"H{h}" for h in subset) + " " + set_label(sorted({offsets[h] for h in subset}))


# ----- the measurements ------------------------------------------------------------------------

def is_staged(traj: Trajectory) -> bool:
    return traj.arm.startswith("staged")


def offsets_rows(traj: Trajectory) -> list[dict]:
    """The heads' dominant offsets and masses at the start and end of every stage."""
    rows = []
    for k in range(len(traj.stage_starts) - 1):
        name = STAGE_NAMES[k] if is_staged(traj) else "joint"
        first, last = at_step(traj, traj.stage_starts[k]), at_step(traj, traj.stage_starts[k + 1])
        rows.append({"seed": traj.seed, "arm": traj.arm, "stage": name,
                     "heads at start": heads_text(traj.mass[first]), "heads at end": heads_text(traj.mass[last])})
    return rows


def stage1_rows(traj: Trajectory) -> tuple[int, list[dict]]:
    """S* (index into `subsets`) at the end of stage I and one fit row per other subset."""
    index = stage_index(traj, 0)
    end = index[-1]
    star = int(traj.p[end].argmax())
    reached = index[traj.p[index, star] >= GROWTH_CAP]
    growth = index[index <= (reached[0] if len(reached) else end)]
    runner_up = int(np.argsort(traj.p[end])[-2])
    rows = []
    for s, subset in enumerate(traj.subsets):
        if s == star:
            continue
        ratio = np.log(traj.p[growth, star]) - np.log(traj.p[growth, s])
        rate, _, r2 = linear_fit(traj.steps[growth].astype(float), ratio)
        rows.append({"arm": traj.arm, "seed": traj.seed, "S*": subset_text(traj.subsets[star], traj.mass[end]),
                     "subset": subset_text(subset, traj.mass[end]), "runner-up": s == runner_up,
                     "p_S start": traj.p[index[0], s], "p_S end": traj.p[end, s],
                     "p_S* end": traj.p[end, star], "growth epochs": f"{traj.steps[growth[0]]}–{traj.steps[growth[-1]]}",
                     "rate per epoch": rate, "R²": r2})
    return star, rows


def stage2_rows(traj: Trajectory, star: int) -> list[dict]:
    """Each S* head's mass on its final (end of stage II) dominant offset over stage II."""
    index = stage_index(traj, 1)
    start = traj.stage_starts[1]
    final = dominant_offsets(traj.mass[index[-1]])
    heads = traj.subsets[star]
    ends_on_parents = sorted({final[h] for h in heads}) == sorted(traj.parents)
    rows = []
    for h in heads:
        curve = pd.Series(traj.mass[index, h, final[h] - 1], index=traj.steps[index] - start)
        half = crossing_steps(curve, float(curve.iloc[0]), float(curve.iloc[-1]), (0.5,))[0.5]
        rows.append({"arm": traj.arm, "seed": traj.seed, "head": f"H{h}", "offset": final[h], "mass start": float(curve.iloc[0]),
                     "mass end": float(curve.iloc[-1]), "half-rise epoch": half,
                     "S* offsets": set_label(sorted({final[g] for g in heads})),
                     "S* = true parents": ends_on_parents})
    return rows


def stage3_row(traj: Trajectory) -> dict:
    """Fit a = c0 + c1 log(t - t_start) over stage III's checkpoints after its start."""
    index = stage_index(traj, 2)
    start = traj.stage_starts[2]
    index = index[traj.steps[index] > start]
    slope, intercept, r2 = linear_fit(np.log(traj.steps[index] - start), traj.a[index])
    return {"arm": traj.arm, "seed": traj.seed, "a start": traj.a[at_step(traj, start)], "a end": traj.a[index[-1]],
            "c1 (slope on log t)": slope, "c0": intercept, "R²": r2, "points": len(index)}


def role_curves(traj: Trajectory) -> dict[str, pd.Series]:
    """selector: p_S* (S* = the largest p_S at the last checkpoint); copier: mean mass of the S*
    heads on their final dominant offsets; classifier: a. Each indexed by epoch."""
    star = int(traj.p[-1].argmax())
    heads = traj.subsets[star]
    final = dominant_offsets(traj.mass[-1])
    copier = (np.mean([traj.mass[:, h, final[h] - 1] for h in heads], axis=0) if heads
              else np.full(len(traj.steps), math.nan))
    return {"selector": pd.Series(traj.p[:, star], index=traj.steps),
            "copier": pd.Series(copier, index=traj.steps),
            "classifier": pd.Series(traj.a, index=traj.steps)}


def order_text(halves: dict[str, int | None]) -> str | None:
    """'selector<copier<classifier' by half-rise epoch; '=' joins roles with the same epoch."""
    known = sorted((step, PAPER_STAGE_ORDER.index(role), role) for role, step in halves.items() if step is not None)
    text = ""
    for i, (step, _, role) in enumerate(known):
        text += ("" if i == 0 else ("=" if step == known[i - 1][0] else "<")) + role
    return text or None


def joint_row(traj: Trajectory) -> dict:
    curves = role_curves(traj)
    halves = {role: half_rise_step(curve) for role, curve in curves.items()}
    order = order_text(halves)
    decidable = order is not None and "=" not in order and all(v is not None for v in halves.values())
    star = int(traj.p[-1].argmax())
    return {"arm": traj.arm, "seed": traj.seed, "S*": subset_text(traj.subsets[star], traj.mass[-1]),
            "S* = true parents": sorted({dominant_offsets(traj.mass[-1])[h] for h in traj.subsets[star]}) == sorted(traj.parents),
            "p_S* end": traj.p[-1, star], "copier mass end": float(curves["copier"].iloc[-1]), "a end": traj.a[-1],
            **{f"half-rise {role}": step for role, step in halves.items()},
            "order": order, "paper order": (order == "<".join(PAPER_STAGE_ORDER)) if decidable else None}


# ----- figures -----------------------------------------------------------------------------------

def stage1_figure(trajs: list[Trajectory]) -> tuple[go.Figure, pd.DataFrame]:
    rows = []
    for traj in trajs:
        index = stage_index(traj, 0)
        for s, subset in enumerate(traj.subsets):
            label = f"{traj.arm}, seed {traj.seed} " + subset_text(subset, traj.mass[index[-1]])
            rows += [{"seed": traj.seed, "subset": label, "epoch": int(traj.steps[i]), "p_S": float(traj.p[i, s])} for i in index]
    data = pd.DataFrame(rows)
    fig = go.Figure()
    for label, part in data.groupby("subset", sort=False):
        fig.add_scatter(x=part["epoch"], y=part["p_S"], mode="lines", name=label, legendgroup=f"seed {part['seed'].iloc[0]}")
    fig.update_layout(xaxis_title="epoch (stage I)", yaxis_title="p_S", yaxis_type="log")
    return fig, data


def stage2_figure(trajs: list[Trajectory], stars: dict[str, int]) -> tuple[go.Figure, pd.DataFrame]:
    rows = []
    for traj in trajs:
        index = stage_index(traj, 1)
        final = dominant_offsets(traj.mass[index[-1]])
        for h in traj.subsets[stars[traj.cell]]:
            rows += [{"seed": traj.seed, "head": f"{traj.arm}, seed {traj.seed} H{h} → offset {final[h]}",
                      "epoch in stage": int(traj.steps[i] - traj.stage_starts[1]), "mass": float(traj.mass[i, h, final[h] - 1])} for i in index]
    data = pd.DataFrame(rows)
    fig = go.Figure()
    for label, part in data.groupby("head", sort=False):
        fig.add_scatter(x=part["epoch in stage"], y=part["mass"], mode="lines", name=label)
    fig.update_layout(xaxis_title="epoch in stage II", yaxis_title="attention mass on the final offset", yaxis_range=[0, 1])
    return fig, data


def stage3_figure(trajs: list[Trajectory]) -> tuple[go.Figure, pd.DataFrame]:
    rows = []
    for traj in trajs:
        index = stage_index(traj, 2)
        start = traj.stage_starts[2]
        rows += [{"arm": traj.arm, "seed": traj.seed, "t - t_start": int(traj.steps[i] - start), "a": float(traj.a[i])}
                 for i in index if traj.steps[i] > start]
    data = pd.DataFrame(rows)
    fig = go.Figure()
    for (arm, seed), part in data.groupby(["arm", "seed"], sort=False):
        fig.add_scatter(x=part["t - t_start"], y=part["a"], mode="lines+markers", name=f"{arm}, seed {seed}")
    fig.update_layout(xaxis_title="epochs since stage III began (log)", xaxis_type="log", yaxis_title="a")
    return fig, data


def joint_figure(trajs: list[Trajectory]) -> tuple[go.Figure, pd.DataFrame]:
    """Each role's curve as progress (value − first) / (last − first), against the epoch (log)."""
    rows = []
    for traj in trajs:
        for role, curve in role_curves(traj).items():
            span = float(curve.iloc[-1] - curve.iloc[0])
            for step, value in curve.items():
                progress = (value - curve.iloc[0]) / span if span else math.nan
                rows.append({"seed": traj.seed, "role": role, "epoch": int(step), "value": float(value), "progress": float(progress)})
    data = pd.DataFrame(rows)
    fig = go.Figure()
    for (seed, role), part in data.groupby(["seed", "role"], sort=False):
        part = part[part["epoch"] > 0]
        fig.add_scatter(x=part["epoch"], y=part["progress"], mode="lines", name=f"seed {seed} {role}", legendgroup=role)
    fig.update_layout(xaxis_title="epoch (log)", xaxis_type="log", yaxis_title="progress from first to last checkpoint")
    return fig, data


# ----- the study -----------------------------------------------------------------------------------

def run_spec(quick: bool) -> dict:
    spec = _study.committed_spec(NAME)
    if quick:
        spec = _study.quick_spec(spec, seeds=[0], config=QUICK, axes={"train.stages": [QUICK_STAGES, [], QUICK_STAGES]})
    return spec


def measure(trajs: list[Trajectory]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The tables (offsets, stage1, stage1_runner_up, stage2, stage3, joint) and S* per staged cell."""
    staged = [t for t in trajs if is_staged(t)]
    stars, stage1, stage2, stage3 = {}, [], [], []
    for traj in staged:
        stars[traj.cell], rows = stage1_rows(traj)
        stage1 += rows
        stage2 += stage2_rows(traj, stars[traj.cell])
        stage3.append(stage3_row(traj))
    offsets = [row for traj in trajs for row in offsets_rows(traj)]
    tables = {"offsets": pd.DataFrame(offsets), "stage1": pd.DataFrame(stage1), "stage2": pd.DataFrame(stage2),
              "stage3": pd.DataFrame(stage3), "joint": pd.DataFrame([joint_row(t) for t in trajs if not is_staged(t)])}
    tables["stage1_runner_up"] = tables["stage1"][tables["stage1"]["runner-up"]].drop(columns="runner-up") if stage1 else pd.DataFrame()
    return tables, stars


def overview(tables: dict[str, pd.DataFrame]) -> dict:
    """Means over seeds of the headline numbers."""
    def mean(frame: pd.DataFrame, column: str) -> float:
        return float(frame[column].astype(float).mean()) if len(frame) else math.nan

    runner, stage2, joint = tables["stage1_runner_up"], tables["stage2"], tables["joint"]
    return {
        "stage1_runner_up_rate_mean": mean(runner, "rate per epoch"),
        "stage1_runner_up_r2_mean": mean(runner, "R²"),
        "stage1_all_subsets_r2_min": float(tables["stage1"]["R²"].min()) if len(tables["stage1"]) else math.nan,
        "stage2_mass_end_mean": mean(stage2, "mass end"),
        "stage2_runs_on_true_parents": ({arm: int(part.groupby("seed")["S* = true parents"].first().sum())
                                         for arm, part in stage2.groupby("arm")} if len(stage2) else {}),
        "stage3_slope_mean": mean(tables["stage3"], "c1 (slope on log t)"),
        "stage3_r2_mean": mean(tables["stage3"], "R²"),
        "joint_orders": joint["order"].tolist() if len(joint) else [],
        "joint_paper_order": joint["paper order"].tolist() if len(joint) else [],
    }


def main(argv: list[str] | None = None) -> dict:
    args = _study.parse_args(NAME, "gih stage-wise dynamics from a non-aligned start", argv)
    sweep, sweep_seconds = _study.run_sweep_command(run_spec(args.quick), args.out, args.workers)
    trajs = [read_trajectory(cell, path) for cell, path in _study.cell_dirs(sweep).items()]
    tables, stars = measure(trajs)
    staged = [t for t in trajs if is_staged(t)]
    joint = [t for t in trajs if not is_staged(t)]

    page = ReportPage()
    page.add("setting", "Setting", f"<p>{intro()}</p>")
    page.add("offsets", "Heads' dominant offsets at the start and end of every stage", _study.table_html(page, tables["offsets"], "offsets.csv"))
    fig, data = stage1_figure(staged)
    page.add("stage1", "Stage I: p_S (FFN only)", page.figure(fig, "stage1_p.csv", data)
             + "<p>Fit of log(p_S*/p_S) against the epoch over the growth phase, runner-up subsets:</p>"
             + _study.table_html(page, tables["stage1_runner_up"], "stage1_runner_up.csv")
             + "<p>Every other subset:</p>" + _study.table_html(page, tables["stage1"], "stage1_fits.csv"))
    fig, data = stage2_figure(staged, stars)
    page.add("stage2", "Stage II: copier sharpening (RPE only)", page.figure(fig, "stage2_mass.csv", data)
             + _study.table_html(page, tables["stage2"], "stage2.csv"))
    fig, data = stage3_figure(staged)
    page.add("stage3", "Stage III: a against log t (a only)", page.figure(fig, "stage3_a.csv", data)
             + _study.table_html(page, tables["stage3"], "stage3_fits.csv"))
    fig, data = joint_figure(joint)
    page.add("joint", "Joint training: the order in which the roles form", page.figure(fig, "joint_curves.csv", data)
             + _study.table_html(page, tables["joint"], "joint.csv"))
    summary = {"quick": args.quick, "sweep_seconds": sweep_seconds, "n_runs": len(trajs),
               "cells": sorted(t.cell for t in trajs), "overview": overview(tables),
               **{name: frame.to_dict("records") for name, frame in tables.items()}}
    path = _study.write_study(page, args.out, NAME, "gih stage-wise dynamics", summary)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.max_colwidth", 40):
        for name in ("offsets", "stage1_runner_up", "stage2", "stage3", "joint"):
            print(f"\n== {name}\n{tables[name].to_string(index=False)}")
    print(f"\nsweep wall time {sweep_seconds:.1f} s; report: {path}")
    return summary


def intro() -> str:
    return ("TF(M=3, H=3, d=3, D=2), parents {1,2}, α = 0.1, full-batch SGD on 5,000 fixed sequences "
            "(the paper: 10,000), last-token loss; non-aligned start: w+ = w− = 0 plus N(0, 0.3²) noise "
            "on every position logit (from the seed), c_S = a = 0.01. Staged arm: FFN (lr 1), then RPE "
            "(lr 300), then a (lr 1); joint arm: all parameters, lr 1; staged (reference start): the staged "
            "arm from w+ = 3, w− = 0.1 without noise. Everything is read off the "
            "checkpoints' parameters. Stage I growth phase: from the stage start to the first checkpoint "
            f"with p_S* ≥ {GROWTH_CAP}. Half-rise: first checkpoint past half the change from first to last.")


if __name__ == "__main__":
    main()
