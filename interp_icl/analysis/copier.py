"""Copier pass: which earlier token each layer-1 head copies into a position (REFERENCE §1).

"Layer 1" means the copier layers, every layer before the last (`ModelLayout.copier_layers`:
layer 0 of a 2-layer model, layers 0 and 1 of a 3-layer one); a 1-layer model has none. For head h
of a copier layer and attention offset r (query i, key i - r) it measures
  * ``attn_mass``: mean attention A[h, i, i - r] over query positions i >= R (so every offset
    0..R exists; R = `max_offset`), averaged within a sequence, mean ± stderr over sequences;
    ``attn_mass_beyond``: the mass on offsets > R;
  * ``causal_change``: ||z'_i - z_i|| / ||z_i|| of the head's output (``hook_z``) at i when only the
    token at i - r is replaced by a different random token — a causal check that the head's output
    carries that token.
A head's copied offset is the offset of its largest mean mass; its sharpness is that mass. A head
with sharpness >= `copier_threshold` (default 0.5) is a copier. Offsets are reported both as
attention offsets r and as parent offsets r + target_offset (see `interp_icl.analysis.common`): in
a TransformerLens model the token at i itself is parent offset 1 of the next token and reaches
layer 2 through the residual stream, not through a head. The same head serves both sides of layer
2: at a key position l it carries x_{l-r}, i.e. key-side offset r (the offset the selector reports
for keys). So a TransformerLens model that implements the {1,2}-gram typically has copiers at
attention offsets {1, 2}: offset 1 feeds the query (parent 2; parent 1 is the residual) and both
feed the keys. The summary lists ``copied_attn_offsets`` (= key-side offsets) and
``copied_parent_offsets`` (query side); in a gih model the two coincide. Heads are named
``L{layer}H{head}``; with several copier layers the summary's ``layer`` is their list and each
head entry carries its ``layer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import ActivationMemo, check_tokens_for, hook_cache, resample_one_position, target_offset
from interp_icl.analysis.result import PassResult, make_table, row
from interp_icl.errors import require
from interp_icl.models import layout
from interp_icl.seeding import seeded

COPIER_THRESHOLD = 0.5


def default_max_offset(model: nn.Module, parents: tuple[int, ...] | None) -> int:
    """Largest attention/parent offset the passes look at: the layer-1 window + 1 when the layout
    declares one (gih: M + 1), else max(parents) + 2 (so at least one non-parent offset is
    measured), else 4."""
    window = layout(model).window
    if window is not None:
        return int(window) + 1
    return max(parents) + 2 if parents else 4


def offset_masses(pattern: Tensor, max_offset: int) -> Tensor:
    """Attention mass per offset, ``[B, H, T, T] -> [B, H, T - R, R + 1]`` for queries i >= R:
    out[b, h, i - R, r] = pattern[b, h, i, i - r]."""
    seq = pattern.shape[-1]
    queries = torch.arange(max_offset, seq)
    cols = [pattern[:, :, queries, queries - r] for r in range(max_offset + 1)]
    return torch.stack(cols, dim=-1)


def copier(
    model: nn.Module,
    tokens: Tensor,
    parents: tuple[int, ...] | None = None,
    max_offset: int | None = None,
    layer: int | Sequence[int] = 0,
    repeats: int = 2,
    seed: int = 0,
    copier_threshold: float = COPIER_THRESHOLD,
    memo: ActivationMemo | None = None,
) -> PassResult:
    """Copier pass on `tokens` ``[B, T]`` over layer `layer` (or each of several layers, one
    resampled batch for all); `parents` (the task's true parent offsets) is optional and only used
    for the summary's comparison."""
    layers = [layer] if isinstance(layer, int) else list(layer)
    require(layers, "the copier pass needs at least one layer")
    tokens = check_tokens_for(model, tokens)
    parents = tuple(sorted(parents)) if parents else None
    max_offset = default_max_offset(model, parents) if max_offset is None else max_offset
    batch, seq = tokens.shape
    require(max_offset >= 1, f"max_offset must be >= 1, got {max_offset}")
    require(seq >= 2 * max_offset + 1, f"copier needs sequences of at least {2 * max_offset + 1} tokens, got {seq}")
    off = target_offset(model)
    names = {n for ell in layers for n in (f"blocks.{ell}.attn.hook_pattern", f"blocks.{ell}.attn.hook_z")}
    clean = hook_cache(model, tokens, sorted(names), memo=memo)
    generator = seeded(seed)
    corrupted, source, changed = resample_one_position(
        tokens, model.cfg.d_vocab, max_offset, seq - 1 - max_offset, repeats, generator
    )
    z_names = [f"blocks.{ell}.attn.hook_z" for ell in layers]
    dirty = hook_cache(model, corrupted, z_names, memo=memo)
    rows, heads = [], {}
    for ell in layers:
        layer_rows, layer_heads = _layer_heads(
            clean[f"blocks.{ell}.attn.hook_pattern"], clean[f"blocks.{ell}.attn.hook_z"][source],
            dirty[f"blocks.{ell}.attn.hook_z"], changed, ell, off, max_offset, repeats, copier_threshold,
        )
        rows += layer_rows
        for unit, entry in layer_heads.items():
            heads[unit] = entry if len(layers) == 1 else {"layer": ell, **entry}

    copied = sorted({v["parent_offset"] for v in heads.values() if v["is_copier"]})
    copied_attn = sorted({v["attn_offset"] for v in heads.values() if v["is_copier"]})
    residual = [1] if off == 1 else []
    summary = {
        "layer": layers[0] if len(layers) == 1 else layers,
        "target_offset": off,
        "max_offset": max_offset,
        "copier_threshold": copier_threshold,
        "heads": heads,
        "copied_attn_offsets": copied_attn,
        "copied_parent_offsets": copied,
        "residual_parent_offsets": residual,
        "true_parents": list(parents) if parents else None,
        "copied_equals_parents": (copied == list(parents)) if parents else None,
        "parents_covered": (set(parents) <= set(copied) | set(residual)) if parents else None,
        "n_sequences": batch,
    }
    return PassResult("copier", make_table(rows), summary)


def _layer_heads(
    pattern: Tensor,
    z_clean: Tensor,
    z_corr: Tensor,
    changed: Tensor,
    layer: int,
    off: int,
    max_offset: int,
    repeats: int,
    copier_threshold: float,
) -> tuple[list[dict], dict[str, dict]]:
    """Rows and head entries of one layer. pattern ``[B, H, T, T]``; z_clean / z_corr
    ``[R*B, T, H, dz]`` (clean rows aligned with the corrupted copies); changed ``[R*B]``."""
    masses = offset_masses(pattern, max_offset)  # [B, H, Q, R+1]
    batch, n_heads = masses.shape[:2]
    rows_idx = torch.arange(len(changed))

    # causal[b, h, r]: relative change of head h's output at j + r when token j is replaced
    causal = torch.zeros(batch, n_heads, max_offset + 1, dtype=torch.float64)
    for r in range(max_offset + 1):
        i = changed + r
        delta = (z_corr[rows_idx, i] - z_clean[rows_idx, i]).norm(dim=-1)  # [R*B, H]
        base = z_clean[rows_idx, i].norm(dim=-1).clamp_min(1e-12)
        per_copy = (delta / base).view(repeats, batch, n_heads)
        causal[:, :, r] = per_copy.double().mean(0)

    rows, heads = [], {}
    for h in range(n_heads):
        unit = f"L{layer}H{h}"
        per_seq = masses[:, h].mean(1)  # [B, R+1]
        for r in range(max_offset + 1):
            labels = dict(layer=layer, head=h, offset=r, parent_offset=r + off)
            rows.append(row(f"{unit} r={r}", "attn_mass", per_seq[:, r], **labels))
            rows.append(row(f"{unit} r={r}", "causal_change", causal[:, h, r], **labels))
        beyond = 1.0 - per_seq.sum(-1)
        rows.append(row(f"{unit} r>{max_offset}", "attn_mass_beyond", beyond, layer=layer, head=h))
        mean_mass = per_seq.mean(0)
        r_best = int(mean_mass.argmax())
        heads[unit] = {
            "head": h,
            "attn_offset": r_best,
            "parent_offset": r_best + off,
            "sharpness": float(mean_mass[r_best]),
            "is_copier": bool(mean_mass[r_best] >= copier_threshold),
            "causal_offset": int(causal[:, h].mean(0).argmax()),
        }

    return rows, heads
