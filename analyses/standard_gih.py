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
from interp_icl.roles.console import check_line, head_line
from interp_icl.runs import run_roles
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


TABLES = ("runs", "untrained")
COMMAND = "python analyses/standard_gih.py"
ANALYSIS_VERDICTS = {  # analysis-pass verdict column -> what it says
    "verdict.copier_covers_parents": "copiers cover pa",
    "verdict.classifier_closest_strategy": "closest S-gram = pa",
    "verdict.selector_selected_set": "selected = pa",
}


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
    return pd.DataFrame(rows, columns=["cell", "check", "holds", "measured"])


def role_accounts(dirs: dict[str, Path], n_sequences: int) -> pd.DataFrame:
    """Per 2-layer cell, from its stored role results (`interp_icl.runs.run_roles`, what the
    sweep cell computed): the failed checks with their numbers, every head outside the role sets
    that matters with its account, and the hypothesis test's interval."""
    rows = []
    for cell, run_dir in dirs.items():
        report = run_roles(run_dir, "last", n_sequences=n_sequences)
        failed = [check_line(c) for r in report.results.values() for c in r.failed]
        heads = [f"{role}: {head_line(h)}" for role, r in report.results.items() for h in r.other_heads]
        h = report.hypothesis
        interval = h.interval if h is not None and h.interval is not None else (math.nan, math.nan)
        rows.append({"cell": cell, "failed checks": "; ".join(failed) or None,
                     "other heads that matter": "; ".join(heads) or None,
                     "hypothesis.low": interval[0], "hypothesis.high": interval[1]})
    return pd.DataFrame(rows, columns=["cell", "failed checks", "other heads that matter", "hypothesis.low", "hypothesis.high"])


