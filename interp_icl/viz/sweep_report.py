"""The sweep report: one offline HTML page on a sweep directory, drawn from its two tables.

* settings: per setting its axis values, cells done / failed, loss / Bayes (mean ± stderr over
  seeds) and every verdict's rate with its 95% Wilson interval;
* heatmaps of each verdict's rate over every pair of axes that vary (counts pooled over the
  other axes);
* loss / Bayes per setting with standard-error bars;
* every cell with its status, error and a link to its own report (``runs/<cell>/report.html``,
  written by ``interp-icl report``).

It renders only: every number comes from ``results`` / ``summary`` (`interp_icl.sweeps`).
"""

from __future__ import annotations

import html
import json
from itertools import combinations

import pandas as pd
import plotly.graph_objects as go

from interp_icl.sweeps.aggregate import verdict_columns
from interp_icl.viz.report import ReportPage, write_page


def build_sweep_report(sweep) -> str:
    """Write ``<sweep dir>/report.html`` (data in ``report_data/``) and return its path."""
    page = ReportPage()
    results, summary, axes = sweep.results, sweep.summary, list(sweep.spec.axes)
    verdicts = verdict_columns(results) if not results.empty else []
    page.add("spec", "Sweep", _spec_section(sweep))
    page.add("settings", "Settings", _settings_section(page, summary, axes, verdicts))
    varying = [a for a in axes if summary[a].nunique() > 1] if not summary.empty else []
    if verdicts and not summary.empty:
        fig, data = verdict_rates_figure(summary, axes, verdicts)
        page.add("rates", "Verdict rates", page.figure(fig, "verdict_rates.csv", data))
    if len(varying) >= 2 and verdicts:
        maps = "".join(_heatmaps(page, results, list(pair), verdicts) for pair in combinations(varying, 2))
        page.add("heatmaps", "Verdict rates over two axes", maps)
    if "loss_over_bayes_mean" in summary.columns:
        page.add("loss", "Loss / Bayes per setting", _loss_section(page, summary, axes))
    page.add("cells", "Cells", _cells_section(page, sweep))
    path = sweep.path / "report.html"
    write_page(page, path, f"{sweep.path.name}: interp_icl sweep")
    return str(path)


def _label(row: pd.Series, axes: list[str]) -> str:
    return ", ".join(f"{a}={row[a]}" for a in axes) or "base"


def _spec_section(sweep) -> str:
    done = int((sweep.results["status"] == "done").sum()) if not sweep.results.empty else 0
    failed = ", ".join(sweep.failed) or "none"
    return (
        f"<p>{len(sweep.results)} cells, {done} done; failed: {html.escape(failed)}. Spec "
        "(<code>spec.json</code>):</p><pre>"
        + html.escape(json.dumps(sweep.spec.to_dict(), indent=1))
        + "</pre><p>Rates are over the seeds of a setting whose cells finished and decided the "
        "verdict, with 95% Wilson score intervals; means carry standard errors over seeds.</p>"
    )


def _settings_section(page: ReportPage, summary: pd.DataFrame, axes: list[str], verdicts: list[str]) -> str:
    page.data["summary.csv"] = summary
    if summary.empty:
        return "<p>No cells.</p>"
    header = [*axes, "cells (failed)", "loss / Bayes", *verdicts]
    rows = []
    for _, row in summary.iterrows():
        cells = [html.escape(str(row[a])) for a in axes]
        cells.append(f"{row['n_cells']} ({row['n_failed']})")
        cells.append(_mean(row, "loss_over_bayes"))
        cells += [_rate(row, v) for v in verdicts]
        rows.append(cells)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _mean(row: pd.Series, name: str) -> str:
    mean = row.get(f"{name}_mean")
    if mean is None or pd.isna(mean):
        return "–"
    stderr = row.get(f"{name}_stderr")
    return f"{mean:.4f}" + ("" if stderr is None or pd.isna(stderr) else f" ± {stderr:.4f}")


def _rate(row: pd.Series, name: str) -> str:
    n = row.get(f"{name}_n")
    if n is None or pd.isna(n) or n == 0:
        return "–"
    return f"{row[f'{name}_rate']:.2f} [{row[f'{name}_low']:.2f}, {row[f'{name}_high']:.2f}] (n={int(n)})"


