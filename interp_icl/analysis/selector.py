"""Selector pass: which parent offsets the feature that layer 2 compares depends on (REFERENCE §1).

Layer 2 scores key position l for query position i by comparing a key feature at l with a query
feature at i. The selector pass resamples one token at a time and measures how much each feature
moves, by parent offset δ:
  * key side — feature at l, whose own token x_l is the one layer 2 would copy; δ = l - j for the
    resampled position j (δ = 0 is the copied token itself, reported but never "selected");
  * query side — feature at i, which predicts token t = i + target_offset; δ = t - j >= 1.
"Layer 2" is the comparing layer, the model's last (`ModelLayout.classifier_layer`: layer 1 of a
2-layer model, layer 2 of a 3-layer one). Features ("units"): for every head of that layer its
query and key vectors (``blocks.{L}.attn.hook_q`` / ``hook_k``), plus the feature the layout
declares it compares (`ModelLayout.compared_feature`) — the stream it reads,
``blocks.{L}.hook_resid_pre``, in a TransformerLens model, the FFN feature φ
(``blocks.0.mlp.hook_feature``) in the gih model.

Normalised sensitivity s(δ) = E||f(x with x_j resampled) - f(x)|| / E||f(x) - f(x~)||, where x~ is
another sequence (the feature's typical spread at the same positions); mean ± stderr over
sequences. Offsets 1..R are ranked by s; the selected set is the top group before the largest gap,
and the confidence margin is that gap divided by the largest s (in [0, 1]). A side is confident
when its margin >= `margin_threshold` (0.5). Layer 2 can only compare what both sides carry, so a
unit's selected set is the intersection of its key-side and query-side sets, with the smaller margin.

For gih models the pass also reads p_S (``blocks.0.mlp.hook_subset_weights``) and names each head
subset by the parent offsets its heads copy; there the selection is confident only if, in addition,
p_S of the top subset exceeds the runner-up by `margin_threshold` (at the reference initialisation
p_S is uniform and the feature depends on every offset the heads prefer).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import ActivationMemo, check_tokens_for, hook_cache, resample_one_position, target_offset
from interp_icl.analysis.copier import default_max_offset, offset_masses
from interp_icl.analysis.result import PassResult, make_table, row, scalar_row, set_label
from interp_icl.errors import require
from interp_icl.models import layout
from interp_icl.seeding import seeded

MARGIN_THRESHOLD = 0.5


def select_by_gap(sensitivity: dict[int, float]) -> tuple[list[int], float]:
    """(selected offsets, margin): offsets ranked by sensitivity, cut at the largest gap between
    consecutive values; margin = gap / largest value (0 when every value is 0)."""
    ranked = sorted(sensitivity.items(), key=lambda kv: -kv[1])
    top = ranked[0][1] if ranked else 0.0
    if len(ranked) < 2 or top <= 0:
        return [], 0.0
    gaps = [ranked[k][1] - ranked[k + 1][1] for k in range(len(ranked) - 1)]
    cut = max(range(len(gaps)), key=lambda k: gaps[k])
    return sorted(o for o, _ in ranked[: cut + 1]), gaps[cut] / top


def feature_units(model: nn.Module, layer: int) -> dict[str, tuple[str, int | None]]:
    """{unit label: (hook name, head index or None)} of the features layer `layer` compares: each
    head's q/k, and the layout's compared feature (for the last layer; else the layer's input
    ``hook_resid_pre``) when the model has that hook."""
    hooks = set(model.hook_dict)
    units: dict[str, tuple[str, int | None]] = {}
    q_name = f"blocks.{layer}.attn.hook_q"
    require(q_name in hooks, f"model has no hook {q_name}; the selector needs a layer-{layer} attention")
    n_heads = hook_cache(model, torch.zeros(1, 2, dtype=torch.long), [q_name])[q_name].shape[2]
    for h in range(n_heads):
        units[f"L{layer}H{h} q/k"] = ("qk", h)
    shape = layout(model)
    name = shape.compared_feature if layer == shape.classifier_layer else f"blocks.{layer}.hook_resid_pre"
    if name in hooks:
        if name == f"blocks.{layer}.hook_resid_pre":
            label = f"resid_pre L{layer}"
        else:
            label = "ffn feature" if name.endswith("mlp.hook_feature") else name
        units[label] = (name, None)
    return units


def selector(
    model: nn.Module,
    tokens: Tensor,
    parents: tuple[int, ...] | None = None,
    max_offset: int | None = None,
    layer: int | None = None,
    repeats: int = 2,
    seed: int = 0,
    margin_threshold: float = MARGIN_THRESHOLD,
    memo: ActivationMemo | None = None,
) -> PassResult:
    """Selector pass on `tokens` ``[B, T]`` at the comparing layer `layer` (default: the last);
    `parents` only feeds the summary's comparison."""
    layer = layout(model).classifier_layer if layer is None else layer
    tokens = check_tokens_for(model, tokens)
    parents = tuple(sorted(parents)) if parents else None
    max_offset = default_max_offset(model, parents) if max_offset is None else max_offset
    batch, seq = tokens.shape
    require(seq >= 2 * max_offset + 2, f"selector needs sequences of at least {2 * max_offset + 2} tokens, got {seq}")
    off = target_offset(model)
    units = feature_units(model, layer)
    q_name, k_name = f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"
    names = [q_name, k_name] + [name for name, head in units.values() if head is None]

    clean = hook_cache(model, tokens, names, memo=memo)
    generator = seeded(seed)
    corrupted, source, changed = resample_one_position(
        tokens, model.cfg.d_vocab, max_offset, seq - 1 - max_offset, repeats, generator
    )
    dirty = hook_cache(model, corrupted, names, memo=memo)
    partner = torch.roll(torch.arange(batch), 1)  # another sequence, for the spread
    rows_idx = torch.arange(len(source))
    positions = torch.arange(max_offset, seq)

    def side_features(cache: dict[str, Tensor], name: str, head: int | None, side: str) -> Tensor:
        if head is None:
            return cache[name]
        return cache[q_name if side == "query" else k_name][:, :, head]

    rows: list[dict] = []
    units_summary: dict[str, dict] = {}
    for unit, (name, head) in units.items():
        sides = {}
        for side in ("key", "query"):
            f_clean = side_features(clean, name, head, side)  # [B, T, F]
            f_dirty = side_features(dirty, name, head, side)
            spread = (f_clean[:, positions] - f_clean[partner][:, positions]).norm(dim=-1).mean()
            spread = float(spread.clamp_min(1e-12))
            first = 0 if side == "key" else 1
            sens: dict[int, float] = {}
            for delta in range(first, max_offset + 1):
                pos = changed + delta - (off if side == "query" else 0)
                valid = (pos >= 0) & (pos < seq)
                moved = (f_dirty[rows_idx, pos.clamp(0, seq - 1)] - f_clean[source, pos.clamp(0, seq - 1)]).norm(dim=-1)
                moved = torch.where(valid, moved / spread, torch.full_like(moved, float("nan")))
                per_seq = torch.nanmean(moved.view(repeats, batch).double(), dim=0)
                labels = dict(layer=layer, head=head, side=side, offset=delta, feature=name if head is None else "q/k")
                r = row(f"{unit} {side} δ={delta}", "sensitivity", per_seq, **labels)
                rows.append(r)
                sens[delta] = r["mean"]
            chosen, margin = select_by_gap({d: v for d, v in sens.items() if d >= 1})
            sides[side] = {"selected": chosen, "margin": margin, "confident": margin >= margin_threshold}
        both = sorted(set(sides["key"]["selected"]) & set(sides["query"]["selected"]))
        margin = min(sides["key"]["margin"], sides["query"]["margin"])
        units_summary[unit] = {
            "key": sides["key"],
            "query": sides["query"],
            "selected": both,
            "margin": margin,
            "confident": bool(both) and margin >= margin_threshold,
        }

    head_units = [u for u, (_, h) in units.items() if h is not None]
    best = max(head_units, key=lambda u: units_summary[u]["margin"])
    headline = units_summary[best]
    summary = {
        "layer": layer,
        "target_offset": off,
        "max_offset": max_offset,
        "margin_threshold": margin_threshold,
        "units": units_summary,
        "best_unit": best,
        "selected_offsets": headline["selected"],
        "margin": headline["margin"],
        "confident": headline["confident"],
        "true_parents": list(parents) if parents else None,
        "selected_equals_parents": (headline["selected"] == list(parents)) if parents else None,
        "n_sequences": batch,
    }
    if "blocks.0.mlp.hook_subset_weights" in model.hook_dict and hasattr(model, "subsets"):
        weights = _subset_weights(model, tokens, rows, layer)
        summary["subset_weights"] = weights
        # a gih model has selected only once p_S concentrates on one subset of heads
        summary["confident"] = bool(summary["confident"] and weights["margin_to_second"] >= margin_threshold)
    return PassResult("selector", make_table(rows), summary)


