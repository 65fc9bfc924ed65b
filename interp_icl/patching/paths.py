"""Path patching: one layer-1 head's effect through one input (query, key or value) of the heads
of a later layer, with every other reader of that head left on the base run.

Two routes from a source head to a destination input:

- ``direct`` (standard-layout TransformerLens models; Wang et al. 2022, as
  `transformer_lens.patching.get_act_patch_direct_path`): the source head's source-minus-base write
  ``z @ W_O`` is added to the destination head's own copy of the residual stream before its
  LayerNorm and W_Q / W_K / W_V; routes through an MLP between the two layers are excluded.
- ``all`` (any hooked model): the destination input is recomputed with the source head's output
  taken from the source run and everything between the two layers (residual stream, MLPs, the gih
  FFN) following it; only that destination input is then patched. The gih model has only this
  route (its layer-2 query and key are the FFN feature φ; its values are the one-hot tokens,
  which no layer-1 head reaches, so its value path is exactly zero).

``route="auto"`` (the default) is ``direct`` where the model's layout declares a direct path
(``direct_path``: standard models) and ``all`` otherwise (the gih model).
Patching the destination input is a q/k/v patch of that head at every position, so the sweep runs
on the same engines as `patch_sweep` (the fast one where it applies).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp_icl.errors import require
from interp_icl.models import layout
from interp_icl.patching.fast_engine import unsupported_reason
from interp_icl.patching.metrics import Metric
from interp_icl.patching.result import PatchResult
from interp_icl.patching.sources import cached_activations
from interp_icl.patching.sweep import base_and_source, metric_values, patch_sweep
from interp_icl.patching.targets import Target

COMPONENTS = ("q", "k", "v")
ROUTES = ("auto", "direct", "all")


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
    route: str = "auto",
    **options,
) -> PatchResult:
    """Metric with the path (`route`) from each head of `src_layer` into the `component` input of
    each head of `dst_layer` patched. Result axes ``(src_head, dst_head)``; the metric per sequence."""
    _check_path(model, component, src_layer, dst_layer)
    base, source = base_and_source(model, clean_tokens, corrupted_tokens, mode)
    model.eval()
    z_name = f"blocks.{src_layer}.attn.hook_z"
    source_z = cached_activations(model, source, [z_name])[z_name]
    route = resolve_route(model, route)
    inputs = destination_inputs(model, base, source_z, component, src_layer, dst_layer, route)
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
            "route": route,
        },
    )


def _check_path(model: nn.Module, component: str, src_layer: int, dst_layer: int) -> None:
    require(component in COMPONENTS, f"unknown path component {component!r}; choose q, k or v")
    n_layers = model.cfg.n_layers
    require(
        0 <= src_layer < dst_layer < n_layers,
        f"path from layer {src_layer} to layer {dst_layer} does not exist in a {n_layers}-layer model",
    )


def resolve_route(model: nn.Module, route: str) -> str:
    """``direct`` or ``all`` for `route` on `model` (see the module docstring)."""
    require(route in ROUTES, f"unknown path route {route!r}; choose one of {', '.join(ROUTES)}")
    has_direct = layout(model).direct_path
    if route == "auto":
        return "direct" if has_direct else "all"
    if route == "direct":
        require(
            has_direct,
            "this model (e.g. the gih model) has no direct path between its layers "
            "(its layout sets direct_path False); use route 'all'",
        )
        reason = unsupported_reason(model)
        require(reason is None, f"the direct path needs a standard-layout model: {reason}")
    return route


def destination_inputs(
    model: nn.Module,
    base_tokens: Tensor,
    source_z: Tensor,
    component: str,
    src_layer: int = 0,
    dst_layer: int = 1,
    route: str = "auto",
) -> Tensor:
    """``[H_src, B, T, H_dst, d]``: the `component` input (q, k or v) of every head of `dst_layer`
    on the run of `base_tokens` ``[B, T]``, with the output of one head of `src_layer` replaced by
    its `source_z` ``[B or 1, T, H_src, d_head]`` along `route` only (one slice per source head).
    `source_z` may come from another run (path patching) or be a mean (path ablation)."""
    _check_path(model, component, src_layer, dst_layer)
    if resolve_route(model, route) == "direct":
        return _direct_destination_inputs(
            model, base_tokens, source_z, component, src_layer, dst_layer
        )
    return _recomputed_destination_inputs(
        model, base_tokens, source_z, component, src_layer, dst_layer
    )


def _direct_destination_inputs(model, base, source_z, component, src_layer, dst_layer) -> Tensor:
    """``[H_src, B, T, H_dst, dh]``: the destination heads' `component` with one source head's
    write swapped into their pre-LayerNorm residual."""
    z_name = f"blocks.{src_layer}.attn.hook_z"
    resid_name = f"blocks.{dst_layer}.hook_resid_pre"
    base_acts = cached_activations(model, base, [z_name, resid_name])
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


def _recomputed_destination_inputs(
    model, base, source_z, component, src_layer, dst_layer
) -> Tensor:
    """``[H_src, B, T, H_dst, d]``: the destination `component` recomputed by a forward in which one
    source head's output is taken from `source_z` (every route between the layers follows it)."""
    z_name = f"blocks.{src_layer}.attn.hook_z"
    dst_name = f"blocks.{dst_layer}.attn.hook_{component}"
    for name in (z_name, dst_name):
        require(name in model.hook_dict, f"the model has no hook {name!r}; path patching needs it")
    inputs = []
    for head in range(source_z.shape[2]):

        def swap(act, hook, head=head):
            act = act.clone()
            act[:, :, head] = source_z[:, :, head].to(act.dtype)
            return act

        captured: dict[str, Tensor] = {}

        def capture(act, hook, captured=captured):
            captured["act"] = act.detach()
            return act

        with torch.no_grad():
            model.run_with_hooks(base, fwd_hooks=[(z_name, swap), (dst_name, capture)])
        inputs.append(captured["act"])
    return torch.stack(inputs)
