"""Path patching: one layer-1 head's effect through one input (query, key or value) of the heads
of a later layer, with every other reader of that head left on the base run.

Standard-layout TransformerLens models: the *direct* path (Wang et al. 2022, as
`transformer_lens.patching.get_act_patch_direct_path`): the source head's source-minus-base write
``z @ W_O`` is added to the destination head's own copy of the residual stream before its LayerNorm
and W_Q / W_K / W_V; paths through an MLP between the two layers are excluded.

The gih model has no residual stream between its layers: the layer-2 query and key are the FFN
feature φ. There the path runs through the FFN: φ is recomputed with only the source head's
output taken from the source run, and patched into the layer-2 query or key alone. Its layer-2
values are the one-hot tokens, which no layer-1 head reaches: the value path is exactly zero.

Patching the destination input is a q/k/v patch of that head at every position, so the sweep runs
on the same engines as `patch_sweep` (the fast one where it applies).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp_icl.errors import require
from interp_icl.models import is_gih
from interp_icl.patching.fast_engine import unsupported_reason
from interp_icl.patching.metrics import Metric
from interp_icl.patching.result import PatchResult
from interp_icl.patching.sources import cached_activations
from interp_icl.patching.sweep import base_and_source, metric_values, patch_sweep
from interp_icl.patching.targets import Target

COMPONENTS = ("q", "k", "v")


def path_patching(
    model: nn.Module,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    metric: Metric,
    *,
    component: str = "q",
    src_layer: int = 0,
    dst_layer: int = 1,
    mode: str = "denoise",
    **options,
) -> PatchResult:
    """Metric with the path from each head of `src_layer` into the `component` input of each head
    of `dst_layer` patched. Result axes ``(src_head, dst_head)``; the metric per sequence."""
    require(component in COMPONENTS, f"unknown path component {component!r}; choose q, k or v")
    cfg = model.cfg
    require(
        0 <= src_layer < dst_layer < cfg.n_layers,
        f"path from layer {src_layer} to layer {dst_layer} does not exist in a {cfg.n_layers}-layer model",
    )
    base, source = base_and_source(model, clean_tokens, corrupted_tokens, mode)
    model.eval()
    if is_gih(model):
        inputs = _gih_destination_inputs(model, base, source, component, src_layer, dst_layer)
    else:
        reason = unsupported_reason(model)
        require(
            reason is None,
            f"path patching needs a standard-layout model or the gih model: {reason}",
        )
        inputs = _direct_destination_inputs(model, base, source, component, src_layer, dst_layer)
    source_values = metric_values(model, source, metric)
    n_src = inputs.shape[0]
    values = []
    for head in range(n_src):
        name = f"blocks.{dst_layer}.attn.hook_{component}"
        result = patch_sweep(
            model,
            base,
            {name: inputs[head]},
            Target(component, by="all", layers=(dst_layer,)),
            metric,
            **options,
        )
        values.append(result.values[0])  # [dst_head, B]
    return PatchResult(
        site=f"path_{component}",
        axes=("src_head", "dst_head"),
        layers=(),
        values=torch.stack(values),
        baseline=result.baseline,
        source=source_values,
        metric=metric.name,
        info={
            **result.info,
            "src_layer": src_layer,
            "dst_layer": dst_layer,
            "component": component,
            "mode": mode,
            "path": "ffn" if is_gih(model) else "direct",
        },
    )


def _direct_destination_inputs(model, base, source, component, src_layer, dst_layer) -> Tensor:
    """``[H_src, B, T, H_dst, dh]``: the destination heads' `component` with one source head's
    write swapped into their pre-LayerNorm residual."""
    z_name = f"blocks.{src_layer}.attn.hook_z"
    resid_name = f"blocks.{dst_layer}.hook_resid_pre"
    base_acts = cached_activations(model, base, [z_name, resid_name])
    source_z = cached_activations(model, source, [z_name])[z_name]
    W_O = model.blocks[src_layer].attn.W_O.detach()  # [H, dh, d]
    delta = torch.einsum("bthe,hed->hbtd", source_z - base_acts[z_name], W_O)  # [H_src, B, T, d]
    resid = base_acts[resid_name][None] + delta
    block = model.blocks[dst_layer]
    if model.cfg.normalization_type == "LN":
        resid = torch.nn.functional.layer_norm(
            resid,
            (resid.shape[-1],),
            block.ln1.w.detach(),
            block.ln1.b.detach(),
            float(model.cfg.eps),
        )
    W = getattr(block.attn, f"W_{component.upper()}").detach()
    b = getattr(block.attn, f"b_{component.upper()}").detach()
    return torch.einsum("sbtd,hde->sbthe", resid, W) + b


def _gih_destination_inputs(model, base, source, component, src_layer, dst_layer) -> Tensor:
    """``[H_src, B, T, 1, F]``: the layer-2 query/key/value with one layer-1 head's output taken
    from the source run (recomputed through the FFN)."""
    require(
        (src_layer, dst_layer) == (0, 1), "the gih model has one path: layer 0 heads into layer 1"
    )
    z_name = "blocks.0.attn.hook_z"
    dst_name = f"blocks.1.attn.hook_{component}"
    source_z = cached_activations(model, source, [z_name])[z_name]
    inputs = []
    for head in range(model.cfg.n_heads):

        def swap(act, hook, head=head):
            act = act.clone()
            act[:, :, head] = source_z[:, :, head]
            return act

        captured: dict[str, Tensor] = {}

        def capture(act, hook, captured=captured):
            captured["act"] = act.detach()
            return act

        with torch.no_grad():
            model.run_with_hooks(base, fwd_hooks=[(z_name, swap), (dst_name, capture)])
        inputs.append(captured["act"])
    return torch.stack(inputs)