def _subset_weights(model: nn.Module, tokens: Tensor, rows: list[dict], layer: int) -> dict:
    """p_S of a gih model with each head subset named by the parent offsets its heads copy."""
    names = ["blocks.0.mlp.hook_subset_weights", "blocks.0.attn.hook_pattern"]
    cache = hook_cache(model, tokens[:8], names)
    p = cache[names[0]][0] if cache[names[0]].ndim > 1 else cache[names[0]]
    window = int(layout(model).window)
    masses = offset_masses(cache[names[1]], window).mean((0, 2))  # [H, window+1]
    copied = [int(masses[h].argmax()) + target_offset(model) for h in range(masses.shape[0])]
    entries = []
    for k, subset in enumerate(model.subsets):
        offsets = sorted(copied[h] for h in subset)
        label = set_label(offsets)
        rows.append(scalar_row(f"p_S {label}", "subset_weight", float(p[k]), 1, heads=str(list(subset)), offset_set=label))
        entries.append((float(p[k]), offsets, list(subset)))
    entries.sort(key=lambda e: -e[0])
    return {
        "top_offsets": entries[0][1],
        "top_heads": entries[0][2],
        "top_weight": entries[0][0],
        "margin_to_second": entries[0][0] - entries[1][0] if len(entries) > 1 else entries[0][0],
        "all": [{"offsets": o, "heads": h, "p": w} for w, o, h in entries],
    }
