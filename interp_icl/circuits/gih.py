"""The edge graph of a gih-family model (Chen et al.'s TF(M, H, d, D), `interp_icl.models.gih`) and its
edge patches, through the model's own hooks.

The gih model is not a residual stream: each stage reads named inputs. Units and edges:

    embed            -> L0H{h}.v       each copier head's values are the one-hot tokens
    L0H{h}           -> F[S].in        head h's normalised output v̄^h into the FFN feature of every
                                       non-empty head subset S ∋ h (φ_S = sqrt(p_S) ⊗_{g∈S} v̄^g)
    F[S]             -> L1H0.q, .k     each feature block into the classifier's query and key
    embed            -> L1H0.v         the classifier's values are the one-hot tokens
    L1H0             -> logits         the classifier's output is the model's (probabilities)

The empty subset's feature is a constant (no input): it is no sender. A copier head's attention is
by position only, so its edge is its value input. Patching an edge u -> v gives v the source run's
value of u on that edge only: embed -> L0H{h}.v sets head h's output to the source's (its pattern
does not depend on the input); L0H{h} -> F[S].in recomputes block S with the source's v̄^h in place
of this run's; F[S] -> L1H0.q / .k sets that block of the query / key to the source's; embed ->
L1H0.v and L1H0 -> logits set the values / the output to the source's. Gradients (EAP) are read
where these patches act: ∂m/∂z (layer 0), ∂m/∂q, ∂m/∂k, ∂m/∂v, ∂m/∂z (layer 1); an edge into a
feature block is scored through the block's multilinear form (h's factor replaced by the change).
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn

from interp_icl.circuits.graph import Edge, Graph
from interp_icl.models.gih import feature_unit

Z0, VBAR, P, Q, K, V, Z1 = ("blocks.0.attn.hook_z", "blocks.0.attn.hook_z_normalized", "blocks.0.mlp.hook_subset_weights",
                            "blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v", "blocks.1.attn.hook_z")
TAPPED = (Z0, Q, K, V, Z1)  # where gradients are read


def gih_graph(model: nn.Module) -> Graph:
    """The edge graph of a gih-family model (see the module docstring)."""
    heads = int(model.cfg.n_heads)
    subsets = [s for s in model.subsets if s]
    edges = [Edge("embed", f"L0H{h}.v") for h in range(heads)]
    edges += [Edge(f"L0H{h}", f"{feature_unit(s)}.in") for s in subsets for h in s]
    edges += [Edge(feature_unit(s), f"L1H0.{part}") for part in "qk" for s in subsets]
    edges += [Edge("embed", "L1H0.v"), Edge("L1H0", "logits")]
    return Graph(n_layers=2, n_heads=heads, has_mlp=False, edges=tuple(edges), kind="gih")


def feature_block(vbar: Tensor, subset: tuple[int, ...], p_s: Tensor, replace: dict[int, Tensor] | None = None) -> Tensor:
    """``[B, T, d^|S|]`` sqrt(p_S) ⊗_{h∈S} v̄^h from ``vbar`` ``[B, T, H, d]``, with the factors of
    the heads in `replace` {h: ``[B, T, d]``} taken from there (the model's `_features` order)."""
    replace = replace or {}
    batch, seq = vbar.shape[:2]
    f = torch.ones(batch, seq, 1, dtype=vbar.dtype)
    for h in subset:
        factor = replace.get(h, vbar[:, :, h])
        f = (f[..., :, None] * factor[..., None, :]).reshape(batch, seq, -1)
    return torch.sqrt(p_s) * f


class GIHEdges:
    """Runs of a gih model with any set of edges patched from a source run (and gradient taps)."""

    def __init__(self, model: nn.Module, graph: Graph):
        self.model, self.graph = model, graph
        self.blocks = {feature_unit(s): (s, k, sl) for k, (s, sl) in enumerate(model.feature_slices()) if s}

    def record(self, tokens: Tensor) -> dict[str, Tensor]:
        """The run's values at every patched or tapped hook, and its output under "out"."""
        cache: dict[str, Tensor] = {}

        def keep(act, hook):
            cache[hook.name] = act.detach()

        names = ["hook_embed", Z0, VBAR, P, Q, K, V, Z1]
        with torch.no_grad():
            cache["out"] = self.model.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names])
        return cache

    def run(self, tokens: Tensor, source: dict[str, Tensor], patched: Collection[tuple[str, str]],
            embed: Tensor | None = None, taps: dict[str, Tensor] | None = None) -> Tensor:
        """The output ``[B, T, d]`` with every edge in `patched` ((sender, receiver) names) carrying
        the `source` run's value (`record`); `embed` replaces the one-hot tokens (EAP-IG), `taps`
        {hook name: zeros with a gradient} are added at the TAPPED hooks."""
        patched = set(patched)
        seen: dict[str, Tensor] = {}
        heads = [h for h in range(self.graph.n_heads) if ("embed", f"L0H{h}.v") in patched]
        to_features = {}
        for sender, receiver in patched:
            if receiver.endswith(".in"):
                to_features.setdefault(receiver[:-3], []).append(int(sender[3:]))
        parts = {part: [self.blocks[s][2] for s, r in patched if r == f"L1H0.{part}"] for part in "qk"}
        whole = {V: ("embed", "L1H0.v") in patched, Z1: ("L1H0", "logits") in patched}

        def tap(act, name):
            return act if taps is None or name not in taps else act + taps[name]

        def z0(act, hook):
            if heads:
                act = act.clone()
                act[:, :, heads] = source[Z0][:, :, heads]
            return tap(act, Z0)

        def remember(act, hook):
            seen[hook.name] = act
            return act

        def feature(act, hook):
            if not to_features:
                return act
            act = act.clone()
            for unit, replaced in to_features.items():
                subset, k, sl = self.blocks[unit]
                act[..., sl] = feature_block(seen[VBAR], subset, seen[P][k], {h: source[VBAR][:, :, h] for h in replaced})
            return act

        def block_patch(part: str, name: str):
            def hook(act, hook):
                if parts[part]:
                    act = act.clone()
                    for sl in parts[part]:
                        act[..., sl] = source[name][..., sl]
                return tap(act, name)
            return hook

        def whole_patch(name: str):
            def hook(act, hook):
                return tap(source[name] if whole[name] else act, name)
            return hook

        hooks = [(Z0, z0), (VBAR, remember), (P, remember), ("blocks.0.mlp.hook_feature", feature),
                 (Q, block_patch("q", Q)), (K, block_patch("k", K)), (V, whole_patch(V)), (Z1, whole_patch(Z1))]
        if embed is not None:
            hooks.insert(0, ("hook_embed", lambda act, hook: embed))
        return self.model.run_with_hooks(tokens, fwd_hooks=hooks)

    def attribution(self, base: dict[str, Tensor], source: dict[str, Tensor], grads: dict[str, Tensor]) -> Tensor:
        """``[E, B]`` first-order edge scores: the change each edge's patch makes to its receiver's
        input, dotted with the metric's gradient there (`grads` {TAPPED hook: gradient})."""
        rows = []
        for e in self.graph.edges:
            if e.receiver.endswith(".v") and e.receiver.startswith("L0"):
                h = int(e.receiver[3:-2])
                rows.append(((source[Z0][:, :, h] - base[Z0][:, :, h]) * grads[Z0][:, :, h]).sum((1, 2)))
            elif e.receiver.endswith(".in"):
                subset, k, sl = self.blocks[e.receiver[:-3]]
                h = int(e.sender[3:])
                change = feature_block(base[VBAR], subset, base[P][k], {h: source[VBAR][:, :, h] - base[VBAR][:, :, h]})
                rows.append((change * (grads[Q][:, :, 0, sl] + grads[K][:, :, 0, sl])).sum((1, 2)))
            elif e.receiver in ("L1H0.q", "L1H0.k"):
                name, sl = (Q if e.receiver.endswith("q") else K), self.blocks[e.sender][2]
                rows.append(((source[name][..., sl] - base[name][..., sl]) * grads[name][..., sl]).sum((1, 2, 3)))
            else:  # embed -> L1H0.v, L1H0 -> logits
                name = V if e.receiver == "L1H0.v" else Z1
                rows.append(((source[name] - base[name]) * grads[name]).sum((1, 2, 3)))
        return torch.stack(rows)
