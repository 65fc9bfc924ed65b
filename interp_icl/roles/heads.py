"""Head sets and the account of a head: ablations of several heads at once, their paths into the
last layer, and what a head's output encodes.

Ablation sources are ``z`` activations ``[1 or B, T, H, d_head]`` of a layer: its position-wise
mean over reference sequences (``mean``; for a copier of a one-hot token this removes the copied
token and keeps the average) or another sequence's (``resample``: sequence b gets sequence b-1's).

Paths of a copier-layer head set into the last layer L (route "all": everything between the
layers, MLPs and the gih FFN included, follows the ablation):
  * ``q`` / ``k`` / ``v``: only that input of every layer-L head is recomputed with the set
    ablated and patched into the clean run;
  * ``other``: the set ablated with every layer-L head's q, k and v held at their clean values
    (the direct path to the output, and anything after layer L's attention).
A last-layer head has one path, ``out`` (its own output).

`account` describes one head: its effects (mean and resample ablation, per path), its attention
(entropy in nats over the rows that predict targets, mass on attention offsets 0..R, mass on keys
matching the target on every parent offset) and what its output encodes: held-out R² of a linear
probe (least squares with an intercept, fitted on the first half of the sequences, scored on the
second) from the head's ``z`` at each position to candidate features — the token at attention
offset r (one-hot), the position, the in-context frequency of each token so far, and the in-context
frequency of the token the target's parent context was followed by (``parent_context_count``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from interp_icl.analysis.copier import offset_masses
from interp_icl.analysis.result import row
from interp_icl.models import target_offset
from interp_icl.patching.interventions import Hook, replace, run_patched
from interp_icl.patching.sources import cached_activations
from interp_icl.roles.check import HeadEffect
from interp_icl.roles.context import RoleContext, match_masks, mean_interval

COMPONENTS = ("q", "k", "v")
PROBE_MIN_ROWS = 8


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def layer_z(ctx: RoleContext, layer: int, tokens: Tensor | None = None) -> Tensor:
    """``[B, T, H, d_head]`` the layer's head outputs on `tokens` (default: the clean ones)."""
    if tokens is None:
        return ctx.cached(z_name(layer))
    return cached_activations(ctx.model, tokens, [z_name(layer)])[z_name(layer)]


def ablation_hooks(units: Sequence[tuple[int, int]], sources: dict[int, Tensor]) -> list[Hook]:
    """Hooks replacing the ``z`` of every (layer, head) in `units` by ``sources[layer]``
    ``[1 or B, T, H, d]`` (one hook per layer; all applied in one forward)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in units:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, heads in sorted(by_layer.items()):
        index = torch.tensor(heads, dtype=torch.long)
        source = sources[layer]

        def hook(act: Tensor, hook, index=index, source=source) -> Tensor:
            act = act.clone()
            act[:, :, index] = source[:, :, index].to(act.dtype).expand(act.shape[0], -1, -1, -1)
            return act

        hooks.append((z_name(layer), hook))
    return hooks


def set_effect(ctx: RoleContext, units: Sequence[tuple[int, int]], sources: dict[int, Tensor]) -> Tensor:
    """``[B]`` loss change when the heads `units` are ablated together (every path)."""
    return ctx.loss(ablation_hooks(units, sources)) - ctx.clean


def path_effects(
    ctx: RoleContext, units: Sequence[tuple[int, int]], sources: dict[int, Tensor]
) -> dict[str, Tensor]:
    """{path: ``[B]`` loss change} of ablating the heads `units` together along each path into
    the last layer (``q``, ``k``, ``v``, ``other``; see the module docstring)."""
    last = ctx.shape.classifier_layer
    names = {c: f"blocks.{last}.attn.hook_{c}" for c in COMPONENTS}
    captured: dict[str, Tensor] = {}

    def capture(c: str) -> Hook:
        def hook(act: Tensor, hook) -> Tensor:
            captured[c] = act.detach()
            return act

        return (names[c], hook)

    ablate = ablation_hooks(units, sources)
    run_patched(ctx.model, ctx.tokens, [*ablate, *[capture(c) for c in COMPONENTS]])
    out = {c: ctx.loss([(names[c], replace(captured[c]))]) - ctx.clean for c in COMPONENTS}
    held = [(names[c], replace(ctx.cached(names[c]))) for c in COMPONENTS]
    out["other"] = ctx.loss([*ablate, *held]) - ctx.clean
    return out


def resample_z(ctx: RoleContext, layer: int) -> Tensor:
    """``[B, T, H, d]``: sequence b gets the layer's z of sequence b - 1."""
    return layer_z(ctx, layer).roll(1, dims=0)


def attention_summary(ctx: RoleContext, layer: int, head: int, max_offset: int) -> dict:
    """Entropy (nats), mass on attention offsets 0..max_offset and on full-match keys, averaged
    over the rows that predict targets t0..T-1 and over sequences."""
    name = f"blocks.{layer}.attn.hook_pattern"
    pattern = ctx.cached(name)[:, head].double()  # [B, T, T]
    off = target_offset(ctx.model)
    rows = torch.arange(ctx.t0, ctx.tokens.shape[1]) - off
    p = pattern[:, rows]
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()
    masses = offset_masses(pattern[:, None], max_offset)[:, 0].mean((0, 1))  # [R+1]
    full, _, _ = match_masks(ctx.tokens, ctx.parents, ctx.t0)  # [B, Q, T]
    full_mass = (p * full).sum(-1).mean()
    return {
        "entropy": float(entropy),
        "offset_mass": {str(r): float(m) for r, m in enumerate(masses)},
        "full_match_mass": float(full_mass),
    }


