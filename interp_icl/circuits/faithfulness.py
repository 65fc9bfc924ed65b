"""Circuits from edge scores and how faithful they are.

A circuit is a set of edges; running it means every edge outside the set carries its sender's
value on the source run (`EdgeForward.run(keep=...)`). Its faithfulness is the fraction of the
model's metric gap that it keeps,

    recovered(C) = (m(no edge) - m(C)) / (m(no edge) - m(model))

with m the mean metric over sequences (lower is better for a loss; the formula does not care),
m(no edge) the run with every edge from the source, m(model) the run with every edge kept (the
model itself). The curve takes the first n edges of a ranking (by default |mean score|,
`recovery.ranked`) for growing n; where it first reaches FAITHFUL it is measured at every n (so
"edges needed" is exact for that ranking, not a grid point); its 95% intervals are a seeded
bootstrap over sequences of the ratio of means.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from interp_icl.circuits.graph import Edge, Graph
from interp_icl.circuits.runner import circuit_runner
from interp_icl.circuits.scores import SequenceMetric
from interp_icl.stats import ratio_interval

FAITHFUL = 0.9  # the recovered fraction "edges needed" refers to


def circuit_metric(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
                   circuits: Sequence[Sequence[Edge]]) -> Tensor:
    """``[len(circuits), B]`` the per-sequence metric of each circuit run."""
    run = circuit_runner(model, graph, source_tokens)
    with torch.no_grad():
        return torch.stack([metric(run(tokens, {(e.sender, e.receiver) for e in c}), tokens) for c in circuits])


def recovered_fraction(empty: Tensor, full: Tensor, circuit: Tensor, seed: int | None = 0,
                       ) -> tuple[float, tuple[float, float] | None]:
    """(recovered, its 95% interval) from the per-sequence metrics ``[B]`` of the run with no edge,
    every edge and the circuit; no interval when `seed` is None (the bootstrap is seeded)."""

    def recovered(index: Tensor) -> float:
        gap = float(empty[index].mean() - full[index].mean())
        return float(empty[index].mean() - circuit[index].mean()) / gap if gap != 0 else float("nan")

    value = recovered(torch.arange(empty.shape[0]))
    return value, None if seed is None else ratio_interval(recovered, empty.shape[0], seed)


def curve_sizes(n_edges: int) -> list[int]:
    """0, 1, 2, 3, 4, 6, 8, 12, 16, ... (about two per doubling) up to every edge."""
    sizes, n = {0, n_edges}, 1
    while n < n_edges:
        sizes |= {n, min(n_edges, (3 * n) // 2)}
        n *= 2
    return sorted(s for s in sizes if s <= n_edges)


def faithfulness_curve(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
                       order: Sequence[int], sizes: Sequence[int] | None = None, seed: int = 0,
                       refine: bool = True) -> pd.DataFrame:
    """One row per circuit size n (the first n edges of `order`, indices into ``graph.edges``):
    n, recovered, its 95% interval, the circuit's mean metric. With `refine`, every size between
    the last one below FAITHFUL and the first one reaching it is measured too."""
    ranking = [graph.edges[i] for i in order]
    sizes = list(curve_sizes(len(ranking)) if sizes is None else sizes)
    values = circuit_metric(model, graph, tokens, source_tokens, metric, [[], ranking, *[ranking[:n] for n in sizes]])
    empty, full = values[0], values[1]
    measured = dict(zip(sizes, values[2:]))

    if refine:
        reached = [n for n in sorted(measured) if recovered_fraction(empty, full, measured[n], None)[0] >= FAITHFUL]
        if reached:
            below = [n for n in sorted(measured) if n < reached[0]]
            between = range(below[-1] + 1 if below else 0, reached[0])
            extra = [n for n in between if n not in measured]
            if extra:
                circuits = [ranking[:n] for n in extra]
                measured.update(zip(extra, circuit_metric(model, graph, tokens, source_tokens, metric, circuits)))
    rows = []
    for n in sorted(measured):
        value, interval = recovered_fraction(empty, full, measured[n], seed)
        rows.append({"edges": n, "recovered": value, "low": None if interval is None else interval[0],
                     "high": None if interval is None else interval[1], "metric": float(measured[n].mean())})
    return pd.DataFrame(rows)


def edges_needed(curve: pd.DataFrame, fraction: float = FAITHFUL) -> int | None:
    """The smallest size on the curve whose recovered fraction reaches `fraction` (None if none)."""
    reached = curve[curve["recovered"] >= fraction]
    return None if reached.empty else int(reached["edges"].min())
