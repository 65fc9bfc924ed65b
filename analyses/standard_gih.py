"""Do standard transformers solve in-context n-grams with the generalized-induction-head circuit?

Usage:

    python analyses/standard_gih.py [--quick] [--out DIR] [--workers 2]

The sweep (``analyses/sweeps/standard_gih.json``, run with ``interp-icl sweep``) trains the
quickstart model (4 heads of 16 per layer, d_model 64, MLP 256, AdamW 6e-3 cosine, batch 32 of
fresh sequences) for 1,000 steps on parents {1, 2} and {1, 3}, vocabularies d = 3 and 5, with 1
layer (the control: no two-layer circuit can exist) and 2 layers, 5 seeds each, checkpoints every
100 steps plus the log-spaced ones. Each cell: training, the analysis passes, the three role
experiments (`interp_icl.roles`) and the dynamics (half-rise step of each role over every
checkpoint, and their order).

On top of the cells' own verdicts the study measures:

* **the checks on untrained models**: every role check on every 2-layer cell's step-0 checkpoint
  (no circuit can exist yet), on the same sequences as the trained model's checks. Every
  threshold sits on the side where such a model falls, so each check's pass rate on them should be
  near 0 — this is the measured side of each check's declared null;
* rates with 95% Wilson intervals per setting for every role and every check, the order in which
  the roles form, loss / Bayes, and each check's measured value (mean ± stderr over seeds).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study

from interp_icl import load_run
from interp_icl.roles import roles_on_task
from interp_icl.sweeps import wilson_interval
from interp_icl.viz.report import ReportPage

NAME = "standard_gih"
AXES = ("task.parents", "task.vocab_size", "model.n_layers")
QUICK = {"train.steps": 40, "train.checkpoint_every": 20, "train.eval_every": 20, "train.n_eval": 64}
ROLE_VERDICTS = ("role.copier", "role.selector", "role.classifier")


def quick(spec: dict) -> dict:
    spec = _study.quick_spec(spec, seeds=[0], config=QUICK, axes={"task.parents": [[1, 2]], "task.vocab_size": [3]})
    spec["analysis"] = {**spec["analysis"], "n_sequences": 32}
    spec["roles"] = {"n_sequences": 32}
    return spec


def untrained_checks(dirs: dict[str, Path], n_sequences: int) -> pd.DataFrame:
    """Every role check at step 0 of every 2-layer cell, on the sequences the trained model's
    checks use (`interp_icl.roles.roles_on_task`, seed 0): one row per (cell, check)."""
    rows = []
    for cell, run_dir in dirs.items():
        run = load_run(run_dir, 0)
        for role, result in roles_on_task(run.model.eval(), run.task, n_sequences, seed=0).items():
            rows.append({"cell": cell, "check": f"role.{role}", "holds": result.holds, "measured": math.nan})
            for c in result.checks:
                rows.append({"cell": cell, "check": c.key, "holds": c.holds,
                             "measured": math.nan if c.measured is None else c.measured})
    return pd.DataFrame(rows)


def untrained_table(null: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for check, group in null.groupby("check", sort=False):
        text, _ = rate(group["holds"])
        rows.append({"check": check, "untrained models passing": text, "measured (mean ± se)": mean_se(group["measured"])})
    return pd.DataFrame(rows)


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
        checks = [c for c in group.columns if c.startswith("role.") and c.count(".") == 2]
        for column in (*ROLE_VERDICTS, *checks, "verdict.stage_order_matches_paper"):
            if column in group:
                row[column], _ = rate(group[column])
        for column in [c for c in group.columns if c.startswith("role.") and c.endswith(".measured")]:
            row[column] = mean_se(group[column])
        if "dynamics.order" in group:
            counts = Counter(o for o in group["dynamics.order"] if isinstance(o, str))
            row["role order (runs)"] = "; ".join(f"{o} ×{k}" for o, k in counts.most_common()) or "–"
        rows.append(row)
    return pd.DataFrame(rows)


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

    null = untrained_checks(two_layer, n_roles)
    untrained = untrained_table(null) if not null.empty else pd.DataFrame()
    settings = setting_table(runs)

    page = ReportPage()
    page.add("settings", "Rates per setting", "<p>Rates: k/n runs [95% Wilson interval]; means ± stderr over seeds.</p>"
             + _study.table_html(page, settings, "settings.csv"))
    page.add("null", "The checks on untrained models",
             f"<p>Step-0 (untrained) 2-layer models: {null['cell'].nunique() if len(null) else 0}. Each check's "
             "threshold sits on the side where a model without the property falls, so these should fail.</p>"
             + _study.table_html(page, untrained, "untrained_checks.csv"))
    columns = [c for c in runs.columns if c not in ("traceback",)]
    page.add("runs", "Every run", _study.table_html(page, runs[columns], "runs.csv"))
    summary = {"quick": args.quick, "sweep_seconds": sweep_seconds, "n_runs": len(runs),
               "untrained_checks": untrained.to_dict("records"), "settings": settings.to_dict("records")}
    path = _study.write_study(page, args.out, NAME, "Standard transformers and the gih circuit", summary)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(settings.to_string(index=False))
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(untrained.to_string(index=False))
    print(f"report: {path}")
    return summary


if __name__ == "__main__":
    main()
