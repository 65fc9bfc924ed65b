"""How well an edge ranking recovers a known circuit: ROC AUC and precision / recall at the true
circuit's size, edges ranked by the magnitude of their mean score."""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor

from interp_icl.circuits.graph import Graph


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


def ranked(scores: Tensor) -> list[int]:
    """Edge indices by decreasing |mean score| (``scores`` ``[E, B]``; ties keep graph order)."""
    return torch.argsort(scores.mean(1).abs(), descending=True, stable=True).tolist()


def precision_at_size(magnitude: Tensor, truth: Tensor) -> float:
    """Precision of the top-k edges, k = the true circuit's size (equal to their recall)."""
    k = int(truth.sum())
    top = torch.argsort(magnitude, descending=True, stable=True)[:k]
    return int(truth[top].sum()) / max(k, 1)
