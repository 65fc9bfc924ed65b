"""Rich tables for an Analysis: what `interp-icl analyze` and `quickstart` print."""

from __future__ import annotations

import math

from rich.table import Table

from interp_icl.analysis.pipeline import Analysis
from interp_icl.analysis.result import set_text
from interp_icl.analysis.verdicts import VerdictRow, verdict_rows


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def role_summary(analysis: Analysis, title: str) -> Table:
    """The verdict rows of the analysis (`verdict_rows`): each role's measurement beside the
    truth, and whether it holds; head scores in the caption."""
    summaries = {name: result.summary for name, result in analysis.results.items()}
    return verdict_table(verdict_rows(summaries), title, head_scores=summaries.get("head_scores"))


def verdict_table(rows: list[VerdictRow], title: str, head_scores: dict | None = None) -> Table:
    """Rich table of verdict rows: quantity, model, truth, agrees (green / red)."""
    table = Table(title=title)
    for column in ("quantity", "model", "truth", "agrees"):
        table.add_column(column)
    for row in rows:
        colour = {True: "green", False: "red", None: "dim"}[row.holds]
        table.add_row(row.quantity, row.measured, row.expected, f"[{colour}]{row.verdict}[/{colour}]")
    if head_scores is not None:
        table.caption = (
            f"previous-token heads {', '.join(head_scores['previous_token_heads']) or 'none'}; "
            f"induction heads {', '.join(head_scores['induction_heads']) or 'none'} "
            f"(mul score >= {head_scores['threshold']})"
        )
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
    table.add_column("modified χ²-MI", justify="right")
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
