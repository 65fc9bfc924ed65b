"""Edge scores: the change of a per-sequence metric when one edge's sender is replaced, on that edge
only, by its value on a source run — exactly (one patched forward per edge, batched) or estimated
from gradients (EAP; EAP-IG).

Convention (noising). `tokens` is the base run, `source_tokens` the run the replaced values come
from (e.g. other sequences of the task: resample ablation). For an edge u -> v,

    exact(u -> v)  = metric(base run, v's input += u_source - u_base) - metric(base run)
    EAP(u -> v)    = sum over positions of (u_source - u_base) . d metric / d(v's input)   at the base run
    EAP-IG(u -> v) = the same with the gradient averaged over K runs whose token embeddings lie on the
                     straight line from the base's to the source's, at alpha = k / K, k = 0..K-1
                     (a left Riemann sum: K = 1 is EAP)

(Syed et al. 2023; Hanna et al. 2024 integrate over the input embeddings the same way). Only v's
input changes; what v computes then flows on through everything after it. Scores are ``[E, B]``,
one per edge and sequence, so intervals over sequences come from them. TransformerLens's edge
attribution is the denoising form of EAP — the gradient on its corrupt run, the delta clean −
corrupt, per position — i.e. this with base = its corrupt run and source = its clean run, summed
over positions (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from interp_icl.circuits.forward import EdgeForward
from interp_icl.circuits.gih import TAPPED, GIHEdges
from interp_icl.circuits.graph import Edge, Graph, receiver_layer

SequenceMetric = Callable[[Tensor, Tensor], Tensor]  # (logits [N, T, V], tokens [N, T]) -> [N]
EDGE_CHUNK = 4  # edges patched in one forward (rows = chunk x B); 4 ran faster than 16 on 2 cores


def _writes(forward: EdgeForward, tokens: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        return forward.run(tokens)[1]


def exact_scores(
    model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
    edges: Sequence[Edge] | None = None, chunk: int = EDGE_CHUNK,
) -> Tensor:
    """``[E, B]`` exact metric change of patching each edge (every edge of `graph` by default)."""
    edges = list(graph.edges if edges is None else edges)
    if graph.kind == "gih":
        return _gih_exact(model, graph, tokens, source_tokens, metric, edges)
    forward = EdgeForward(model)
    residuals: dict[int, Tensor] = {}
    with torch.no_grad():
        logits, base = forward.run(tokens, record=residuals)
        source = forward.run(source_tokens)[1]
        clean = metric(logits, tokens)
    batch = tokens.shape[0]
    out = torch.empty(len(edges), batch, dtype=clean.dtype)
    by_layer: dict[int, list[int]] = {}  # each edge runs from its receiver's layer on
    for i, e in enumerate(edges):
        by_layer.setdefault(receiver_layer(graph, e.receiver), []).append(i)
    with torch.no_grad():
        for layer, indices in sorted(by_layer.items()):
            for start in range(0, len(indices), chunk):
                group = indices[start:start + chunk]
                rows = len(group) * batch
                deltas: dict[str, Tensor] = {}
                for slot, i in enumerate(group):
                    e = edges[i]
                    if e.receiver not in deltas:
                        deltas[e.receiver] = torch.zeros(rows, *residuals[0].shape[1:])
                    deltas[e.receiver][slot * batch:(slot + 1) * batch] = source[e.sender] - base[e.sender]
                repeated = tokens.repeat(len(group), 1)
                patched, _ = forward.run(repeated, deltas, start=layer, resid=residuals[layer].repeat(len(group), 1, 1))
                out[group] = metric(patched, repeated).view(len(group), batch) - clean
    return out


def eap_scores(
    model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
    ig_steps: int = 1,
) -> Tensor:
    """``[E, B]`` gradient estimates of the exact scores: EAP (`ig_steps` = 1) or EAP-IG."""
    if ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    if graph.kind == "gih":
        return _gih_eap(model, graph, tokens, source_tokens, metric, ig_steps)
    forward = EdgeForward(model)
    base, source = _writes(forward, tokens), _writes(forward, source_tokens)
    changes = {u: source[u] - base[u] for u in base}
    stacked = forward.stack_changes(changes)
    direct = [r for r in graph.receivers if r == "logits" or r.startswith("MLP")]  # one input each
    scores: dict[tuple[str, str], Tensor] = {}
    for k in range(ig_steps):
        alpha = k / ig_steps
        embed = base["embed"] + alpha * (source["embed"] - base["embed"])
        leaves = {r: torch.zeros_like(base["embed"], requires_grad=True) for r in direct}
        taps: dict[str, Tensor] = {}
        residuals: dict[int, Tensor] = {}
        with torch.enable_grad():
            logits, _ = forward.run(tokens, leaves, embed=embed, record=residuals, taps=taps, head_writes=False)
            found = torch.autograd.grad(metric(logits, tokens).sum(), [*leaves.values(), *taps.values()], allow_unused=True)
        found = [torch.zeros_like(t) if g is None else g for t, g in zip([*leaves.values(), *taps.values()], found)]
        step = forward.head_input_scores(residuals, dict(zip(taps, found[len(leaves):])), stacked)
        grads = dict(zip(leaves, found[:len(leaves)]))
        for e in graph.edges:
            if e.receiver in grads:
                step[(e.sender, e.receiver)] = (changes[e.sender] * grads[e.receiver]).sum((1, 2))
        for key in step:
            scores[key] = scores.get(key, 0) + step[key] / ig_steps
    return torch.stack([scores[(e.sender, e.receiver)] for e in graph.edges])


def _gih_exact(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
               edges: Sequence[Edge]) -> Tensor:
    """`exact_scores` on a gih-family model: one hooked run per edge (`circuits.gih`)."""
    runs = GIHEdges(model, graph)
    source = runs.record(source_tokens)
    with torch.no_grad():
        clean = metric(runs.record(tokens)["out"], tokens)
        return torch.stack([metric(runs.run(tokens, source, {(e.sender, e.receiver)}), tokens) - clean for e in edges])


def _gih_eap(model: nn.Module, graph: Graph, tokens: Tensor, source_tokens: Tensor, metric: SequenceMetric,
             ig_steps: int) -> Tensor:
    """`eap_scores` on a gih-family model: gradients at the hooks where its edges act."""
    runs = GIHEdges(model, graph)
    base, source = runs.record(tokens), runs.record(source_tokens)
    grads = {name: torch.zeros_like(base[name]) for name in TAPPED}
    x_base, x_source = base["hook_embed"], source["hook_embed"]
    for k in range(ig_steps):
        alpha = k / ig_steps
        taps = {name: torch.zeros_like(base[name], requires_grad=True) for name in TAPPED}
        with torch.enable_grad():
            out = runs.run(tokens, source, (), embed=x_base + alpha * (x_source - x_base), taps=taps)
            found = torch.autograd.grad(metric(out, tokens).sum(), list(taps.values()), allow_unused=True)
        for name, g in zip(taps, found):
            if g is not None:
                grads[name] += g / ig_steps
    return runs.attribution(base, source, grads)
