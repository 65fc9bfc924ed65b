"""Plotly figures of a circuit (`interp_icl.runs.circuits.CircuitReport`): the circuit beside the GIH
hypothesis as a graph, and the faithfulness curve. Each returns ``(figure, data)``; nothing here
computes a measurement.

Graph layout: one column per stage (embed, layer-0 heads, MLP0 or the gih FFN features F[S],
layer-1 heads, ..., logits), one row per head (a feature sits at the mean of its heads' rows); an edge into a head's query, key or value ends just below, at or above the head
(q, k, v). Edges drawn: the circuit's (width ∝ |score|) and the hypothesis's edges it misses
(dashed); colour says which: in both, circuit only (added), hypothesis only (missing).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

PART_OFFSET = {"q": -0.22, "k": 0.0, "v": 0.22, "in": 0.0}
KINDS = {  # (colour, dash, legend)
    "both": ("#137333", "solid", "in the circuit and the hypothesis"),
    "added": ("#1a73e8", "solid", "in the circuit only (added)"),
    "missing": ("#c5221f", "dash", "in the hypothesis only (missing)"),
}


def _place(unit: str, n_layers: int) -> tuple[float, float]:
    """(x, y) of a sender or receiver unit: "embed", "L1H2", "MLP0", "logits"."""
    if unit == "embed":
        return 0.0, -1.0
    if unit == "logits":
        return 2.0 * n_layers + 1, -1.0
    if unit.startswith("MLP"):
        return 2.0 * int(unit[3:]) + 2, -1.0
    if unit.startswith("F["):  # a gih FFN feature of a head subset
        heads = [int(h) for h in unit[2:-1].split(",")]
        return 2.0, sum(heads) / len(heads) + 0.15 * (len(heads) - 1)
    layer, head = unit[1:].split("H")
    return 2.0 * int(layer) + 1, float(head)


def circuit_graph(edges: pd.DataFrame, n_layers: int, title: str) -> tuple[go.Figure, pd.DataFrame]:
    """The circuit's edges and the hypothesis's missing ones; `edges` is a CircuitReport's table
    (edge, sender, receiver, score, in_circuit, hypothesis)."""
    inside = edges["in_circuit"].astype(bool)
    hypothesised = edges["hypothesis"].notna()
    shown = edges[inside | hypothesised].copy()
    shown["kind"] = [("both" if h else "added") if c else "missing"
                     for c, h in zip(shown["in_circuit"].astype(bool), shown["hypothesis"].notna())]
    largest = float(shown["score"].abs().max()) if len(shown) else 1.0
    fig = go.Figure()
    legend_done: set[str] = set()
    for r in shown.itertuples():
        colour, dash, legend = KINDS[r.kind]
        x0, y0 = _place(r.sender, n_layers)
        unit, _, part = r.receiver.partition(".")
        x1, y1 = _place(unit, n_layers)
        y1 += PART_OFFSET.get(part, 0.0)
        width = 1 + 7 * abs(r.score) / largest if largest > 0 else 1
        fig.add_trace(go.Scatter(
            x=[x0, x1], y=[y0, y1], mode="lines", line={"color": colour, "dash": dash, "width": width},
            name=legend, legendgroup=r.kind, showlegend=r.kind not in legend_done,
            hovertext=f"{r.edge}: {r.score:+.4f}" + (f" ({r.hypothesis})" if isinstance(r.hypothesis, str) else ""),
            hoverinfo="text"))
        legend_done.add(r.kind)
    units = sorted({u for u in [*shown["sender"], *[x.split(".")[0] for x in shown["receiver"]]]},
                   key=lambda u: _place(u, n_layers))
    xs, ys = zip(*[_place(u, n_layers) for u in units]) if units else ((), ())
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=units, textposition="top center",
                             marker={"size": 14, "color": "#444"}, name="units", showlegend=False, hoverinfo="text"))
    fig.update_layout(title=title, height=420, plot_bgcolor="white")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    data = shown[["edge", "sender", "receiver", "score", "in_circuit", "hypothesis", "kind"]].reset_index(drop=True)
    return fig, data


def faithfulness_figure(curves: dict[str, pd.DataFrame], faithful: float) -> tuple[go.Figure, pd.DataFrame]:
    """Recovered fraction of the loss gap against the number of edges, one line per method, with
    the 95% intervals as error bars and a dashed line at `faithful`."""
    fig = go.Figure()
    frames = []
    for method, curve in curves.items():
        frames.append(curve.assign(method=method))
        low, high = curve["low"].astype(float), curve["high"].astype(float)
        fig.add_trace(go.Scatter(
            x=curve["edges"], y=curve["recovered"], mode="lines+markers", name=method,
            error_y={"type": "data", "symmetric": False, "array": (high - curve["recovered"]).fillna(0),
                     "arrayminus": (curve["recovered"] - low).fillna(0)}))
    fig.add_hline(y=faithful, line_dash="dash")
    fig.update_layout(title="faithfulness: recovered fraction of the loss gap by the first n edges", height=380)
    fig.update_xaxes(title_text="edges kept")
    fig.update_yaxes(title_text="recovered")
    return fig, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
