"""How well an edge ranking recovers a known circuit: ROC AUC and precision / recall at the true
circuit's size, edges ranked by the magnitude of their mean score."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor

from interp_icl.circuits.graph import Edge, Graph


def truth_mask(graph: Graph, circuit: Collection[tuple[str, str]]) -> Tensor:
    """``[E]`` bool: the graph's edges that are in `circuit` ((sender, receiver) names)."""
    missing = set(circuit) - {(e.sender, e.receiver) for e in graph.edges}
    if missing:
        raise ValueError(f"circuit edges not in the graph: {sorted(missing)}")
    return torch.tensor([(e.sender, e.receiver) in circuit for e in graph.edges])


def ranking_auc(magnitude: Tensor, truth: Tensor) -> float:
    """P(a true edge ranks above a false one), ties counting one half (Mann–Whitney)."""
    true, false = magnitude[truth], magnitude[~truth]
    if true.numel() == 0 or false.numel() == 0:
        return float("nan")
    greater = (true[:, None] > false[None, :]).double().mean()
    ties = (true[:, None] == false[None, :]).double().mean()
    return float(greater + 0.5 * ties)


def precision_recall_at_size(magnitude: Tensor, truth: Tensor) -> tuple[float, float]:
    """Precision and recall of the top-k edges, k = the true circuit's size (equal to each other)."""
    k = int(truth.sum())
    top = torch.argsort(magnitude, descending=True, stable=True)[:k]
    hits = int(truth[top].sum())
    return hits / max(k, 1), hits / max(k, 1)


def top_edges(graph: Graph, scores: Tensor, n: int) -> list[Edge]:
    """The `n` edges with the largest |mean score| (``scores`` ``[E, B]``)."""
    order = torch.argsort(scores.mean(1).abs(), descending=True, stable=True)[:n]
    return [graph.edges[i] for i in order.tolist()]
