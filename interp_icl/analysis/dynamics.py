"""Dynamics: the order in which roles form, read off analyses of successive checkpoints.

The table comes from `interp_icl.runs.dynamics(run_dir, steps, settings)`: one long DataFrame
with columns ``step, pass, unit, metric, value, stderr, n`` plus the passes' label columns (one
row per checkpoint, pass, unit and metric).

`stage_order(table, final_summary)` reads one progress curve per role off that table:
  * selector — gih: p_S of the head subset that copies the true parents at the last checkpoint;
    other models: the best layer-2 head's full-match attention mass for the true parents;
  * copier — mean attention mass of the heads that are copiers of a true parent at the last
    checkpoint (all final copiers if none is), each at its final offset;
  * classifier — the layer-2 effective inverse temperature (``full_match_logit_gap`` of the best
    head for the true parents; a in the gih model once p_S is sharp);
and the *half-rise step* of each: the first checkpoint where the curve has covered half of its
change from the first to the last checkpoint. Roles sorted by half-rise step give the stage order;
the paper's order for gih runs is selector, copier, classifier. Roles with the same half-rise step
formed between the same two checkpoints: their order is undetermined (``ties``), and so is
``matches_paper_order`` (None).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from interp_icl.analysis.pipeline import Analysis
from interp_icl.analysis.result import set_label
from interp_icl.curves import half_rise_step
from interp_icl.errors import require

PAPER_STAGE_ORDER = ("selector", "copier", "classifier")


def long_table(analysis: Analysis) -> pd.DataFrame:
    """An Analysis's table with ``mean`` renamed ``value`` (the dynamics convention)."""
    return analysis.table().rename(columns={"mean": "value"})


def _curve(table: pd.DataFrame, **match: Any) -> pd.Series:
    """value by step for the rows matching every column=value in `match` (mean over matches)."""
    mask = pd.Series(True, index=table.index)
    for column, value in match.items():
        if column not in table.columns:
            return pd.Series(dtype=float)
        mask &= table[column] == value
    return table[mask].groupby("step")["value"].mean().sort_index()


def role_curves(table: pd.DataFrame, final: Analysis) -> dict[str, pd.Series]:
    """Progress curve of each role (see the module docstring)."""
    curves: dict[str, pd.Series] = {}
    measured = {n: r.summary for n, r in final.results.items() if "skipped" not in r.summary}
    copier_summary = measured.get("copier")
    if copier_summary is not None:
        true_parents = copier_summary.get("true_parents") or []
        copiers = {u: h for u, h in copier_summary["heads"].items() if h["is_copier"]}
        on_parents = {u: h for u, h in copiers.items() if h["parent_offset"] in true_parents}
        parts = []
        for head in (on_parents or copiers).values():
            layer = head.get("layer", copier_summary["layer"])  # several copier layers: per head
            match = {"pass": "copier", "metric": "attn_mass", "layer": layer, "head": head["head"]}
            parts.append(_curve(table, **match, offset=head["attn_offset"]))
        if parts:
            curves["copier"] = pd.concat(parts, axis=1).mean(axis=1)
    selector_summary = measured.get("selector")
    classifier_summary = measured.get("classifier")
    parents = (copier_summary or {}).get("true_parents")
    if selector_summary is not None and "subset_weights" in selector_summary and copier_summary is not None and parents:
        heads = copier_summary["heads"]
        parent_heads = sorted(h["head"] for h in heads.values() if h["is_copier"] and h["parent_offset"] in parents)
        curves["selector"] = _curve(table, **{"pass": "selector", "metric": "subset_weight", "heads": str(parent_heads)})
    elif classifier_summary is not None and classifier_summary.get("best_head"):
        h = classifier_summary["best_head_index"]
        curves["selector"] = _curve(table, **{"pass": "classifier", "metric": "full_match_mass", "head": h, "offset_set": _label(parents)})
    if classifier_summary is not None and classifier_summary.get("best_head") and parents:
        h = classifier_summary["best_head_index"]
        curves["classifier"] = _curve(table, **{"pass": "classifier", "metric": "full_match_logit_gap", "head": h, "offset_set": _label(parents)})
    return {role: c for role, c in curves.items() if len(c)}


def stage_order(table: pd.DataFrame, final: Analysis) -> dict[str, Any]:
    """Half-rise step per role, the roles in that order, and whether it is the paper's order."""
    require("step" in table.columns, "stage_order needs a dynamics table with a step column")
    halves = {role: half_rise_step(curve) for role, curve in role_curves(table, final).items()}
    known = {r: s for r, s in halves.items() if s is not None}
    order = sorted(known, key=lambda r: (known[r], PAPER_STAGE_ORDER.index(r)))
    ties = sorted({s for s in known.values() if list(known.values()).count(s) > 1})
    decidable = set(known) == set(PAPER_STAGE_ORDER) and not ties  # ties: below checkpoint resolution
    return {
        "half_rise_step": halves,
        "order": order,
        "paper_order": list(PAPER_STAGE_ORDER),
        "matches_paper_order": (tuple(order) == PAPER_STAGE_ORDER) if decidable else None,
        "ties": ties,
    }


def _label(offsets: list[int] | None) -> str | None:
    return set_label(offsets) if offsets else None
