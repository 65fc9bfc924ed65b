"""Plotly figures of a run's metrics and analysis results.

Every builder takes tables the library already produced (metrics.jsonl rows, an analysis table,
the dynamics table) and returns ``(figure, data)``: the figure and the tidy DataFrame it plots,
which the report writes next to itself. Nothing here computes a measurement.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp_icl.analysis.result import set_label, set_text

BASELINES = {
    "eval_loss": "model",
    "bayes_loss": "Bayes-optimal",
    "sgram_parents_loss": "S-gram, true parents",
    "unigram_loss": "unigram",
}
ROLE_UNITS = {
    "copier": "attention mass on the parent offsets (layer 1)",
    "selector": "p_S of the parent heads / full-match mass (layer 2)",
    "classifier": "effective inverse temperature (layer 2)",
}


def loss_curves(metrics: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Held-out loss (nats per token, all targets) against the oracles, by training step."""
    columns = [c for c in BASELINES if c in metrics]
    data = metrics[["step", *columns]].rename(columns=BASELINES)
    fig = go.Figure()
    for name in data.columns[1:]:
        fig.add_trace(go.Scatter(x=data["step"] + 1, y=data[name], mode="lines+markers", name=name))
    fig.update_layout(title="held-out loss (nats per token) by training step", height=380)
    fig.update_xaxes(type="log", title_text="step + 1")
    fig.update_yaxes(title_text="loss")
    return fig, data


def role_curves(
    curves: dict[str, pd.Series], half_rise: dict[str, int | None]
) -> tuple[go.Figure, pd.DataFrame]:
    """One panel per role: its progress curve over checkpoints, a dashed line at its half-rise step."""
    roles = list(curves)
    fig = make_subplots(
        rows=len(roles),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f"{r}: {ROLE_UNITS.get(r, '')}" for r in roles],
    )
    frames = []
    for i, role in enumerate(roles, start=1):
        curve = curves[role]
        frames.append(pd.DataFrame({"role": role, "step": curve.index, "value": curve.values}))
        fig.add_trace(
            go.Scatter(x=curve.index + 1, y=curve.values, mode="lines+markers", name=role),
            row=i,
            col=1,
        )
        step = half_rise.get(role)
        if step is not None:
            fig.add_vline(x=step + 1, line_dash="dash", row=i, col=1)
    fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="step + 1", row=len(roles), col=1)
    fig.update_layout(
        title="when each role forms (dashed: half-rise step)", height=220 * len(roles) + 80
    )
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return fig, data