def candidate_features(ctx: RoleContext, max_offset: int) -> dict[str, Tensor]:
    """{feature name: ``[B, T, k]`` float64} the probes try (see the module docstring)."""
    tokens, vocab = ctx.tokens, ctx.vocab
    batch, seq = tokens.shape
    onehot = torch.nn.functional.one_hot(tokens, vocab).double()  # [B, T, d]
    features = {}
    for r in range(max_offset + 1):
        shifted = torch.zeros_like(onehot)
        shifted[:, r:] = onehot[:, : seq - r]
        features[f"token_at_offset_{r}"] = shifted
    features["position"] = torch.arange(seq, dtype=torch.float64)[None, :, None].expand(batch, seq, 1)
    cumulative = onehot.cumsum(1)
    features["token_frequencies"] = cumulative / torch.arange(1, seq + 1, dtype=torch.float64)[None, :, None]
    return features


def probe_r2(z: Tensor, feature: Tensor, first: int) -> float:
    """Held-out R² of a least-squares probe ``z [B, T, d] -> feature [B, T, k]`` over positions
    >= `first`: fitted on the first half of the sequences, scored on the second; the k outputs
    pooled, R² = 1 - SSE / SST with SST around the held-out half's own mean (so a probe that
    predicts no better than that mean scores <= 0)."""
    batch = z.shape[0]
    half = batch // 2
    x = z[:, first:].double()
    y = feature[:, first:].double()
    ones = torch.ones(*x.shape[:2], 1, dtype=torch.float64)
    x = torch.cat([x, ones], -1)
    x_fit, y_fit = x[:half].reshape(-1, x.shape[-1]), y[:half].reshape(-1, y.shape[-1])
    x_test, y_test = x[half:].reshape(-1, x.shape[-1]), y[half:].reshape(-1, y.shape[-1])
    if x_fit.shape[0] < PROBE_MIN_ROWS or x_test.shape[0] < PROBE_MIN_ROWS:
        return math.nan
    weights = torch.linalg.lstsq(x_fit, y_fit, driver="gelsd").solution
    sse = ((x_test @ weights - y_test) ** 2).sum()
    sst = ((y_test - y_test.mean(0)) ** 2).sum()
    return float(1 - sse / sst) if sst > 0 else math.nan


def other_heads(
    ctx: RoleContext, layer: int, outside: Sequence[int], mean_z: Tensor, floor: float, rows: list[dict]
) -> list[HeadEffect]:
    """The accounts of the heads `outside` a role's sets in `layer` that matter: mean- or
    resample-ablating the head alone changes the loss by more than `floor` nats with an interval
    above 0 (null: a head that does not matter changes it by 0). Every head's two ablation effects
    are appended to `rows` (table rows)."""
    out = []
    for h in outside:
        effects = {"mean": set_effect(ctx, [(layer, h)], {layer: mean_z}),
                   "resample": set_effect(ctx, [(layer, h)], {layer: resample_z(ctx, layer)})}
        for kind, values in effects.items():
            rows.append(row(f"L{layer}H{h}", f"{kind}_ablation_effect", values, layer=layer, head=h))
        if any(_above(values, floor) for values in effects.values()):
            out.append(account(ctx, layer, h, mean_z, effects))
    return out


def _above(values: Tensor, floor: float) -> bool:
    mean, _, interval = mean_interval(values)
    return mean > floor and interval is not None and interval[0] > 0


def account(
    ctx: RoleContext, layer: int, head: int, mean_z: Tensor, effects: dict[str, Tensor] | None = None
) -> HeadEffect:
    """What head `head` of `layer` does and through which path (see the module docstring);
    `effects` {"mean", "resample": ``[B]``} are its ablation effects if already measured. The
    headline effect is the larger of the two."""
    z = layer_z(ctx, layer)
    unit = [(layer, head)]
    if effects is None:
        effects = {"mean": set_effect(ctx, unit, {layer: mean_z}),
                   "resample": set_effect(ctx, unit, {layer: resample_z(ctx, layer)})}
    kind = max(effects, key=lambda k: mean_interval(effects[k])[0])
    mean, stderr, _ = mean_interval(effects[kind])
    if layer != ctx.shape.classifier_layer:
        by_path = {c: mean_interval(v)[0] for c, v in path_effects(ctx, unit, {layer: mean_z}).items()}
    else:
        by_path = {"out": mean_interval(effects["mean"])[0]}
    by_path.update({f"{k} ablation": mean_interval(v)[0] for k, v in effects.items()})
    max_offset = ctx.t0
    features = candidate_features(ctx, max_offset)
    encodes = {name: probe_r2(z[:, :, head], f, max_offset) for name, f in features.items()}
    return HeadEffect(
        unit=f"L{layer}H{head}",
        layer=layer,
        head=head,
        ablation=kind,
        effect=mean,
        stderr=stderr,
        paths=by_path,
        attention=attention_summary(ctx, layer, head, max_offset),
        encodes=encodes,
    )
