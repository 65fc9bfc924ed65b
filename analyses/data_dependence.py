"""What decides in-context vs in-weights learning in Reddy (ICLR 2024)'s classification task?

Usage:

    python analyses/data_dependence.py [--quick] [--part all|grid|k512] [--out DIR] [--workers 2]

Two committed sweeps, each run with ``interp-icl sweep`` (`_study.run_sweep_command`):

* the grid (``analyses/sweeps/data_dependence.json``, OUT/grid/): one factor at a time around a
  base — the ``abrupt-learning`` preset's task (K = 2^14, L = 32, N = 8, D = 63, ε = 0.1, α = 0,
  every sequence bursty with B = 2) and optimiser (Adam lr 1e-3, batch 128) with a smaller network
  (d_model = d_head = d_mlp = 64) trained for 3000 steps, evaluated every 50. Burstiness: no bursty
  sequences (p_bursty = 0: contexts drawn i.i.d., the target's class rarely among them), B = 1, 2, 4;
  classes K = 32, 512, 2048, 2^14; within-class noise ε = 0.1, 0.5, 1; Zipf exponent α = 0, 1, 2.
  Two seeds per setting.
* the K = 512 re-measure (``analyses/sweeps/data_dependence_k512.json``, OUT/k512/): the
  ``abrupt-learning`` preset itself (d_model = 128, 2000 steps, evaluation every 25) with K = 512,
  the paper's number of classes, on the corrected sampler (bursty contexts with distinct labels);
  three seeds.

Per cell, from the trainer's evaluations (``metrics.jsonl``; 512 fixed sequences per set):

* final ICL accuracy (novel classes), IWL accuracy (training classes, the target's class absent
  from the context) and training accuracy: the mean of the last `FINAL_EVALS` evaluations;
* the ICL threshold: halfway between the context-label plateau max(1/L, B/N) — a random pick among
  the context's N/B labels scores B/N on the ICL set without any item matching — and 1; the IWL
  threshold: halfway between chance 1/L and 1. "ICL learned" / "IWL learned": the final accuracy
  is at or above its threshold;
* ICL onset / IWL onset: the first evaluation step at which the accuracy, smoothed by the median
  of each evaluation and its two neighbours, reaches its threshold (`onset_step`; None if never);
  "memorises first": the IWL onset exists and comes before the ICL onset (or ICL never appears).

Per setting: mean ± stderr over seeds of every number, the "learned" rates with 95% Wilson
intervals, and the paper's qualitative claims judged by `favours` (a difference of means larger
than twice its standard error). ``--quick`` runs the first `QUICK_SETTINGS` settings of the grid and
the K = 512 cell with one seed and a few steps of a tiny network: the mechanics, not the answer.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study

from interp_icl.curves import smoothed
from interp_icl.errors import require
from interp_icl.runs import rundir
from interp_icl.sweeps import wilson_interval
from interp_icl.viz.report import ReportPage

NAME = "data_dependence"
K512 = "data_dependence_k512"
FINAL_EVALS = 4  # final accuracies: mean of the last four evaluations
FACTOR_KEYS = ("task.p_bursty", "task.burstiness", "task.n_classes", "task.epsilon", "task.zipf_alpha")
BASE = {"task.p_bursty": 1.0, "task.burstiness": 2, "task.n_classes": 16384, "task.epsilon": 0.1,
        "task.zipf_alpha": 0.0}
FACTORS = {  # factor: (the keys it varies, its symbol for labels)
    "burstiness": (("task.p_bursty", "task.burstiness"), "B"),
    "classes": (("task.n_classes",), "K"),
    "noise": (("task.epsilon",), "ε"),
    "zipf": (("task.zipf_alpha",), "α"),
}
QUICK_SETTINGS = 2
QUICK = {"train.steps": 30, "train.eval_every": 5, "train.n_eval": 64, "train.checkpoint_every": 30,
         "model.d_model": 16, "model.d_head": 16, "model.d_mlp": 16}


# ----------------------------------------------------------------------------- per-cell numbers
def onset_step(curve: pd.Series, threshold: float) -> int | None:
    """First step (the index of `curve`, ascending) at which the median-of-3 smoothed curve is at
    or above `threshold`; None if it never is (or the curve is empty)."""
    curve = curve.dropna().sort_index()
    reached = curve[smoothed(curve) >= threshold]
    return int(reached.index[0]) if len(reached) else None


def icl_threshold(n_labels: int, n_pairs: int, burstiness: int) -> float:
    """Halfway between the context-label plateau max(1/L, B/N) and 1."""
    require(n_labels >= 2 and n_pairs >= 1 and burstiness >= 1, "need L >= 2, N >= 1, B >= 1")
    plateau = max(1 / n_labels, burstiness / n_pairs)
    return (plateau + 1) / 2


def iwl_threshold(n_labels: int) -> float:
    """Halfway between chance 1/L and 1."""
    require(n_labels >= 2, f"need L >= 2, got {n_labels}")
    return (1 / n_labels + 1) / 2


def cell_numbers(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """The numbers of one finished cell (module docstring) and its evaluation curves (step,
    icl_accuracy, iwl_accuracy, accuracy, context_label_accuracy)."""
    task = rundir.read_config(run_dir).task
    metrics = pd.DataFrame(rundir.read_metrics(run_dir))
    metrics = metrics.dropna(subset=["icl_accuracy"]).set_index("step").sort_index()
    require(len(metrics) > 0, f"{run_dir}: no evaluation rows in metrics.jsonl")
    icl_level = icl_threshold(task.n_labels, task.n_pairs, task.burstiness)
    iwl_level = iwl_threshold(task.n_labels)

    def final(column: str) -> float:
        return float(metrics[column].iloc[-FINAL_EVALS:].mean())

    icl_onset = onset_step(metrics["icl_accuracy"], icl_level)
    iwl_onset = onset_step(metrics["iwl_accuracy"], iwl_level)
    numbers = {
        "steps": int(metrics.index[-1]),
        "final_icl_accuracy": final("icl_accuracy"),
        "final_iwl_accuracy": final("iwl_accuracy"),
        "final_train_accuracy": final("accuracy"),
        "final_context_label_accuracy": final("context_label_accuracy"),
        "icl_threshold": icl_level,
        "iwl_threshold": iwl_level,
        "icl_learned": final("icl_accuracy") >= icl_level,
        "iwl_learned": final("iwl_accuracy") >= iwl_level,
        "icl_onset": icl_onset,
        "iwl_onset": iwl_onset,
        "memorises_first": iwl_onset is not None and (icl_onset is None or iwl_onset < icl_onset),
    }
    columns = ["icl_accuracy", "iwl_accuracy", "accuracy", "context_label_accuracy"]
    return numbers, metrics[columns].reset_index()


def factor_of(setting: dict) -> str:
    """The factor a grid setting varies ("base" for the base); a setting that varies two factors
    is refused."""
    changed = [key for key in FACTOR_KEYS if not math.isclose(float(setting[key]), float(BASE[key]))]
    if not changed:
        return "base"
    factors = [name for name, (keys, _) in FACTORS.items() if set(changed) <= set(keys)]
    require(len(factors) == 1, f"a grid setting must vary one factor from the base, got {changed}")
    return factors[0]


def setting_label(setting: dict) -> str:
    """E.g. "K = 512", "B = 4", "p_bursty = 0", "ε = 0.5", "α = 1" (the base: its full label)."""
    if float(setting["task.p_bursty"]) == 0:
        return "p_bursty = 0"
    return (f"B = {int(setting['task.burstiness'])}, K = {int(setting['task.n_classes'])}, "
            f"ε = {float(setting['task.epsilon']):g}, α = {float(setting['task.zipf_alpha']):g}")


def short_label(setting: dict) -> str:
    factor = factor_of(setting)
    if factor == "base":
        return "base"
    if factor == "burstiness":
        if float(setting["task.p_bursty"]) == 0:
            return "p_bursty = 0"
        return f"B = {int(setting['task.burstiness'])}"
    (key,), symbol = FACTORS[factor]
    return f"{symbol} = {float(setting[key]):g}"


# ----------------------------------------------------------------------------- aggregation
def mean_stderr(values: pd.Series) -> tuple[float, float, int]:
    """Mean, standard error (sample sd / √n; NaN for n < 2) and n of the non-missing values."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan, n