def run_table(results: pd.DataFrame, accounts: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its setting, losses, the analysis verdicts, every role check (verdict and
    measured value), the hypothesis test and the accounts; "learned" = loss below the in-context
    parents-gram estimator's."""
    runs = results[results["status"] == "done"].copy()
    runs["parents"] = runs["task.parents"].map(lambda p: str(p).replace("[", "{").replace("]", "}").replace(" ", ""))
    runs["d"], runs["layers"] = runs["task.vocab_size"], runs["model.n_layers"]
    runs["learned"] = runs["eval_loss"] < runs["sgram_parents_loss"]
    keep = ["cell", "parents", "d", "layers", "seed", "eval_loss", "sgram_parents_loss", "loss_over_bayes", "learned",
            "selected_set", "copied_offsets", "closest_sgram", *ANALYSIS_VERDICTS,
            *[c for c in runs.columns if c.startswith("role.")], "hypothesis.recovered", "dynamics.order"]
    runs = runs[[c for c in keep if c in runs.columns]]
    return runs.merge(accounts, on="cell", how="left").sort_values(["parents", "d", "layers", "seed"])


def setting_label(row) -> str:
    return f"{row['parents']}, d = {row['d']}, {row['layers']} layer{'s' if row['layers'] > 1 else ''}"


def mark(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else "✓" if bool(value) else "✗"


def settings_markdown(runs: pd.DataFrame) -> str:
    rows = []
    for _, group in runs.groupby(["parents", "d", "layers"], sort=True):
        first = group.iloc[0]
        rows.append({
            "parents": first["parents"], "d": first["d"], "layers": first["layers"], "runs": len(group),
            "loss / Bayes": _study.mean_se_text(group["loss_over_bayes"], 4),
            "loss − pa-gram (nats)": _study.mean_se_text(group["eval_loss"] - group["sgram_parents_loss"], 3),
            "learned (beats pa-gram)": _study.rate_text(group["learned"]),
            **{role.removeprefix("role.") + " role": _study.rate_text(group[role]) if role in group else "–"
               for role in ROLE_VERDICTS},
            "hypothesis: recovered": _study.mean_se_text(group.get("hypothesis.recovered", pd.Series(dtype=float)), 3),
        })
    return _study.markdown_table(pd.DataFrame(rows))


def checks_markdown(runs: pd.DataFrame, learned_only: bool) -> str:
    """Checks × 2-layer settings: "k/n [Wilson 95%]; measured mean ± se" per cell."""
    two = runs[runs["layers"] == 2]
    if learned_only:
        two = two[two["learned"]]
    checks = [c for c in two.columns if c.startswith("role.") and not c.endswith(".measured")]
    columns = {}
    for _, group in two.groupby(["parents", "d"], sort=True):
        label = f"{group.iloc[0]['parents']}, d = {group.iloc[0]['d']} (n = {len(group)})"
        columns[label] = [
            _study.rate_text(group[c]) + ("" if f"{c}.measured" not in group else f"; {_study.mean_se_text(group[f'{c}.measured'], 3)}")
            for c in checks
        ]
    if not columns:
        return "(no run)\n"
    return _study.markdown_table(pd.DataFrame({"check": checks, **columns}))


def agreement_markdown(runs: pd.DataFrame) -> str:
    """Per 2-layer setting: runs where the analysis rows all agree with the truth, where every
    causal role holds, and the cross-tabulation of the two."""
    two = runs[runs["layers"] == 2].copy()
    two["analysis"] = two[list(ANALYSIS_VERDICTS)].fillna(False).astype(bool).all(axis=1)
    two["causal"] = two[list(ROLE_VERDICTS)].fillna(False).astype(bool).all(axis=1)
    rows = []
    for _, group in two.groupby(["parents", "d"], sort=True):
        a, c = group["analysis"], group["causal"]
        rows.append({"setting": f"{group.iloc[0]['parents']}, d = {group.iloc[0]['d']}", "runs": len(group),
                     "analysis: every row agrees": _study.rate_text(a), "causal: every role holds": _study.rate_text(c),
                     "both": int((a & c).sum()), "analysis only": int((a & ~c).sum()),
                     "causal only": int((~a & c).sum()), "neither": int((~a & ~c).sum())})
    return _study.markdown_table(pd.DataFrame(rows))


def per_run_markdown(runs: pd.DataFrame) -> str:
    two = runs[runs["layers"] == 2]
    rows = []
    for _, r in two.iterrows():
        low, high = r.get("hypothesis.low", math.nan), r.get("hypothesis.high", math.nan)
        recovered = r.get("hypothesis.recovered", math.nan)
        rows.append({
            "setting": f"{r['parents']}, d = {r['d']}", "seed": r["seed"], "loss / Bayes": f"{r['loss_over_bayes']:.3f}",
            "learned": mark(r["learned"]),
            "analysis: " + " / ".join(ANALYSIS_VERDICTS.values()): " ".join(mark(r.get(c)) for c in ANALYSIS_VERDICTS),
            "roles: copier / selector / classifier": " ".join(mark(r.get(c)) for c in ROLE_VERDICTS),
            "hypothesis [95%]": "–" if pd.isna(recovered) else f"{recovered:.3f} [{low:.3f}, {high:.3f}]",
            "failed checks": r.get("failed checks"),
            "other heads that matter": r.get("other heads that matter"),
        })
    return _study.markdown_table(pd.DataFrame(rows))


def order_markdown(runs: pd.DataFrame) -> str:
    two = runs[(runs["layers"] == 2) & runs["learned"]]
    rows = []
    for _, group in two.groupby(["parents", "d"], sort=True):
        counts = Counter(o for o in group.get("dynamics.order", pd.Series(dtype=object)) if isinstance(o, str))
        rows.append({"setting": f"{group.iloc[0]['parents']}, d = {group.iloc[0]['d']}", "learned runs": len(group),
                     "order of the half-rise steps (runs)": "; ".join(f"{o} ×{k}" for o, k in counts.most_common()) or "–"})
    return _study.markdown_table(pd.DataFrame(rows))


def untrained_markdown(untrained: pd.DataFrame) -> str:
    rows = []
    for check, group in untrained.groupby("check", sort=False):
        holds = group["holds"].map(lambda v: None if pd.isna(v) else bool(v) if not isinstance(v, str) else v == "True")
        rows.append({"check": check, "untrained models passing": _study.rate_text(holds),
                     "measured (mean ± se)": _study.mean_se_text(group["measured"], 3)})
    return _study.markdown_table(pd.DataFrame(rows))


def fragment(tables: dict[str, pd.DataFrame]) -> str:
    """The results section of docs/standard_gih.md, from the result tables only."""
    runs, untrained = tables["runs"], tables["untrained"]
    two = runs[runs["layers"] == 2]
    return (
        f"{len(runs)} runs ({int((runs['layers'] == 1).sum())} with 1 layer, {len(two)} with 2); "
        f"{int(two['learned'].sum())} of the 2-layer runs and {int(runs.loc[runs['layers'] == 1, 'learned'].sum())} of the "
        "1-layer runs beat the in-context parents-gram estimator (\"learned\"). Rates: k/n runs [95% Wilson "
        "interval]; means ± standard errors over runs.\n\n"
        "#### Per setting\n\n" + settings_markdown(runs)
        + "\n#### Every check, 2-layer runs (rate; measured value)\n\n" + checks_markdown(runs, learned_only=False)
        + "\nThe same over the runs that learned:\n\n" + checks_markdown(runs, learned_only=True)
        + "\n#### The checks on untrained models (step 0 of every 2-layer run: the measured null)\n\n"
        + untrained_markdown(untrained)
        + "\n#### Analysis rows against causal verdicts\n\n"
        "The analysis agrees when the copiers cover the parents, the closest S-gram is the parents' and the "
        "selector pass selects the parents; causal when every role holds.\n\n" + agreement_markdown(runs)
        + "\n#### Order in which the roles form (runs that learned)\n\n" + order_markdown(runs)
        + "\n#### Every 2-layer run\n\n" + per_run_markdown(runs)
    )


def main(argv: list[str] | None = None) -> dict:
    args = _study.parse_args(NAME, "standard transformers and the gih circuit (issue 15)", argv)
    spec = _study.committed_spec(NAME)
    if args.quick:
        spec = quick(spec)
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    dirs = _study.cell_dirs(sweep)
    results = sweep.results
    two_layer = {c: dirs[c] for c in results.loc[(results["status"] == "done") & (results["model.n_layers"] == 2), "cell"]}
    n_roles = spec.get("roles", {}).get("n_sequences", 256)

    untrained = untrained_checks(two_layer, n_roles)
    runs = run_table(results, role_accounts(two_layer, n_roles))
    published = _study.publish_tables(NAME, args.quick, args.out, {"runs": runs, "untrained": untrained}, fragment, COMMAND)

    page = ReportPage()
    page.add("results", "Results", _study.markdown_html(published[2]))
    page.add("runs", "Every run (all columns)", _study.table_html(page, runs, "runs.csv"))
    page.add("null", "The checks on untrained models", _study.table_html(page, untrained, "untrained_checks.csv"))
    return _study.finish_study(page, args, NAME, "Standard transformers and the gih circuit", len(runs), sweep_seconds, published)


if __name__ == "__main__":
    main()
