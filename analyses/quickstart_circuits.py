"""The quickstart model's circuit as a population: which edges of the GIH hypothesis does the
discovered circuit contain, over 10 seeds?

Usage:

    python analyses/quickstart_circuits.py [--quick] [--out DIR] [--workers 2]

The sweep (``analyses/sweeps/quickstart_circuits.json``, run with ``interp-icl sweep``) trains the
quickstart preset for seeds 0–9 and, in each cell, runs the role experiments and the ``circuit``
step: exact edge patching of every edge on 256 sequences, the faithfulness curve, the circuit =
the fewest top edges keeping 90% of the loss gap, and the GIH hypothesis drawn on the heads the
role experiments name (`interp_icl.circuits.hypothesis`). The study reads each cell's stored
circuit and reports, over seeds: the circuit's size, what the hypothesis's edges recover alone, for
every hypothesis edge type the rate of seeds whose circuit holds all its edges (95% Wilson
interval), and what the circuit adds (edges through an MLP, edges from or to heads the roles do not
name, other edges between named heads).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study

from interp_icl.runs import rundir
from interp_icl.runs.circuits import stored_circuits
from interp_icl.viz.circuits import faithfulness_figure
from interp_icl.viz.report import ReportPage

NAME = "quickstart_circuits"
TABLES = ("runs", "types", "curves")
COMMAND = "python analyses/quickstart_circuits.py"
QUICK = {"train.steps": 20, "train.checkpoint_every": 20, "train.eval_every": 20, "train.n_eval": 32}


def quick(spec: dict) -> dict:
    spec = _study.quick_spec(spec, seeds=[0], config=QUICK)
    spec["roles"] = {"n_sequences": 16}
    spec["circuit"] = {**spec["circuit"], "n_sequences": 16}
    return spec


def added_kind(edge: str, named: set[str]) -> str:
    """Where an edge the circuit adds runs: through an MLP, from or to a head the roles do not
    name, or between named heads (and the embedding)."""
    sender, receiver = edge.split("->")
    units = {sender, receiver.split(".")[0]}
    if any(u.startswith("MLP") for u in units):
        return "through an MLP"
    if units - named - {"embed", "logits"}:
        return "from or to an unnamed head"
    return "between named heads"


def study_tables(results: pd.DataFrame, dirs: dict[str, Path], method: str, n_sequences: int) -> dict[str, pd.DataFrame]:
    """runs: one row per seed; types: one row per (seed, hypothesis edge type); curves: every
    seed's faithfulness curve — from each cell's stored circuit of `method` on `n_sequences`."""
    runs, types, curves = [], [], []
    for row in results[results["status"] == "done"].itertuples():
        run = dirs[row.cell]
        (step,) = rundir.resolve_steps(run, "last")
        (circuit,) = [c for c in stored_circuits(run, step)
                      if c.method == method and c.settings["n_sequences"] == n_sequences]
        h = circuit.hypothesis
        named = {part.split(".")[0] for t in h["types"].values() for e in t["edges"] for part in e.split("->")}
        kinds = pd.Series([added_kind(e, named) for e in circuit.added], dtype=object).value_counts()
        runs.append({"seed": row.seed, "loss / Bayes": row.loss_over_bayes, "edges": len(circuit.edges),
                     "circuit edges": circuit.circuit_size, "hypothesis edges": h["edges"],
                     "hypothesis recovered": h["recovered"],
                     "hypothesis low": (h["interval"] or [None, None])[0], "hypothesis high": (h["interval"] or [None, None])[1],
                     "added": len(circuit.added),
                     **{f"added {k}": int(kinds.get(k, 0)) for k in ("through an MLP", "from or to an unnamed head", "between named heads")}})
        for name, t in h["types"].items():
            types.append({"seed": row.seed, "type": name, "edges": len(t["edges"]), "in circuit": t["in_circuit"],
                          "all in circuit": None if not t["edges"] else t["in_circuit"] == len(t["edges"])})
        curves.append(circuit.curve.assign(seed=row.seed))
    return {"runs": pd.DataFrame(runs), "types": pd.DataFrame(types),
            "curves": pd.concat(curves, ignore_index=True)[["seed", "edges", "recovered", "low", "high"]]}


def fragment(tables: dict[str, pd.DataFrame]) -> str:
    """The results section of the circuit population, from the result tables only."""
    runs, types = tables["runs"], tables["types"]
    edges = runs["circuit edges"]
    per_type = []
    for name, group in types.groupby("type", sort=False):
        decided = group["all in circuit"].dropna()
        per_type.append({"hypothesis edge type": f"`{name}`",
                         "seeds whose circuit holds all its edges": _study.rate_text(decided.astype(bool)),
                         "share of its edges in the circuit (mean ± se)": _study.mean_se_text(group["in circuit"] / group["edges"].where(group["edges"] > 0), 2),
                         "seeds where the roles name no head for it": int(group["all in circuit"].isna().sum())})
    per_seed = runs[["seed", "loss / Bayes", "circuit edges", "hypothesis edges", "added", "added through an MLP",
                     "added from or to an unnamed head", "added between named heads"]].copy()
    per_seed["loss / Bayes"] = per_seed["loss / Bayes"].map(lambda v: f"{v:.4f}")
    per_seed["hypothesis alone recovers [95%]"] = [
        f"{r['hypothesis recovered']:.3f} [{r['hypothesis low']:.3f}, {r['hypothesis high']:.3f}]" for _, r in runs.iterrows()]
    return (
        f"{len(runs)} seeds; {int(runs['edges'].iloc[0])} edges in the graph. Circuit = the fewest top edges by exact "
        f"score that keep 90% of the loss gap: median {edges.median():g} edges (range {edges.min()}–{edges.max()}; "
        f"mean {_study.mean_se_text(edges, 3)}). The GIH hypothesis's edges alone recover "
        f"{_study.mean_se_text(runs['hypothesis recovered'], 3)} of the loss gap (mean ± se over seeds).\n\n"
        "#### Each hypothesis edge type in the circuit\n\n" + _study.markdown_table(pd.DataFrame(per_type))
        + "\n#### Every seed\n\n" + _study.markdown_table(per_seed)
    )


def main(argv: list[str] | None = None) -> dict:
    args = _study.parse_args(NAME, "the quickstart circuit over seeds (issue 22)", argv)
    spec = _study.committed_spec(NAME)
    if args.quick:
        spec = quick(spec)
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    circuit = sweep.spec.circuit  # the circuit step's method and sizes, defaults filled in
    tables = study_tables(sweep.results, _study.cell_dirs(sweep), circuit.method, circuit.n_sequences)
    published = _study.publish_tables(NAME, args.quick, args.out, tables, fragment, COMMAND)

    page = ReportPage()
    page.add("results", "Results", _study.markdown_html(published[2]))
    curves = {f"seed {seed}": group for seed, group in tables["curves"].groupby("seed")}
    fig, data = faithfulness_figure(curves, 0.9)
    page.add("curves", "Faithfulness curves", page.figure(fig, "curves.csv", data))
    page.add("types", "Every seed's hypothesis edge types", _study.table_html(page, tables["types"], "types.csv"))
    return _study.finish_study(page, args, NAME, "The quickstart circuit over seeds", len(tables["runs"]), sweep_seconds, published)

if __name__ == "__main__":
    main()