def copier_heatmap(table: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    """Copier-layer attention mass per head and attention offset r (query i -> key i - r); one
    row per head of every layer before the last (a ``layer`` column when there are several)."""
    data = table[(table["pass"] == "copier") & (table["metric"] == "attn_mass")]
    layers = sorted(int(x) for x in data["layer"].unique())
    columns = ["head", "offset", "mean", "stderr"] if len(layers) == 1 else ["layer", "head", "offset", "mean", "stderr"]
    data = data[columns].astype({c: int for c in ("layer", "head", "offset") if c in columns})
    rows = data.assign(layer=layers[0]) if len(layers) == 1 else data
    grid = rows.pivot(index=["layer", "head"], columns="offset", values="mean")
    fig = go.Figure(
        go.Heatmap(
            z=grid.values.round(4),
            x=[str(c) for c in grid.columns],
            y=[f"L{layer}H{head}" for layer, head in grid.index],
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="%{y}, offset %{x}: %{z:.3f}<extra></extra>",
        )
    )
    title = "copier: layer-1 attention mass by offset" if layers == [0] else "copier: attention mass by offset, layers before the last"
    fig.update_layout(title=title, height=200 + 40 * len(grid))
    fig.update_xaxes(title_text="attention offset r")
    return fig, data


def rpe_heatmap(w_rpe) -> tuple[go.Figure, pd.DataFrame]:
    """gih layer-1 relative-position weights w[h, r-1] (the scores before the softmax)."""
    values = w_rpe.detach().cpu().double()
    heads, window = values.shape
    data = pd.DataFrame(
        [
            {"head": h, "offset": r + 1, "weight": float(values[h, r])}
            for h in range(heads)
            for r in range(window)
        ]
    )
    fig = go.Figure(
        go.Heatmap(
            z=values.numpy().round(4),
            x=[str(r) for r in range(1, window + 1)],
            y=[f"H{h}" for h in range(heads)],
            colorscale="RdBu",
            zmid=0,
        )
    )
    fig.update_layout(
        title="gih layer-1 relative-position weights w[h, r]", height=200 + 40 * heads
    )
    fig.update_xaxes(title_text="offset r")
    return fig, data


def selector_bars(
    table: pd.DataFrame, selector_summary: dict, predicted: dict[str, list[int]] | None
) -> tuple[go.Figure, pd.DataFrame]:
    """Sensitivity of the best layer-2 unit's key and query features to each offset, and (gih) p_S."""
    best = selector_summary["best_unit"]
    rows = table[(table["pass"] == "selector") & (table["metric"] == "sensitivity")]
    rows = rows[rows["unit"].str.startswith(best + " ")]
    data = rows[["side", "offset", "mean", "stderr"]].astype({"offset": int})
    weights = table[(table["pass"] == "selector") & (table["metric"] == "subset_weight")]
    has_weights = len(weights) > 0
    fig = make_subplots(
        rows=1,
        cols=2 if has_weights else 1,
        subplot_titles=[f"{best}: sensitivity by offset", "p_S by copied offsets"][
            : 2 if has_weights else 1
        ],
    )
    for side in ("key", "query"):
        part = data[data["side"] == side]
        fig.add_trace(
            go.Bar(
                x=part["offset"].astype(str),
                y=part["mean"],
                error_y={"type": "data", "array": part["stderr"]},
                name=f"{side} side",
            ),
            row=1,
            col=1,
        )
    if has_weights:
        fig.add_trace(
            go.Bar(x=weights["offset_set"], y=weights["mean"], name="p_S", marker_color="gray"),
            row=1,
            col=2,
        )
        data = pd.concat(
            [data, weights[["offset_set", "mean"]].assign(side="p_S")], ignore_index=True
        )
    theory = ""
    if predicted:
        theory = "; theory predicts " + ", ".join(
            f"{name} {set_text(s)}" for name, s in predicted.items()
        )
    fig.update_layout(
        title=f"selector: selected {set_text(selector_summary['selected_offsets'])}{theory}",
        height=380,
        barmode="group",
    )
    return fig, data


def classifier_bars(table: pd.DataFrame, summary: dict) -> tuple[go.Figure, pd.DataFrame]:
    """Layer-2 attention per key by match count with the parents, and KL(model || strategy)."""
    rows = table[(table["pass"] == "classifier") & table["metric"].str.startswith("attn_per_key_m")]
    parents = summary["offset_sets"].get("parents") or summary["offset_sets"].get("selected")
    rows = rows[rows["offset_set"] == set_label(parents or [])]
    attn = rows[["head", "metric", "mean", "stderr"]].assign(
        matches=rows["metric"].str.removeprefix("attn_per_key_m").astype(int)
    )
    kl = table[(table["pass"] == "classifier") & (table["metric"] == "kl_model_to_strategy")]
    kl = kl[["strategy", "mean", "stderr"]].sort_values("mean")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=[
            f"attention per key by matches with {set_text(parents)}",
            "KL(model ‖ strategy), nats",
        ],
    )
    for head, part in attn.groupby("head"):
        fig.add_trace(
            go.Bar(
                x=part["matches"].astype(str),
                y=part["mean"],
                error_y={"type": "data", "array": part["stderr"]},
                name=f"L1H{int(head)}",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Bar(
            x=kl["strategy"],
            y=kl["mean"],
            error_y={"type": "data", "array": kl["stderr"]},
            name="KL",
            marker_color="gray",
        ),
        row=1,
        col=2,
    )
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(
        title=f"classifier: closest strategy {summary['closest_strategy']}",
        height=400,
        barmode="group",
    )
    data = pd.concat([attn.assign(kind="attention"), kl.assign(kind="kl")], ignore_index=True)
    return fig, data
