"""Circuits from edge scores and how faithful they are.

A circuit is a set of edges; running it means every edge outside the set carries its sender's
value on the source run (`EdgeForward.run(keep=...)`). Its faithfulness is the fraction of the
model's metric gap that it keeps,

    recovered(C) = (m(no edge) - m(C)) / (m(no edge) - m(model))

with m the mean metric over sequences (lower is better for a loss; the formula does not care),
m(no edge) the run with every edge from the source, m(model) the run with every edge kept (the
model itself). The curve takes the top-n edges of a ranking (|mean score|) for growing n; its 95%
intervals are a seeded bootstrap over sequences of the ratio of means.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from interp_icl.circuits.forward import EdgeForward
from interp_icl.circuits.graph import Edge, Graph
from interp_icl.circuits.recovery import ranked
from interp_icl.circuits.scores import SequenceMetric
from interp_icl.stats import ratio_interval

FAITHFUL = 0.9  # the recovered fraction "edges needed" refers to


def circuit_metric(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
                   circuits: Sequence[Sequence[Edge]]) -> Tensor:
    """``[len(circuits), B]`` the per-sequence metric of each circuit run."""
    forward = EdgeForward(model, graph)
    with torch.no_grad():
        source = forward.run(source_tokens)[1]
        rows = []
        for circuit in circuits:
            kept = frozenset((e.sender, e.receiver) for e in circuit)
            logits, _ = forward.run(tokens, keep=(kept, source))
            rows.append(metric(logits, tokens))
    return torch.stack(rows)


def curve_sizes(n_edges: int) -> list[int]:
    """0, 1, 2, 3, 4, 6, 8, 12, 16, ... (about two per doubling) up to every edge."""
    sizes, n = {0, n_edges}, 1
    while n < n_edges:
        sizes |= {n, min(n_edges, (3 * n) // 2)}
        n *= 2
    return sorted(s for s in sizes if s <= n_edges)


def faithfulness_curve(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
                       scores: Tensor, sizes: Sequence[int] | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per circuit size n (the top-n edges by |mean score|, `scores` ``[E, B]``): n,
    recovered, its 95% interval, the circuit's mean metric."""
    ranking = [graph.edges[i] for i in ranked(scores)]
    sizes = list(curve_sizes(len(ranking)) if sizes is None else sizes)
    values = circuit_metric(model, graph, tokens, source_tokens, metric, [[], ranking, *[ranking[:n] for n in sizes]])
    empty, full, circuits = values[0], values[1], values[2:]

    def recovered(row: Tensor, index: Tensor | None = None) -> float:
        pick = (lambda t: t) if index is None else (lambda t: t[index])
        gap = float(pick(empty).mean() - pick(full).mean())
        return float(pick(empty).mean() - pick(row).mean()) / gap if gap != 0 else float("nan")

    rows = []
    for n, row in zip(sizes, circuits):
        interval = ratio_interval(lambda index, row=row: recovered(row, index), tokens.shape[0], seed)
        rows.append({"edges": n, "recovered": recovered(row), "low": None if interval is None else interval[0],
                     "high": None if interval is None else interval[1], "metric": float(row.mean())})
    return pd.DataFrame(rows)


def edges_needed(curve: pd.DataFrame, fraction: float = FAITHFUL) -> int | None:
    """The smallest size on the curve whose recovered fraction reaches `fraction` (None if none)."""
    reached = curve[curve["recovered"] >= fraction]
    return None if reached.empty else int(reached["edges"].min())
