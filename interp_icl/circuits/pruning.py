"""Greedy pruning by exact patching (ACDC-style; Conmy et al. 2023).

Start from every edge. Visit the receivers from the output back (the graph's order reversed) and,
for each, its senders from the latest back; drop the edge — it then carries its sender's source
value (`circuits.runner`) — when that raises the mean metric by less than `threshold`:

    drop u -> v  if  m(C without u -> v) - m(C) < threshold,   then C := C without u -> v

m is the mean of a per-sequence metric that is 0 on the model and grows as the output departs from
it: `interp-icl circuit --method acdc` uses ACDC's, the KL divergence of the model's output from
the circuit's over the target rows (`patching.interventions.sequence_kl`), so an edge that moves
the output either way is kept (the task loss would drop an edge that moves it without raising the
mean loss). A receiver whose unit has no kept outgoing edge left cannot change the output:
its edges are dropped without a forward (change 0). The result is the kept set and, for every
edge, the change measured when it was visited ``[E, B]`` (0 where skipped).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp_icl.circuits.graph import Graph
from interp_icl.circuits.runner import circuit_runner
from interp_icl.circuits.scores import SequenceMetric

ACDC_THRESHOLD = 0.005  # nats of mean KL per target row; `interp-icl circuit --threshold`


def greedy_prune(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
                 threshold: float = ACDC_THRESHOLD) -> tuple[list[int], Tensor]:
    """(indices of the kept edges into ``graph.edges``, the change at each edge's visit ``[E, B]``)."""
    circuit = circuit_runner(model, graph, source_tokens)
    kept = set(range(len(graph.edges)))
    changes = torch.zeros(len(graph.edges), tokens.shape[0], dtype=torch.float64)

    def run(indices: set[int]) -> Tensor:
        return metric(circuit(tokens, {(graph.edges[i].sender, graph.edges[i].receiver) for i in indices}), tokens).double()

    with torch.no_grad():
        current = run(kept)
        for receiver in reversed(graph.receivers):
            unit = receiver.split(".")[0]
            incoming = [i for i, e in enumerate(graph.edges) if e.receiver == receiver]
            if receiver != "logits" and not any(graph.edges[i].sender == unit for i in kept):
                kept -= set(incoming)  # nothing downstream reads this unit
                continue
            for i in reversed(incoming):
                trial = run(kept - {i})
                changes[i] = trial - current
                if float(trial.mean() - current.mean()) < threshold:
                    kept.discard(i)
                    current = trial
    return sorted(kept), changes
