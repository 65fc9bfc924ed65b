"""The copier role (layer 1): for every parent p, a set of copier-layer heads carries the token at
offset p into the last layer's keys (and, where p - target_offset >= 1, the token at that offset
into its queries) — REFERENCE §1.

Detector. A copier-layer head *copies offset r* when its mean attention mass on attention offset r
(query i, key i - r; `interp_icl.analysis.copier.offset_masses`, over queries i >= R) is at least
COPY_MASS (0.5, the copier pass's threshold). For parent p the *key set* K_p is every head copying
offset p; the *query set* Q_p every head copying offset p - o, o the target offset (standard
models: row i = t - 1 predicts token t, so the query's parent p sits at attention offset p - 1, and
offset 0 is the row's own token, carried by the residual stream, no head; gih: o = 0, Q_p = K_p).
Shared copying (two heads each copying offset p at half weight) is one set.

Causal test. Each set is mean-ablated (its heads' ``z`` replaced by the mean over reference
sequences, which removes the copied token) along one path only: into every last-layer head's keys
for K_p, queries for Q_p (`interp_icl.roles.heads.path_effects`). Removing parent p from either side
turns the pa-gram into the (pa - {p})-gram, so the expected loss change is that estimator gap,
``cost(p)``, on the same sequences.

Checks, per parent p (``parent_<p>_key``, and ``parent_<p>_query`` where a query set is needed):
    measured = path effect / cost(p) (loss change in units of the estimator gap), interval over
    sequences (normal, from the per-sequence effects; the gap's own spread is small); needed
    >= NEEDED_FRACTION (0.5); null: a set that does not carry p, or an empty set, has effect 0 —
    the interval must exclude 0. An empty set fails with measured None.
The whole-set effect (every path) and each head's own path effects are in the table.

Other heads that matter. Every copier-layer head outside all sets is mean- and resample-ablated;
one whose larger effect exceeds MATTERS_FRACTION (0.1) x the smallest cost(p) with an interval
above 0 is reported with its account (`interp_icl.roles.heads.account`), never failing the role.
"""

from __future__ import annotations

import math

from torch import Tensor

from interp_icl.analysis.copier import offset_masses
from interp_icl.analysis.result import make_table, row, set_label
from interp_icl.models import target_offset
from interp_icl.roles.check import Check, RoleResult, passes
from interp_icl.roles.context import RoleContext, mean_interval
from interp_icl.roles.heads import layer_z, other_heads, path_effects, set_effect

ROLE = "copier"
COPY_MASS = 0.5
NEEDED_FRACTION = 0.5
MATTERS_FRACTION = 0.1


def offset_mass(ctx: RoleContext, layer: int) -> Tensor:
    """``[H, R+1]``: each head's mean attention mass on attention offsets 0..R (R = t0)."""
    name = f"blocks.{layer}.attn.hook_pattern"
    pattern = ctx.cached(name)
    return offset_masses(pattern, ctx.t0).double().mean((0, 2))


def copying_heads(ctx: RoleContext) -> dict[int, dict[int, list[int]]]:
    """{layer: {attention offset r: [heads copying r]}} over the copier layers."""
    out: dict[int, dict[int, list[int]]] = {}
    for layer in ctx.shape.copier_layers:
        mass = offset_mass(ctx, layer)
        by_offset: dict[int, list[int]] = {}
        for h in range(mass.shape[0]):
            r = int(mass[h].argmax())
            if mass[h, r] >= COPY_MASS:
                by_offset.setdefault(r, []).append(h)
        out[layer] = by_offset
    return out


def parent_sets(ctx: RoleContext) -> dict[tuple[int, str], list[tuple[int, int]]]:
    """{(parent p, side "key"/"query"): [(layer, head), ...]} — the detector's head sets; the query
    side appears only where the query's parent sits at an attention offset >= 1."""
    copies = copying_heads(ctx)
    off = target_offset(ctx.model)
    sets = {}
    for p in ctx.parents:
        sides = [("key", p)] + ([("query", p - off)] if off > 0 and p - off >= 1 else [])
        for side, r in sides:
            sets[(p, side)] = [(layer, h) for layer, by in copies.items() for h in by.get(r, [])]
    return sets


def copier_role(ctx: RoleContext, reference: Tensor) -> RoleResult:
    """The copier checks on `ctx` with means of ``z`` from `reference` ``[R, T]``."""
    shape = ctx.shape
    means = {layer: layer_z(ctx, layer, reference).mean(0, keepdim=True) for layer in shape.copier_layers}
    costs = {p: ctx.parent_cost(p) for p in ctx.parents}
    smallest_cost = min(mean_interval(c)[0] for c in costs.values())
    rows = [row("model", "loss", ctx.clean), row("pa-gram estimator", "loss", ctx.estimator(ctx.parents), offset_set=set_label(ctx.parents))]
    rows += [row(f"without parent {p}", "expected_effect", c, parent=p) for p, c in costs.items()]
    checks, members = [], {}
    for (p, side), heads in parent_sets(ctx).items():
        name = f"parent_{p}_{side}"
        members[name] = [f"L{layer}H{h}" for layer, h in heads]
        cost, _, _ = mean_interval(costs[p])
        if not heads:
            checks.append(Check(ROLE, name, None, NEEDED_FRACTION, ">=", None, False,
                                "an empty set has effect 0",
                                f"no copier-layer head copies attention offset {_offset(ctx, p, side)} "
                                f"(the {side} side of parent {p})"))
            continue
        effect = _set_path_effect(ctx, heads, means, "k" if side == "key" else "q", rows, name, p)
        mean, _, interval = mean_interval(effect / cost) if cost > 0 else (math.nan, math.nan, None)
        holds = passes(mean, NEEDED_FRACTION, ">=") and interval is not None and interval[0] > 0
        checks.append(Check(
            ROLE, name, mean, NEEDED_FRACTION, ">=", interval, bool(holds),
            "a set that does not carry the parent has effect 0 (the interval must exclude 0)",
            f"{'+'.join(members[name])} mean-ablated into the last layer's {'keys' if side == 'key' else 'queries'}: loss "
            f"{mean_interval(effect)[0]:+.3f} nats vs {cost:.3f} for removing parent {p}",
        ))
    in_sets = {u for units in members.values() for u in units}
    others = []
    for layer in shape.copier_layers:
        outside = [h for h in range(means[layer].shape[2]) if f"L{layer}H{h}" not in in_sets]
        others += other_heads(ctx, layer, outside, means[layer], MATTERS_FRACTION * smallest_cost, rows)
    details = {"sets": members, "expected_effect": {str(p): mean_interval(c)[0] for p, c in costs.items()},
               "copy_mass": COPY_MASS}
    return RoleResult(ROLE, checks, make_table(rows), details, others)


def _offset(ctx: RoleContext, p: int, side: str) -> int:
    return p if side == "key" else p - target_offset(ctx.model)


def _set_path_effect(ctx, heads, means, component, rows, name, parent) -> Tensor:
    """``[B]`` the loss change of ablating the set `heads` [(layer, head)] along `component`;
    table rows for the set's every-path and per-path effects."""
    effects = path_effects(ctx, heads, means)
    labels = {"parent": parent, "heads": ",".join(f"L{layer}H{h}" for layer, h in heads)}
    rows.append(row(name, "set_ablation_effect", set_effect(ctx, heads, means), **labels))
    for c, v in effects.items():
        rows.append(row(name, "set_path_effect", v, component=c, **labels))
    return effects[component]
