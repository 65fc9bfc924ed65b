"""What a patching sweep patches: a site (an activation) at a granularity, enumerated as configs.

Sites and the TransformerLens hook each one lives at (shapes for B sequences, T positions, H heads):

    resid_pre, resid_mid, resid_post   blocks.{l}.hook_resid_{pre,mid,post}   [B, T, d_model]
    attn_out, mlp_out                  blocks.{l}.hook_{attn,mlp}_out         [B, T, d_model]
    z, q, k, v                         blocks.{l}.attn.hook_{z,q,k,v}         [B, T, H, d_head]
    pattern                            blocks.{l}.attn.hook_pattern           [B, H, T_query, T_key]

``z`` is a head's output before the output projection ("head out" in TransformerLens's names).

Granularities (``by``) and the axes of the result, in TransformerLens's `get_act_patch_*` order:

    residual sites  by="pos"  -> (layer, pos)             by="all" -> (layer,)   every position at once
    z, q, k, v      by="pos"  -> (layer, pos, head)       by="all" -> (layer, head)
    pattern         by="pos"  -> (layer, head, dest_pos)  by="all" -> (layer, head)

A config is one patch: (layer, pos, head) with -1 meaning "every position" / "the whole site".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp_icl.errors import InterpICLError, require

RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
HEAD_SITES = ("z", "q", "k", "v")
SITES = RESIDUAL_SITES + HEAD_SITES + ("pattern",)
GRANULARITIES = ("pos", "all")
ALL = -1  # "every position" / "every head" in a config


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook name of `site` in block `layer`."""
    if site in RESIDUAL_SITES:
        return f"blocks.{layer}.hook_{site}"
    return f"blocks.{layer}.attn.hook_{site}"


@dataclass(frozen=True)
class Target:
    """A site patched at a granularity in chosen layers (default: every layer)."""

    site: str
    by: str = "pos"
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        require(
            self.site in SITES,
            f"unknown patching site {self.site!r}; choose one of {', '.join(SITES)}",
        )
        require(self.by in GRANULARITIES, f"unknown granularity {self.by!r}; choose 'pos' or 'all'")

    @property
    def per_head(self) -> bool:
        return self.site not in RESIDUAL_SITES

    def axes(self) -> tuple[str, ...]:
        """Axis names of the result tensor (TransformerLens order)."""
        if self.site in RESIDUAL_SITES:
            return ("layer", "pos") if self.by == "pos" else ("layer",)
        if self.site == "pattern":
            return ("layer", "head", "dest_pos") if self.by == "pos" else ("layer", "head")
        return ("layer", "pos", "head") if self.by == "pos" else ("layer", "head")

    def resolved_layers(self, n_layers: int) -> tuple[int, ...]:
        layers = tuple(range(n_layers)) if self.layers is None else tuple(self.layers)
        require(layers, "a patching target needs at least one layer")
        for layer in layers:
            require(
                0 <= layer < n_layers, f"layer {layer} is out of range for a {n_layers}-layer model"
            )
        return layers

    def configs(self, n_layers: int, n_heads: int | dict[int, int], seq_len: int) -> Configs:
        """Every patch of the sweep, in the row-major order of `axes()`. `n_heads` may be given per
        layer (``{layer: heads}``); the patched layers must then agree."""
        layers = self.resolved_layers(n_layers)
        if isinstance(n_heads, dict):
            counts = {n_heads[layer] for layer in layers}
            require(
                len(counts) == 1 or not self.per_head,
                f"layers {list(layers)} have different numbers of heads ({sorted(counts)}); patch them separately",
            )
            n_heads = counts.pop()
        positions = list(range(seq_len)) if self.by == "pos" else [ALL]
        heads = list(range(n_heads)) if self.per_head else [ALL]
        rows: list[tuple[int, int, int]] = []
        for layer in layers:
            if self.site == "pattern":  # (layer, head, dest_pos)
                rows += [(layer, pos, head) for head in heads for pos in positions]
            else:  # (layer, pos, head)
                rows += [(layer, pos, head) for pos in positions for head in heads]
        table = torch.tensor(rows, dtype=torch.long)
        shape = [len(layers)]
        for axis in self.axes()[1:]:
            shape.append(n_heads if axis == "head" else seq_len)
        return Configs(
            self.site, table[:, 0], table[:, 1], table[:, 2], tuple(shape), self.axes(), layers
        )


@dataclass
class Configs:
    """The patches of one sweep: parallel ``[C]`` tensors of layer, position and head (-1 = all)."""

    site: str
    layer: Tensor
    pos: Tensor
    head: Tensor
    shape: tuple[int, ...]  # the result tensor's shape, C = prod(shape)
    axes: tuple[str, ...]
    layers: tuple[int, ...]  # the layers the `layer` axis indexes

    def __len__(self) -> int:
        return int(self.layer.shape[0])

    def subset(self, index: Tensor) -> Configs:
        return Configs(
            self.site,
            self.layer[index],
            self.pos[index],
            self.head[index],
            (int(index.numel()),),
            ("config",),
            self.layers,
        )

    def position_mask(self, seq_len: int) -> Tensor:
        """``[C, T]`` bool: the positions each patch writes."""
        positions = torch.arange(seq_len)
        return (self.pos[:, None] == ALL) | (self.pos[:, None] == positions[None, :])

    def head_mask(self, n_heads: int) -> Tensor:
        """``[C, H]`` bool: the heads each patch writes."""
        heads = torch.arange(n_heads)
        return (self.head[:, None] == ALL) | (self.head[:, None] == heads[None, :])


def target_hooks(model, target: Target) -> list[str]:
    """The hook names a target patches on `model`, one per layer; errors if the model lacks one."""
    names = [hook_name(target.site, layer) for layer in target.resolved_layers(model.cfg.n_layers)]
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise InterpICLError(
            f"the model has no hook {missing[0]!r}; site {target.site!r} cannot be patched on it"
        )
    return names


def heads_per_layer(model, target: Target) -> dict[int, int]:
    """``{layer: heads}`` for the target's layers: ``cfg.n_heads``, or the model's own
    ``heads_in_layer`` where it has one (the gih model's layer 2 has one head)."""
    cfg = model.cfg
    counts = {}
    for layer in target.resolved_layers(cfg.n_layers):
        counts[layer] = cfg.n_heads
        if target.per_head and hasattr(model, "heads_in_layer"):
            counts[layer] = model.heads_in_layer(layer)
    return counts
