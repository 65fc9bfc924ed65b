"""The computational graph of a standard (TransformerLens-native) model at head granularity.

Senders write into the residual stream: ``embed`` (the token embedding, ``hook_embed``; the
positional embedding is the same in every run and never patched), each head ``L{l}H{h}`` (its
output z W_O in the residual basis) and each MLP ``MLP{l}``. Receivers read it: each head's
query, key and value input ``L{l}H{h}.q`` / ``.k`` / ``.v`` (before its LayerNorm), each MLP's input
``MLP{l}.in`` and ``logits`` (the final residual, before the final norm). An edge joins every sender to every receiver after it: the residual stream is a sum,
so a receiver's input is the sum of the senders before it (plus the positional embedding). An edge
covers every position (head granularity); TransformerLens's edge attribution
(`transformer_lens.tools.analysis.attribution_patching`) scores the same edges per position.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Edge:
    sender: str  # "embed", "L0H1", "MLP0"
    receiver: str  # "L1H0.k", "MLP1.in", "logits"

    @property
    def name(self) -> str:
        return f"{self.sender}->{self.receiver}"


@dataclass(frozen=True)
class Graph:
    """The senders, receivers and edges of one model, in the order the model computes them;
    `kind` says whose forward patches them: "standard" (`circuits.forward`) or "gih"
    (`circuits.gih`)."""

    n_layers: int
    n_heads: int
    has_mlp: bool
    edges: tuple[Edge, ...]
    kind: str = "standard"

    @property
    def receivers(self) -> list[str]:
        return list(dict.fromkeys(e.receiver for e in self.edges))


def unit_layer(unit: str) -> int:
    """The layer of a head ("L1H2") or MLP ("MLP0") unit."""
    return int(unit[3:]) if unit.startswith("MLP") else int(unit[1:].split("H")[0])


def receiver_layer(graph: Graph, receiver: str) -> int:
    """The layer whose residual input a receiver reads (n_layers for the logits)."""
    return graph.n_layers if receiver == "logits" else unit_layer(receiver.split(".")[0])


def standard_graph(model: nn.Module) -> Graph:
    """The head-granularity graph of a standard-family model (see the module docstring)."""
    cfg = model.cfg
    n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
    has_mlp = not bool(getattr(cfg, "attn_only", False))
    edges: list[Edge] = []
    available = ["embed"]
    for layer in range(n_layers):
        heads = [f"L{layer}H{h}" for h in range(n_heads)]
        for head in heads:
            for part in ("q", "k", "v"):
                edges += [Edge(s, f"{head}.{part}") for s in available]
        available = available + heads
        if has_mlp:
            edges += [Edge(s, f"MLP{layer}.in") for s in available]
            available = available + [f"MLP{layer}"]
    edges += [Edge(s, "logits") for s in available]
    return Graph(n_layers, n_heads, has_mlp, tuple(edges))
