"""Heatmaps of patching sweeps: one panel per layer (and per head for per-head sites)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp_icl.patching.result import PatchResult


def patch_heatmap(result: PatchResult, value: str = "effect") -> go.Figure:
    """Mean `value` ("effect", "mean" or "recovered") of every patch; hover shows the stderr.

    Layout by axes: (layer, pos) -> layer x position; (layer, pos, head) -> one panel per layer,
    head x position; (layer, head, dest_pos) -> same with destination position; (layer, head) and
    (src_head, dst_head) -> one panel.
    """
    title = f"{result.site} patching: {{value}} of {result.metric} (n = {result.n} sequences)"
    return table_heatmap(result.table, tuple(result.axes), title, value)


def table_heatmap(
    table: pd.DataFrame, axes: tuple[str, ...], title: str, value: str = "effect"
) -> go.Figure:
    """`patch_heatmap` from a stored `PatchResult.table` (e.g. read back from Parquet);
    ``{value}`` in `title` is replaced by the value shown."""
    if value not in table:
        value = "effect"
    err = "effect_stderr" if value == "effect" else "stderr"
    title = title.replace("{value}", value)
    if axes in (("layer", "pos", "head"), ("layer", "head", "dest_pos")):
        pos_axis = "pos" if "pos" in axes else "dest_pos"
        layers = list(dict.fromkeys(table["layer"]))
        fig = make_subplots(rows=len(layers), cols=1, subplot_titles=[f"layer {l}" for l in layers])
        for i, layer in enumerate(layers, start=1):
            part = table[table["layer"] == layer]
            grid = part.pivot(index="head", columns=pos_axis, values=value)
            errs = part.pivot(index="head", columns=pos_axis, values=err)
            fig.add_trace(_heat(grid, errs, coloraxis=True), row=i, col=1)
            fig.update_xaxes(title_text=pos_axis, row=i, col=1)
            fig.update_yaxes(title_text="head", row=i, col=1)
    else:
        rows, cols = {
            ("layer", "pos"): ("layer", "pos"),
            ("layer", "head"): ("layer", "head"),
            ("layer",): ("layer", "site"),
            ("src_head", "dst_head"): ("src_head", "dst_head"),
        }[axes]
        grid = table.pivot(index=rows, columns=cols, values=value)
        errs = table.pivot(index=rows, columns=cols, values=err)
        fig = go.Figure(_heat(grid, errs, coloraxis=True))
        fig.update_xaxes(title_text=cols)
        fig.update_yaxes(title_text=rows)
    fig.update_layout(
        title=title, coloraxis={"colorscale": "RdBu", "cmid": 0.0}, height=260 + 160 * len(fig.data)
    )
    return fig


def _heat(grid, errs, coloraxis: bool) -> go.Heatmap:
    return go.Heatmap(
        z=grid.values.round(6),
        x=[str(c) for c in grid.columns],
        y=[str(i) for i in grid.index],
        customdata=errs.values.round(6),
        hovertemplate="%{y} / %{x}: %{z:.4g} ± %{customdata:.2g}<extra></extra>",
        coloraxis="coloraxis" if coloraxis else None,
    )