def verdict_rates_figure(summary: pd.DataFrame, axes: list[str], verdicts: list[str]) -> tuple[go.Figure, pd.DataFrame]:
    """Each verdict's rate per setting with its 95% Wilson interval as error bars."""
    rows = []
    for _, row in summary.iterrows():
        for verdict in verdicts:
            if row.get(f"{verdict}_n"):
                rows.append({"setting": _label(row, axes), "verdict": verdict, "rate": row[f"{verdict}_rate"],
                             "low": row[f"{verdict}_low"], "high": row[f"{verdict}_high"], "n": int(row[f"{verdict}_n"])})
    data = pd.DataFrame(rows, columns=["setting", "verdict", "rate", "low", "high", "n"])
    fig = go.Figure()
    for setting, part in data.groupby("setting", sort=False):
        fig.add_bar(
            name=setting, x=part["verdict"], y=part["rate"], customdata=part["n"],
            error_y={"type": "data", "symmetric": False, "array": part["high"] - part["rate"],
                     "arrayminus": part["rate"] - part["low"]},
            hovertemplate="%{x}: %{y:.2f} (n=%{customdata})<extra>%{fullData.name}</extra>",
        )
    fig.update_layout(title="verdict rates over seeds (95% Wilson intervals)", barmode="group",
                      yaxis_range=[0, 1.05], height=420)
    return fig, data


def _heatmaps(page: ReportPage, results: pd.DataFrame, pair: list[str], verdicts: list[str]) -> str:
    x_axis, y_axis = pair
    done = results[results["status"] == "done"]
    parts = []
    for verdict in verdicts:
        decided = done.dropna(subset=[verdict])
        counts = decided.groupby([y_axis, x_axis])[verdict].agg(["sum", "count"]).reset_index()
        counts["rate"] = counts["sum"] / counts["count"]
        grid = counts.pivot(index=y_axis, columns=x_axis, values="rate")
        n = counts.pivot(index=y_axis, columns=x_axis, values="count")
        fig = go.Figure(
            go.Heatmap(
                z=grid.values, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index],
                zmin=0, zmax=1, colorscale="Greens", customdata=n.values,
                hovertemplate=f"{x_axis}=%{{x}}, {y_axis}=%{{y}}: rate %{{z:.2f}} (n=%{{customdata}})<extra></extra>",
            )
        )
        fig.update_layout(title=f"{verdict}: rate of True", height=320)
        fig.update_xaxes(title_text=x_axis)
        fig.update_yaxes(title_text=y_axis)
        data = counts.rename(columns={"sum": "true", "count": "n"})
        parts.append(page.figure(fig, f"heatmap_{verdict}_{x_axis}_{y_axis}.csv", data))
    return "".join(parts)


def _loss_section(page: ReportPage, summary: pd.DataFrame, axes: list[str]) -> str:
    labels = [_label(row, axes) for _, row in summary.iterrows()]
    fig = go.Figure(
        go.Bar(
            x=labels, y=summary["loss_over_bayes_mean"],
            error_y={"type": "data", "array": summary["loss_over_bayes_stderr"].fillna(0)},
        )
    )
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="Bayes")
    fig.update_layout(title="held-out loss / Bayes loss (mean ± stderr over seeds)", height=360)
    data = pd.DataFrame({"setting": labels, "mean": summary["loss_over_bayes_mean"],
                         "stderr": summary["loss_over_bayes_stderr"]})
    return page.figure(fig, "loss_over_bayes.csv", data)


def _cells_section(page: ReportPage, sweep) -> str:
    results = sweep.results
    page.data["results.csv"] = results
    if results.empty:
        return "<p>No cells.</p>"
    rows = []
    for _, row in results.iterrows():
        run = sweep.path / "runs" / row["cell"]
        link = f"runs/{row['cell']}/report.html"
        report = (
            f'<a href="{html.escape(link)}">report</a>' if (run / "report.html").is_file()
            else f"<code>interp-icl report {html.escape(str(run))}</code>"
        )
        ratio = row.get("loss_over_bayes")
        rows.append(
            "<tr>" + "".join(
                f"<td>{c}</td>" for c in (
                    html.escape(row["cell"]), row["setting"], row["seed"], html.escape(row["status"]),
                    "" if ratio is None or pd.isna(ratio) else f"{ratio:.4f}",
                    html.escape(str(row["error"])) if isinstance(row.get("error"), str) else "", report,
                )
            ) + "</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("cell", "setting", "seed", "status", "loss / Bayes", "error", "report"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


__all__ = ("build_sweep_report", "verdict_rates_figure")
