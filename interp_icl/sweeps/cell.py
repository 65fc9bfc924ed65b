"""What one sweep cell does, and the row of numbers it leaves: train, then analyse, run the role
experiments and the default patching sweep, as the spec's ``do`` says.

The cell's run directory is an ordinary one (`interp_icl.runs`): training resumes from its newest
checkpoint and stored results are read back, so a cell interrupted anywhere continues where it
stopped. Torch runs on one thread in a cell (``torch.set_num_threads(1)``), so a cell's numbers
equal those of the same config trained and analysed alone on one thread.

The row (`cell_row`) holds the cell's name, setting index, seed and axis values; the final
losses and the loss / Bayes ratio; the analysis headline (selected set, margins, closest
strategy) and each verdict of `interp_icl.analysis.verdicts.verdict_rows` as ``verdict.<key>``;
each role experiment's verdict as ``role.<role>`` with its evidence numbers; the patching sweep's
largest effect; the circuit step's numbers (``circuit.*``, `_circuit`); wall time, status ("done" / "failed") and a one-line error.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

from interp_icl.errors import InterpICLError
from interp_icl.sweeps.spec import Cell, SweepSpec


def axis_value(value: Any) -> Any:
    """An axis value as a table cell: numbers, strings and booleans as they are, lists as JSON."""
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def run_cell(cell: Cell, spec: SweepSpec, run_dir: Path, threads: int = 1) -> dict[str, Any]:
    """Do the spec's steps for `cell` in `run_dir`; never raises: a failure is the row's
    ``status`` "failed" with a one-line ``error``."""
    import torch

    torch.set_num_threads(threads)
    row: dict[str, Any] = {"cell": cell.name, "setting": cell.index, "seed": cell.seed}
    row.update({key: axis_value(value) for key, value in cell.setting.items()})
    started = time.perf_counter()
    try:
        row.update(_steps(cell, spec, run_dir))
        row["status"], row["error"] = "done", None
    except Exception as exc:  # recorded, the sweep goes on
        message = str(exc) if isinstance(exc, InterpICLError) else f"{type(exc).__name__}: {exc}"
        row["status"], row["error"] = "failed", " ".join(message.split()) or type(exc).__name__
        row["traceback"] = traceback.format_exc(limit=8)
    row["wall_s"] = round(time.perf_counter() - started, 3)
    return row


def _steps(cell: Cell, spec: SweepSpec, run_dir: Path) -> dict[str, Any]:
    from interp_icl.runs import open_run

    out: dict[str, Any] = {}
    final = open_run(cell.config, run_dir, resume=True, progress=False).run().final
    out.update(_losses(final))
    if "analyze" in spec.do:
        out.update(_analysis(run_dir, spec))
    if "roles" in spec.do:
        out.update(_roles(run_dir, spec))
    if "patch" in spec.do:
        out.update(_patch(run_dir, spec))
    if "dynamics" in spec.do:
        out.update(_dynamics(run_dir, spec))
    if "circuit" in spec.do:
        out.update(_circuit(run_dir, spec))
    return out


BAYES_LOSS_FLOOR = 1e-9  # below this the Bayes loss is rounding error (noiseless regression: 0)


def _losses(final: dict[str, Any]) -> dict[str, Any]:
    """The final losses; loss / Bayes only where the Bayes loss is not zero up to rounding (a
    noiseless regression's least-squares loss is ~1e-15, and a ratio to it means nothing)."""
    keys = ("step", "eval_loss", "eval_loss_last", "bayes_loss", "bayes_loss_last",
            "sgram_parents_loss", "unigram_loss", "accuracy", "icl_accuracy", "iwl_accuracy")
    out = {key: final[key] for key in keys if key in final}
    if final.get("bayes_loss") is not None and final["bayes_loss"] > BAYES_LOSS_FLOOR:
        out["loss_over_bayes"] = final["eval_loss"] / final["bayes_loss"]
    return out


def _analysis(run_dir: Path, spec: SweepSpec) -> dict[str, Any]:
    from interp_icl.analysis.pipeline import AnalysisSettings
    from interp_icl.analysis.result import set_text
    from interp_icl.runs import analyze_checkpoint

    settings = AnalysisSettings(passes=tuple(spec.analysis.passes), n_sequences=spec.analysis.n_sequences,
                                n_kernels=spec.analysis.n_kernels)
    headline = analyze_checkpoint(run_dir, "last", settings).headline()
    out: dict[str, Any] = {}
    if "selected_offsets" in headline:
        out["selected_set"] = set_text(headline["selected_offsets"])
        out["selection_margin"] = headline["selection_margin"]
    if "copied_attn_offsets" in headline:
        out["copied_offsets"] = set_text(headline["copied_attn_offsets"])
    for key in ("closest_strategy", "closest_sgram"):
        if key in headline:
            out[key] = headline[key]
    for criterion, predicted in headline.get("theory_predicted", {}).items():
        out[f"theory_{criterion}"] = set_text(predicted)
    out.update({f"verdict.{key}": holds for key, holds in headline.get("verdicts", {}).items()})
    return out


def _roles(run_dir: Path, spec: SweepSpec) -> dict[str, Any]:
    from interp_icl.runs import run_roles

    report = run_roles(run_dir, "last", n_sequences=spec.roles.n_sequences)
    out: dict[str, Any] = {}
    for role, result in report.results.items():
        out[f"role.{role}"] = result.holds
        for check in result.checks:
            out[check.key] = check.holds
            out[f"{check.key}.measured"] = check.measured
        out[f"other_heads.{role}"] = ",".join(h.unit for h in result.other_heads) or None
    if report.hypothesis is not None:
        out["hypothesis.recovered"] = report.hypothesis.recovered
    return out


def _patch(run_dir: Path, spec: SweepSpec) -> dict[str, Any]:
    """The largest effect of the default z-by-position patching sweep (one per layer when layers
    differ in head count), stored in the run like `interp-icl report` stores it."""
    from interp_icl.runs import patch_sweeps, resolve_steps

    (step,) = resolve_steps(run_dir, "last")
    best: tuple[float, str] = (-1.0, "")
    for sweep in patch_sweeps(run_dir, step):
        table = sweep.table
        top = table.loc[table["effect"].abs().idxmax()]
        best = max(best, (abs(float(top["effect"])), _unit(top)))
    return {"patch.max_abs_effect": best[0], "patch.top_unit": best[1]}


def _dynamics(run_dir: Path, spec: SweepSpec) -> dict[str, Any]:
    """The half-rise step of each role's curve over every checkpoint and their order
    (`interp_icl.analysis.dynamics.stage_order`): ``dynamics.half_rise.<role>``,
    ``dynamics.order`` ("selector<classifier<copier"; "=" joins roles that rise at the same
    checkpoint) and ``verdict.stage_order_matches_paper`` (None when undetermined)."""
    from interp_icl.analysis.dynamics import PAPER_STAGE_ORDER, stage_order
    from interp_icl.analysis.pipeline import AnalysisSettings
    from interp_icl.models import layout
    from interp_icl.runs import dynamics, load_run

    if not layout(load_run(run_dir).model).has_circuit:
        return {"dynamics.order": None}  # no two-layer circuit (a 1-layer model): nothing to order
    settings = AnalysisSettings(passes=("copier", "selector", "classifier"), n_sequences=spec.analysis.n_sequences)
    table, analyses = dynamics(run_dir, "all", settings)
    final = analyses[max(analyses)]
    order = stage_order(table, final)
    halves = order["half_rise_step"]
    # every role's column, None where its curve is missing (e.g. no head copies yet)
    out: dict[str, Any] = {f"dynamics.half_rise.{role}": halves.get(role) for role in PAPER_STAGE_ORDER}
    known = sorted((step, role) for role, step in halves.items() if step is not None)
    text = ""
    for i, (step, role) in enumerate(known):
        text += ("" if i == 0 else ("=" if step == known[i - 1][0] else "<")) + role
    out["dynamics.order"] = text or None
    out["verdict.stage_order_matches_paper"] = order["matches_paper_order"]
    return out


def _circuit(run_dir: Path, spec: SweepSpec) -> dict[str, Any]:
    """The circuit's size (edges for FAITHFUL of the loss gap), what the GIH hypothesis's edges
    recover alone, and for each hypothesis edge type whether the circuit contains all its edges
    (``circuit.contains.<type>``, None where the roles name no head for it) and which share."""
    from interp_icl.runs.circuits import run_circuit

    c = spec.circuit
    report = run_circuit(run_dir, "last", c.method, c.ig_steps, c.n_sequences, threshold=c.threshold,
                         role_sequences=spec.roles.n_sequences)
    out: dict[str, Any] = {"circuit.edges_needed": report.circuit_size,
                           "circuit.hypothesis_edges": report.hypothesis["edges"],
                           "circuit.hypothesis_recovered": report.hypothesis["recovered"],
                           "circuit.added_edges": len(report.added)}
    for name, t in report.hypothesis["types"].items():
        total = len(t["edges"])
        out[f"circuit.contains.{name}"] = None if total == 0 else t["in_circuit"] == total
        out[f"circuit.share.{name}"] = None if total == 0 else t["in_circuit"] / total
    return out


def _unit(row) -> str:
    parts = [f"{axis}{int(row[axis])}" for axis in ("layer", "head", "pos") if axis in row.index]
    return " ".join(parts)
