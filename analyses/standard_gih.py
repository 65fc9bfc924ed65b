"""Do standard transformers solve in-context n-grams with the generalized-induction-head circuit?

Usage:

    python analyses/standard_gih.py [--quick] [--out DIR] [--workers 2]

The sweep (``analyses/sweeps/standard_gih.json``, run with ``interp-icl sweep``) trains the
quickstart model (4 heads of 16 per layer, d_model 64, MLP 256, AdamW 6e-3 cosine, batch 32 of
fresh sequences) for 1,000 steps on parents {1, 2} and {1, 3}, vocabularies d = 3 and 5, with 1
layer (the control: no two-layer circuit can exist) and 2 layers, 5 seeds each, checkpoints every
100 steps plus the log-spaced ones. Each cell: training, the analysis passes, the three role
experiments (`interp_icl.patching.roles`) and the dynamics (half-rise step of each role over every
checkpoint, and their order).

On top of the cells' own verdicts the study measures:

* **the selector check's null distribution**: the selector experiment on every 2-layer cell's
  step-0 checkpoint (an untrained model: no selection can exist yet). Statistic: the largest
  relative change of the layer-2 query over the cell's non-parent offsets (the same offsets the
  trained model's check reads; δ = 1 is the query position's own token in a TransformerLens model
  and moves the query of any model). The invariance threshold is its 95th percentile; the selector verdict is re-evaluated with it (non-parent offsets must move the
  query by no more than the null's 95th percentile; the other parts of the check unchanged);
* rates with 95% Wilson intervals per setting for every verdict, the order in which the roles form,
  loss / Bayes, and the fitted classifier pattern's a, b and loss-gap recovery.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study  # noqa: E402

from interp_icl import load_run  # noqa: E402
from interp_icl.patching.roles import selector_role  # noqa: E402
from interp_icl.runs import run_roles  # noqa: E402
from interp_icl.seeding import generator, seeded  # noqa: E402
from interp_icl.sweeps import wilson_interval  # noqa: E402
from interp_icl.viz.report import ReportPage  # noqa: E402

NAME = "standard_gih"
NULL_QUANTILE = 0.95
AXES = ("task.parents", "task.vocab_size", "model.n_layers")
QUICK = {"train.steps": 40, "train.checkpoint_every": 20, "train.eval_every": 20, "train.n_eval": 64}
ROLE_VERDICTS = ("role.copier", "role.selector", "role.classifier")


def quick(spec: dict) -> dict:
    spec = _study.quick_spec(spec, seeds=[0], config=QUICK, axes={"task.parents": [[1, 2]], "task.vocab_size": [3]})
    spec["analysis"] = {**spec["analysis"], "n_sequences": 32}
    spec["roles"] = {"n_sequences": 32}
    return spec


def selector_changes(summary: dict) -> dict[str, float]:
    """{"max", "max_parent", "max_non_parent"} relative query changes of a selector summary."""
    offsets = (summary.get("offsets") or {}).values()
    parent = [o["query_change"] for o in offsets if o["kind"] == "parent"]
    other = [o["query_change"] for o in offsets if o["kind"] == "non-parent"]
    return {"max": max(parent + other, default=math.nan), "max_parent": max(parent, default=math.nan),
            "max_non_parent": max(other, default=math.nan)}


def null_distribution(dirs: dict[str, Path], n_sequences: int) -> pd.DataFrame:
    """The selector experiment at step 0 of every 2-layer cell, on the same sequences as the
    role experiments (`interp_icl.patching.experiment.roles_on_task`)."""
    rows = []
    for cell, run_dir in dirs.items():
        run = load_run(run_dir, 0)
        tokens = run.task.sample(n_sequences, generator(0, "roles", "clean")).tokens
        summary = selector_role(run.model.eval(), tokens, run.task.config.parents, seeded(0)).summary
        rows.append({"cell": cell, **selector_changes(summary)})
    return pd.DataFrame(rows)


def selector_with_threshold(summary: dict, threshold: float) -> bool | None:
    """The selector verdict with the invariance threshold replaced by `threshold` (the query
    change of every non-parent offset <= threshold); prediction invariance, parents carried and
    interchange accuracy as the experiment decided them. None for a model without the circuit."""
    if summary.get("holds") is None:
        return None
    offsets = (summary.get("offsets") or {}).values()
    invariant = all(o["query_change"] <= threshold for o in offsets if o["kind"] == "non-parent")
    interchange = summary["interchange_pairs"] > 0 and (
        summary["interchange_accuracy"] >= summary["thresholds"]["interchange_accuracy"]
    )
    return bool(invariant and summary["prediction_invariant"] and summary["parents_carried"] and interchange)


def rate(values: pd.Series) -> tuple[str, float]:
    decided = values.dropna().astype(bool)
    k, n = int(decided.sum()), len(decided)
    if n == 0:
        return "–", math.nan
    low, high = wilson_interval(k, n)
    return f"{k}/{n} [{low:.2f}, {high:.2f}]", k / n


def mean_se(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return "–"
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return f"{values.mean():.4g}" + ("" if math.isnan(se) else f" ± {se:.2g}")


def setting_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for values, group in runs.groupby(list(AXES), sort=True):
        row = dict(zip(("parents", "d", "layers"), values))
        row["runs"] = len(group)
        row["loss / Bayes"] = mean_se(group["loss_over_bayes"])
        if "sgram_parents_loss" in group:
            row["loss − pa-gram"] = mean_se(group["eval_loss"] - group["sgram_parents_loss"])
        for column in (*ROLE_VERDICTS, "selector (null threshold)", "verdict.stage_order_matches_paper"):
            if column in group:
                row[column], _ = rate(group[column])
        for column in ("role.classifier.fitted_recovery", "role.classifier.ideal_loss_rise", "role.selector.max_non_parent_query_change"):
            if column in group:
                row[column] = mean_se(group[column])
        if "dynamics.order" in group:
            counts = Counter(o for o in group["dynamics.order"] if isinstance(o, str))
            row["role order (runs)"] = "; ".join(f"{o} ×{k}" for o, k in counts.most_common()) or "–"
        rows.append(row)
    return pd.DataFrame(rows)


def null_figure(null: pd.DataFrame, trained: pd.DataFrame, threshold: float) -> tuple[go.Figure, pd.DataFrame]:
    fig = go.Figure()
    fig.add_histogram(x=null["max_non_parent"], name="step 0: largest non-parent change (null)", opacity=0.6, nbinsx=20)
    if not trained.empty:
        fig.add_histogram(x=trained["max_non_parent"], name="trained: largest non-parent change", opacity=0.6, nbinsx=20)
        fig.add_histogram(x=trained["max_parent"], name="trained: largest parent change", opacity=0.6, nbinsx=20)
    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"null q{int(NULL_QUANTILE * 100)} = {threshold:.3f}")
    fig.add_vline(x=0.1, line_dash="dot", annotation_text="fixed 0.1", annotation_position="bottom right")
    fig.update_layout(barmode="overlay", xaxis_title="relative change of the layer-2 query", yaxis_title="models")
    data = pd.concat([null.assign(kind="untrained (step 0)"), trained.assign(kind="trained")], ignore_index=True)
    return fig, data


def main(argv: list[str] | None = None) -> dict:
    args = _study.parse_args(NAME, "standard transformers and the gih circuit (issue 15)", argv)
    spec = _study.committed_spec(NAME)
    if args.quick:
        spec = quick(spec)
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    runs = sweep.results[sweep.results["status"] == "done"].copy()
    runs["task.parents"] = runs["task.parents"].map(lambda p: p.replace("[", "{").replace("]", "}").replace(" ", ""))
    dirs = _study.cell_dirs(sweep)
    two_layer = {c: dirs[c] for c in runs.loc[runs["model.n_layers"] == 2, "cell"]}
    n_roles = spec.get("roles", {}).get("n_sequences", 256)

    null = null_distribution(two_layer, n_roles)
    threshold = float(np.quantile(null["max_non_parent"], NULL_QUANTILE)) if not null.empty else math.nan
    trained_rows = []
    for cell, run_dir in two_layer.items():
        summary = run_roles(run_dir, "last", n_sequences=n_roles).summary()["selector"]
        trained_rows.append({"cell": cell, **selector_changes(summary),
                             "selector (null threshold)": selector_with_threshold(summary, threshold)})
    trained = pd.DataFrame(trained_rows)
    if not trained.empty:
        runs = runs.merge(trained[["cell", "selector (null threshold)"]], on="cell", how="left")
    settings = setting_table(runs)

    page = ReportPage()
    page.add("settings", "Rates per setting", "<p>Rates: k/n runs [95% Wilson interval]; means ± stderr over seeds.</p>"
             + _study.table_html(page, settings, "settings.csv"))
    fig, data = null_figure(null, trained, threshold)
    page.add("null", "Selector threshold from a null distribution",
             f"<p>Step-0 (untrained) 2-layer models: {len(null)}; the 95th percentile of their largest "
             f"non-parent query change is {threshold:.4f} (the fixed threshold until now: 0.1).</p>" + page.figure(fig, "selector_null.csv", data))
    columns = [c for c in runs.columns if c not in ("traceback",)]
    page.add("runs", "Every run", _study.table_html(page, runs[columns], "runs.csv"))
    null_stats = {"n": len(null), "quantile": NULL_QUANTILE, "threshold": threshold,
                  "mean": float(null["max_non_parent"].mean()) if len(null) else math.nan,
                  "max": float(null["max_non_parent"].max()) if len(null) else math.nan}
    summary = {"quick": args.quick, "sweep_seconds": sweep_seconds, "n_runs": len(runs),
               "selector_null": null_stats, "settings": settings.to_dict("records")}
    path = _study.write_study(page, args.out, NAME, "Standard transformers and the gih circuit", summary)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(settings.to_string(index=False))
    print(f"selector null: {json.dumps(null_stats)}")
    print(f"report: {path}")
    return summary


if __name__ == "__main__":
    main()