def rate(flags: pd.Series) -> dict:
    k, n = int(flags.astype(bool).sum()), len(flags)
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "low": low, "high": high}


def setting_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: factor, label, seeds, mean ± stderr of the final accuracies and onsets
    (onsets over the seeds that reached them), the learned / memorises-first rates with Wilson
    intervals."""
    rows = []
    for label, group in cells.groupby("label", sort=False):
        row = {"factor": group["factor"].iloc[0], "label": label, "seeds": len(group)}
        for column in ("final_icl_accuracy", "final_iwl_accuracy", "final_train_accuracy",
                       "icl_onset", "iwl_onset"):
            mean, stderr, n = mean_stderr(group[column])
            row[f"{column}_mean"], row[f"{column}_stderr"], row[f"{column}_n"] = mean, stderr, n
        for column in ("icl_learned", "iwl_learned", "memorises_first"):
            r = rate(group[column])
            row[f"{column}_rate"], row[f"{column}_low"], row[f"{column}_high"] = r["rate"], r["low"], r["high"]
            row[f"{column}_k"] = r["k"]
        rows.append(row)
    return pd.DataFrame(rows)


def ladder(settings: pd.DataFrame, factor: str) -> pd.DataFrame:
    """The settings of one factor with the base, ordered from least to most of the factor
    (burstiness: p_bursty = 0, then B ascending)."""
    part = settings[settings["factor"].isin([factor, "base"])].copy()
    if factor == "burstiness":
        part["_order"] = [(p, b) for p, b in zip(part["task.p_bursty"], part["task.burstiness"])]
    else:
        part["_order"] = part[FACTORS[factor][0][0]]
    return part.sort_values("_order", kind="stable").drop(columns="_order")


def favours(high: pd.Series, low: pd.Series, column: str) -> bool | None:
    """True if `column`'s mean is larger in setting `high` than in `low` by more than twice the
    standard error of the difference, False if smaller by that much, None otherwise (a missing
    stderr, one seed, counts as 0)."""
    diff = high[f"{column}_mean"] - low[f"{column}_mean"]
    se = math.sqrt(sum(0.0 if pd.isna(s) else s * s for s in (high[f"{column}_stderr"], low[f"{column}_stderr"])))
    if pd.isna(diff):
        return None
    if diff > 2 * se:
        return True
    if diff < -2 * se:
        return False
    return None


def fmt(row: pd.Series, column: str) -> str:
    mean, stderr = row[f"{column}_mean"], row[f"{column}_stderr"]
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f}" + ("" if pd.isna(stderr) else f" ± {stderr:.3f}")


def claims_table(settings: pd.DataFrame) -> pd.DataFrame:
    """The paper's qualitative claims (REFERENCE §3, issue 16) beside the measured means; a claim
    whose factor was not swept is left out."""
    rows = []

    def ends(factor: str) -> tuple[pd.Series, pd.Series] | None:
        part = ladder(settings, factor)
        return (part.iloc[0], part.iloc[-1]) if len(part) >= 2 else None

    def add(claim: str, factor: str, column: str, more_is_high: bool) -> None:
        pair = ends(factor)
        if pair is None:
            return
        low, high = pair
        if not more_is_high:
            low, high = high, low
        name = "ICL" if column == "final_icl_accuracy" else "IWL"
        rows.append({
            "claim (paper)": claim,
            "measured": f"{name} accuracy {fmt(high, column)} at {high['short']} vs {fmt(low, column)} at {low['short']}",
            "holds": favours(high, low, column),
        })

    add("bursty contexts favour ICL", "burstiness", "final_icl_accuracy", True)
    add("many classes favour ICL", "classes", "final_icl_accuracy", True)
    add("few classes favour in-weights learning", "classes", "final_iwl_accuracy", False)
    add("many rare classes (flat frequencies) favour ICL", "zipf", "final_icl_accuracy", False)
    add("a skewed (Zipf) class distribution favours in-weights learning", "zipf", "final_iwl_accuracy", True)
    near_one = settings[(settings["factor"] == "zipf") & (settings["task.zipf_alpha"] == 1.0)]
    if len(near_one):
        row = near_one.iloc[0]
        icl_ok = row["final_icl_accuracy_mean"] >= row["icl_level"]
        iwl_ok = row["final_iwl_accuracy_mean"] >= row["iwl_level"]
        rows.append({
            "claim (paper)": "a Zipf exponent near 1 lets ICL and in-weights learning coexist",
            "measured": (f"at α = 1: ICL {fmt(row, 'final_icl_accuracy')} (threshold {row['icl_level']:.3f}), "
                         f"IWL {fmt(row, 'final_iwl_accuracy')} (threshold {row['iwl_level']:.3f})"),
            "holds": bool(icl_ok and iwl_ok),
        })
    for column, name in (("final_icl_accuracy", "ICL"), ("final_iwl_accuracy", "IWL")):
        pair = ends("noise")
        if pair is not None:
            low, high = pair
            rows.append({"claim (paper)": f"(within-class noise ε, reported: {name} at the largest vs the smallest ε)",
                         "measured": f"{fmt(high, column)} at {high['short']} vs {fmt(low, column)} at {low['short']}",
                         "holds": None})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the sweeps
def measure_sweep(sweep, keys: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-cell numbers (with the setting's `keys`, factor and labels) and the curves of every
    finished cell of `sweep`."""
    dirs = _study.cell_dirs(sweep)
    results = sweep.results.set_index("cell")
    rows, curves = [], []
    for cell, run_dir in dirs.items():
        result = results.loc[cell]
        setting = {key: result[key] if key in result.index else BASE[key] for key in FACTOR_KEYS}
        numbers, curve = cell_numbers(run_dir)
        row = {"cell": cell, "seed": int(result["seed"]),
               **{key: setting[key] for key in FACTOR_KEYS},
               "factor": factor_of(setting) if keys == FACTOR_KEYS else "K = 512 re-measure",
               "label": setting_label(setting), "short": short_label(setting) if keys == FACTOR_KEYS else "K = 512",
               "wall_s": float(result["wall_s"]), **numbers}
        rows.append(row)
        curves.append(curve.assign(cell=cell, label=row["short"], seed=row["seed"]))
    cells = pd.DataFrame(rows)
    return cells, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def with_setting_columns(table: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """`setting_table` rows with each setting's factor values, short label and thresholds."""
    first = cells.groupby("label", sort=False).first()
    for key in (*FACTOR_KEYS, "short"):
        table[key] = [first.loc[label, key] for label in table["label"]]
    table["icl_level"] = [first.loc[label, "icl_threshold"] for label in table["label"]]
    table["iwl_level"] = [first.loc[label, "iwl_threshold"] for label in table["label"]]
    return table


def k512_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The K = 512 re-measure, one row per seed plus the rate of "memorises first"."""
    shown = cells[["seed", "final_icl_accuracy", "final_iwl_accuracy", "final_train_accuracy",
                   "final_context_label_accuracy", "icl_onset", "iwl_onset", "memorises_first", "steps"]]
    return shown.sort_values("seed").reset_index(drop=True)


def accuracy_figure(settings: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Final ICL and IWL accuracy (mean ± stderr over seeds) along each factor, one panel each."""
    factors = [f for f in FACTORS if (settings["factor"] == f).any()]
    fig = make_subplots(rows=1, cols=max(len(factors), 1), subplot_titles=factors)
    parts = []
    for col, factor in enumerate(factors, 1):
        part = ladder(settings, factor).assign(panel=factor)
        parts.append(part)
        for column, name in (("final_icl_accuracy", "ICL"), ("final_iwl_accuracy", "IWL")):
            fig.add_trace(go.Scatter(
                x=part["short"], y=part[f"{column}_mean"], mode="lines+markers", name=name,
                legendgroup=name, showlegend=col == 1,
                error_y={"type": "data", "array": part[f"{column}_stderr"].fillna(0), "visible": True}),
                row=1, col=col)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(height=380, title="final accuracy (mean ± stderr over seeds)")
    data = pd.concat(parts, ignore_index=True) if parts else settings
    return fig, data


def curves_figure(curves: pd.DataFrame, title: str) -> go.Figure:
    """ICL and IWL accuracy over steps, one line per cell."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["ICL accuracy (novel classes)", "IWL accuracy"])
    for (label, seed), part in curves.groupby(["label", "seed"], sort=False):
        for col, column in enumerate(("icl_accuracy", "iwl_accuracy"), 1):
            fig.add_trace(go.Scatter(x=part["step"], y=part[column], mode="lines", name=f"{label}, seed {seed}",
                                     legendgroup=f"{label}{seed}", showlegend=col == 1), row=1, col=col)
    fig.update_layout(height=420, title=title)
    return fig


def main(argv: list[str] | None = None) -> dict:
    def extra(parser) -> None:
        parser.add_argument("--part", choices=("all", "grid", "k512"), default="all",
                            help="run both sweeps (default), only the grid or only the K = 512 re-measure")

    args = _study.parse_args(NAME, "in-context vs in-weights learning over the data distribution (issue 16)",
                             argv, extra)
    page = ReportPage()
    summary: dict = {"quick": args.quick, "part": args.part}
    if args.part in ("all", "grid"):
        spec = _study.committed_spec(NAME)
        if args.quick:
            zipped = spec["zip"][0]
            spec = _study.quick_spec(spec, seeds=[0], config=QUICK,
                                     axes={key: spec["axes"][key][:QUICK_SETTINGS] for key in zipped})
        sweep, seconds = _study.run_sweep_command(spec, args.out / "grid", args.workers)
        cells, curves = measure_sweep(sweep, FACTOR_KEYS)
        settings = with_setting_columns(setting_table(cells), cells)
        claims = claims_table(settings)
        shown = settings[["factor", "short", "seeds"]].copy()
        for column in ("final_icl_accuracy", "final_iwl_accuracy", "final_train_accuracy", "icl_onset", "iwl_onset"):
            shown[column] = [fmt(row, column) for _, row in settings.iterrows()]
        for column in ("icl_learned", "iwl_learned"):
            shown[column] = [f"{int(r[f'{column}_k'])}/{int(r['seeds'])} [{r[f'{column}_low']:.2f}, {r[f'{column}_high']:.2f}]"
                             for _, r in settings.iterrows()]
        page.add("claims", "The paper's claims beside the grid", _study.table_html(page, claims, "claims.csv"))
        page.add("settings", "Per setting (mean ± stderr over seeds; rates with 95% Wilson intervals)",
                 _study.table_html(page, shown, "settings_shown.csv") + _study.table_html(page, settings, "settings.csv"))
        fig, data = accuracy_figure(settings)
        page.add("figure", "Final accuracy along each factor", page.figure(fig, "accuracy_by_factor.csv", data))
        page.add("curves", "Grid curves", page.figure(curves_figure(curves, "grid: accuracy over steps"),
                                                      "grid_curves.csv", curves))
        page.add("cells", "Every grid cell", _study.table_html(page, cells, "cells.csv"))
        summary.update({"grid_sweep_seconds": seconds, "grid_cells": cells.to_dict("records"),
                        "settings": settings.to_dict("records"), "claims": claims.to_dict("records")})
        with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 90):
            print(shown.to_string(index=False))
            print(claims.to_string(index=False))
    if args.part in ("all", "k512"):
        spec = _study.committed_spec(K512)
        if args.quick:
            spec = _study.quick_spec(spec, seeds=[0], config=QUICK)
        sweep, seconds = _study.run_sweep_command(spec, args.out / "k512", args.workers)
        cells, curves = measure_sweep(sweep, ("task.n_classes",))
        table = k512_rows(cells)
        first = rate(table["memorises_first"])
        verdict = {"memorises_first": f"{first['k']} of {first['n']}", "rate": first["rate"],
                   "interval": [first["low"], first["high"]]}
        page.add("k512", "K = 512 re-measure (the abrupt-learning preset with K = 512)",
                 _study.table_html(page, table, "k512.csv")
                 + f"<p>memorises first (IWL onset before any ICL onset): {verdict['memorises_first']} "
                 f"[{first['low']:.2f}, {first['high']:.2f}]</p>"
                 + page.figure(curves_figure(curves, "K = 512: accuracy over steps"), "k512_curves.csv", curves))
        summary.update({"k512_sweep_seconds": seconds, "k512": table.to_dict("records"), "k512_verdict": verdict})
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            print(table.to_string(index=False))
            print("memorises first:", verdict)
    path = _study.write_study(page, args.out, NAME, "In-context vs in-weights learning: data dependence", summary)
    print(f"report: {path}")
    return summary


if __name__ == "__main__":
    main()
