"""The GIH hypothesis as edges of the head-granularity graph (`interp_icl.circuits.graph`), from the
heads the role detectors name (`interp_icl.roles`: the copier sets and the classifier set).

A standard model's row i predicts x_{i+1}; the classifier attends the keys l whose parent tuple
(x_{l-p})_{p in pa} matches the target's, (x_{i+1-p}), and copies x_l. So, with copier[r] the
heads that copy attention offset r (copier[0] is the token itself: ``embed``):

    copier[p]   -> classifier.k   for every parent p   (the key's parent tokens)
    copier[p-1] -> classifier.q   for every parent p   (the query's; p = 1: embed -> classifier.q)
    embed       -> classifier.v                         (the token that followed)
    classifier  -> logits
    embed       -> copier[r].v    for every copier used (what a copier carries)

In a gih-family model (`circuits.gih`; row t predicts token t, so the query and key both read
offset p) the selector is a unit of its own, the FFN feature of the subset S* of the parents'
copier heads:

    embed       -> copier[p].v      copier[p] -> selector      (selector = F[S*])
    selector    -> classifier.q     selector  -> classifier.k
    embed       -> classifier.v     classifier -> logits

Each line is an edge *type*; its edges are every (sender head, receiver head) pair of the sets,
so a type is the same claim in every seed whatever the head indices. Positions are not a sender
(`graph`), so the copiers' positional attention has no edge. The selector has no edge of its own in a
standard model: it is the classifier's query/key reading only the parents, i.e. the absence of every
other edge into them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence


def copier_label(offset: int) -> str:
    return "embed" if offset == 0 else f"copier[{offset}]"


def hypothesis_edges(copiers: Mapping[int, Sequence[str]], classifiers: Sequence[str],
                     parents: Sequence[int]) -> dict[str, frozenset[tuple[str, str]]]:
    """{edge type: its (sender, receiver) edges} for copier heads by attention offset
    (`copiers` {r: ["L0H1", ...]}, r >= 1), classifier heads and the parent offsets. A type whose
    sender or receiver set is empty has no edges (the hypothesis cannot be drawn there)."""

    def senders(offset: int) -> list[str]:
        return ["embed"] if offset == 0 else list(copiers.get(offset, []))

    types: dict[str, frozenset[tuple[str, str]]] = {}
    for p in sorted(parents):
        for offset, part in ((p, "k"), (p - 1, "q")):
            types[f"{copier_label(offset)}->classifier.{part}"] = frozenset(
                (s, f"{c}.{part}") for s in senders(offset) for c in classifiers)
    types["embed->classifier.v"] = frozenset(("embed", f"{c}.v") for c in classifiers)
    types["classifier->logits"] = frozenset((c, "logits") for c in classifiers)
    used = sorted({offset for p in parents for offset in (p, p - 1) if offset >= 1})
    for offset in used:
        types[f"embed->{copier_label(offset)}.v"] = frozenset(("embed", f"{h}.v") for h in copiers.get(offset, []))
    return types


def gih_hypothesis_edges(copiers: Mapping[int, Sequence[str]], classifiers: Sequence[str], parents: Sequence[int],
                         subsets: Collection[tuple[int, ...]]) -> dict[str, frozenset[tuple[str, str]]]:
    """The hypothesis's edge types in a gih-family model (see the module docstring): `copiers` {r:
    ["L0H1", ...]}, the classifier heads (["L1H0"] or none), the parent offsets and the model's head
    subsets; the selector is F[S*] for S* the parents' copier heads when the model has that subset."""
    from interp_icl.models.gih import feature_unit

    heads = tuple(sorted({int(h[3:]) for p in parents for h in copiers.get(p, [])}))
    selector = [feature_unit(heads)] if heads and heads in subsets else []
    types: dict[str, frozenset[tuple[str, str]]] = {}
    for p in sorted(parents):
        types[f"embed->{copier_label(p)}.v"] = frozenset(("embed", f"{h}.v") for h in copiers.get(p, []))
        types[f"{copier_label(p)}->selector"] = frozenset((h, f"{f}.in") for h in copiers.get(p, []) for f in selector)
    for part in "qk":
        types[f"selector->classifier.{part}"] = frozenset((f, f"{c}.{part}") for f in selector for c in classifiers)
    types["embed->classifier.v"] = frozenset(("embed", f"{c}.v") for c in classifiers)
    types["classifier->logits"] = frozenset((c, "logits") for c in classifiers)
    return types


def containment(types: Mapping[str, frozenset[tuple[str, str]]],
                circuit: Collection[tuple[str, str]]) -> dict[str, int]:
    """{edge type: how many of its edges are in `circuit`}."""
    found = set(circuit)
    return {name: len(edges & found) for name, edges in types.items()}
