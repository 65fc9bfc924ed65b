"""Either family's graph, and running a circuit on it: every edge outside it carries the source
run's value."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
from torch import Tensor, nn

from interp_icl.circuits.forward import EdgeForward
from interp_icl.circuits.gih import GIHEdges, gih_graph
from interp_icl.circuits.graph import Graph, standard_graph
from interp_icl.models import layout

CircuitRun = Callable[[Tensor, Collection[tuple[str, str]]], Tensor]  # (tokens, kept edges) -> output


def model_graph(model: nn.Module) -> Graph:
    """The edge graph of a model: `gih_graph` for the gih family, else `standard_graph`."""
    return gih_graph(model) if layout(model).block_type == "gih" else standard_graph(model)


def circuit_runner(model: nn.Module, graph: Graph, source_tokens: Tensor) -> CircuitRun:
    """f(tokens, kept) -> the model's output ``[B, T, V]`` with only the edges `kept` ((sender,
    receiver) names) carrying this run's values and every other edge the run on `source_tokens`'s."""
    with torch.no_grad():
        if graph.kind == "gih":
            edges = GIHEdges(model, graph)
            source = edges.record(source_tokens)
            everything = {(e.sender, e.receiver) for e in graph.edges}
            return lambda tokens, kept: edges.run(tokens, source, everything - set(kept))
        forward = EdgeForward(model)
        writes = forward.run(source_tokens)[1]
        return lambda tokens, kept: forward.run(tokens, keep=(frozenset(kept), writes))[0]
