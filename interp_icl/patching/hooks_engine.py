"""The generic patching engine: any hooked model, through `run_with_hooks` only.

C patches are run in one forward by stacking C copies of the base batch along the batch axis
(config-major: row c*B + b is sequence b under patch c); one hook per patched layer writes each
copy's patch with a mask. Nothing is skipped, so every patch costs a full forward of B sequences;
the win over one forward per patch is the per-forward overhead. `fast_engine` recomputes less.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp_icl.patching.metrics import unread_to_nan
from interp_icl.patching.targets import RESIDUAL_SITES, Configs, hook_name


def site_mask(configs: Configs, layer: int, act_shape: tuple[int, ...]) -> Tensor:
    """``[C, 1, *act_shape[1:]]`` bool: where each patch writes in the activation of `layer`."""
    n_configs = len(configs)
    on_layer = (configs.layer == layer)[:, None]
    if configs.site in RESIDUAL_SITES:  # [B, T, d]
        pos = configs.position_mask(act_shape[1]) & on_layer
        return pos[:, None, :, None]
    if configs.site == "pattern":  # [B, H, Tq, Tk]
        heads = configs.head_mask(act_shape[1]) & on_layer
        pos = configs.position_mask(act_shape[2])
        return (heads[:, :, None] & pos[:, None, :])[:, None, :, :, None]
    pos = configs.position_mask(act_shape[1]) & on_layer  # [B, T, H, d]
    heads = configs.head_mask(act_shape[2])
    mask = pos[:, :, None] & heads[:, None, :]
    return mask.view(n_configs, 1, *mask.shape[1:], 1)


def hooked_outputs(
    model: nn.Module,
    base_tokens: Tensor,
    configs: Configs,
    sources: dict[str, Tensor],
    read_rows: Tensor,
) -> Tensor:
    """Model outputs ``[C, B, T, V]`` of the base run under each patch; unread rows NaN."""
    n_configs, batch = len(configs), base_tokens.shape[0]
    stacked = base_tokens.repeat(n_configs, 1)
    hooks = []
    for layer in sorted(set(configs.layer.tolist())):
        name = hook_name(configs.site, layer)
        source = sources[name]

        def patch(act: Tensor, hook, layer=layer, source=source) -> Tensor:
            mask = site_mask(configs, layer, (batch, *act.shape[1:]))
            per_config = act.view(n_configs, batch, *act.shape[1:])
            return torch.where(mask, source[None].to(act.dtype), per_config).view_as(act)

        hooks.append((name, patch))
    with torch.no_grad():
        out = model.run_with_hooks(stacked, fwd_hooks=hooks)
    return unread_to_nan(out.view(n_configs, batch, *out.shape[1:]), read_rows)


def bytes_per_config(model: nn.Module, base_tokens: Tensor) -> int:
    """Memory one patch costs in a stacked forward: twice the activations of the base batch
    (every hook's output, measured on one sequence and scaled)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(base_tokens[:1])
    per_sequence = sum(t.numel() * t.element_size() for t in cache.values())
    return 2 * per_sequence * base_tokens.shape[0]
