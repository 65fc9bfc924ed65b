"""Rich tables for an Analysis: what `interp-icl analyze` and `quickstart` print."""

from __future__ import annotations

import math

from rich.table import Table

from interp_icl.analysis.pipeline import Analysis
from interp_icl.analysis.result import set_text


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def role_summary(analysis: Analysis, title: str) -> Table:
    """The three-role summary: one row per role, what the model does vs the truth."""
    table = Table(title=title)
    table.add_column("role")
    table.add_column("finding")
    table.add_column("truth / theory")
    r = {n: result for n, result in analysis.results.items() if "skipped" not in result.summary}
    for name, result in analysis.results.items():
        if name not in r:
            table.add_row(name, f"skipped: {result.summary['skipped']}", "-")
    parents = None
    if "copier" in r:
        s = r["copier"].summary
        parents = s["true_parents"]
        heads = ", ".join(
            f"{u}: r={h['attn_offset']} ({h['sharpness']:.2f})" for u, h in s["heads"].items() if h["is_copier"]
        ) or "no head above the copier threshold"
        finding = f"attention offsets {set_text(s['copied_attn_offsets'])} -> {heads}"
        if s["target_offset"] == 1:
            finding += f"; query-side parent offsets {set_text(s['copied_parent_offsets'])} + {{1}} via the residual"
        table.add_row("copier (layer 1)", finding, f"parents {set_text(parents)}" if parents else "-")
    if "selector" in r:
        s = r["selector"].summary
        conf = "confident" if s["confident"] else "NOT confident"
        finding = f"selected {set_text(s['selected_offsets'])} (margin {s['margin']:.2f}, {conf}; {s['best_unit']})"
        if "subset_weights" in s:
            w = s["subset_weights"]
            finding += f"; top p_S {set_text(w['top_offsets'])} = {w['top_weight']:.3f}"
        truth = "-"
        if s["true_parents"]:
            truth = f"parents {set_text(s['true_parents'])}: " + ("match" if s["selected_equals_parents"] else "differ")
        if "theory" in r:
            p = r["theory"].summary["predicted"]
            truth += f"; χ²-MI predicts {set_text(p['chi2_mi'])}, modified (reconstruction) {set_text(p['modified_chi2_mi'])}"
        table.add_row("selector (FFN / layer-2 q,k)", finding, truth)
    if "classifier" in r:
        s = r["classifier"].summary
        kl = s["kl_model_to_strategy"]
        finding = (
            f"closest strategy {s['closest_strategy']} (KL {kl[s['closest_strategy']]:.4f}); "
            f"closest S-gram {s['closest_sgram']} (KL {kl[s['closest_sgram']]:.4f})"
        )
        head = s.get("best_head")
        if head:
            h = s["heads"][head][s["best_head_for"]]
            finding += f"; {head} full-match mass {_fmt(h['full_match_mass'])}, logit gap {_fmt(h['logit_gap'], 2)}"
        truth = s.get("bayes_is", "-")
        table.add_row("classifier (layer 2)", finding, f"bayes = {truth}" if truth != "-" else truth)
    if "head_scores" in r:
        s = r["head_scores"].summary
        finding = (
            f"previous-token heads {', '.join(s['previous_token_heads']) or 'none'}; "
            f"induction heads {', '.join(s['induction_heads']) or 'none'} (mul score >= {s['threshold']})"
        )
        table.add_row("head scores", finding, "-")
    return table


def copier_table(analysis: Analysis) -> Table:
    s = analysis.results["copier"].summary
    table = Table(title="copier: layer-1 heads")
    for column in ("head", "attention offset r", "parent offset", "mass at r", "copier", "causal argmax r"):
        table.add_column(column, justify="left" if column == "head" else "right")
    for unit, h in s["heads"].items():
        table.add_row(unit, str(h["attn_offset"]), str(h["parent_offset"]), f"{h['sharpness']:.3f}",
                      "yes" if h["is_copier"] else "no", str(h["causal_offset"]))
    return table


def strategy_table(analysis: Analysis, top: int = 6) -> Table:
    s = analysis.results["classifier"].summary
    table = Table(title=f"classifier: KL(model ‖ strategy), targets t >= {s['strategy_window']}")
    table.add_column("strategy")
    table.add_column("KL (nats)", justify="right")
    for name, value in list(s["kl_model_to_strategy"].items())[:top]:
        table.add_row(name, f"{value:.4f}")
    resolved = "resolved" if s.get("closest_is_resolved") else "NOT resolved (< 2 stderr)"
    table.caption = f"margin to runner-up {s['margin_to_runner_up']:.4f} ± {_fmt(s['margin_stderr'], 4)}: {resolved}"
    return table


def theory_table(analysis: Analysis) -> Table:
    result = analysis.results["theory"]
    frame = result.table
    table = Table(title="theory: selection criteria (mean ± stderr over prior kernels)")
    table.add_column("S")
    table.add_column("χ²-MI", justify="right")
    table.add_column("modified χ²-MI (reconstruction)", justify="right")
    for unit in frame["unit"].unique():
        cells = []
        for metric in ("chi2_mi", "modified_chi2_mi"):
            row = frame[(frame["unit"] == unit) & (frame["metric"] == metric)].iloc[0]
            cells.append(f"{row['mean']:.4f} ± {row['stderr']:.4f}")
        table.add_row(unit, *cells)
    s = result.summary
    table.caption = (
        f"predicted: χ²-MI {set_text(s['predicted']['chi2_mi'])} (tied: {', '.join(set_text(t) for t in s['tied_with_best']['chi2_mi'])}); "
        f"modified {set_text(s['predicted']['modified_chi2_mi'])}"
    )
    return table


def analysis_tables(analysis: Analysis, title: str) -> list[Table]:
    tables = [role_summary(analysis, title)]
    ran = {n for n, r in analysis.results.items() if "skipped" not in r.summary}
    if "copier" in ran:
        tables.append(copier_table(analysis))
    if "classifier" in ran:
        tables.append(strategy_table(analysis))
    if "theory" in analysis.results:
        tables.append(theory_table(analysis))
    return tables
