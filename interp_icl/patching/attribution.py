"""Attribution patching: a first-order estimate of every patch of a sweep from one forward and one
backward pass (Nanda 2023; Syed et al. 2023).

    metric(patched) ≈ metric(base) + Σ (source activation - base activation) · ∂metric/∂activation

with the gradient taken on the base run and the sum over what the patch replaces. Exact for
patches the metric depends on linearly; `compare_with_exact` reports how well it ranks and sizes
the effects of an exact sweep.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for
from interp_icl.errors import InterpICLError
from interp_icl.patching.hooks_engine import site_mask
from interp_icl.patching.metrics import Metric
from interp_icl.patching.result import PatchResult
from interp_icl.patching.sources import cached_activations
from interp_icl.patching.sweep import base_and_source, metric_values
from interp_icl.patching.targets import Target, heads_per_layer, target_hooks

CONFIG_CHUNK = 256


def attribution_sweep(
    model: nn.Module,
    base_tokens: Tensor,
    sources: dict[str, Tensor],
    target: Target,
    metric: Metric,
    source_values: Tensor | None = None,
) -> PatchResult:
    """Estimated metric ``[*shape, B]`` of every patch of `target` (same layout as `patch_sweep`)."""
    model.eval()
    tokens = check_tokens_for(model, base_tokens)
    cfg = model.cfg
    configs = target.configs(cfg.n_layers, heads_per_layer(model, target), tokens.shape[1])
    names = target_hooks(model, target)
    saved: dict[str, Tensor] = {}

    def keeper(name: str):
        def keep(act: Tensor, hook) -> Tensor:
            saved[name] = act
            return act

        return keep

    with torch.enable_grad():
        output = model.run_with_hooks(tokens, fwd_hooks=[(name, keeper(name)) for name in names])
        values = torch.as_tensor(metric(output))
        grads = torch.autograd.grad(values.sum(), [saved[n] for n in names], allow_unused=True)
    baseline = values.detach()
    estimate = torch.empty(len(configs), tokens.shape[0], dtype=baseline.dtype)
    for name, layer, grad in zip(names, configs.layers, grads):
        act = saved[name].detach()
        grad = torch.zeros_like(act) if grad is None else grad
        product = (sources[name].to(act.dtype) - act) * grad  # [B, ...]
        on_layer = torch.nonzero(configs.layer == layer)[:, 0]
        for index in torch.split(on_layer, CONFIG_CHUNK):
            part = configs.subset(index)
            mask = site_mask(part, layer, tuple(act.shape))
            estimate[index] = (mask * product[None]).flatten(2).sum(-1)
    return PatchResult(
        site=target.site,
        axes=configs.axes,
        layers=configs.layers,
        values=(baseline + estimate).view(*configs.shape, tokens.shape[0]),
        baseline=baseline,
        source=source_values,
        metric=metric.name,
        info={"engine": "attribution", "by": target.by},
    )


def attribution_patching(
    model: nn.Module,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    target: Target,
    metric: Metric,
    *,
    mode: str = "denoise",
) -> PatchResult:
    """`attribution_sweep` for denoising (corrupted run, clean activations) or noising."""
    base, source = base_and_source(model, clean_tokens, corrupted_tokens, mode)
    sources = cached_activations(model, source, target_hooks(model, target))
    result = attribution_sweep(
        model, base, sources, target, metric, metric_values(model, source, metric)
    )
    result.info["mode"] = mode
    return result


NOISE_FLOOR = 1e-4  # exact effects below this fraction of the largest one are float noise


def compare_with_exact(estimate: PatchResult, exact: PatchResult) -> dict:
    """How well attribution patching matches an exact sweep of the same patches.

    ``pearson``: correlation of the mean effects over all patches. ``spearman``: rank correlation
    (average ranks for ties) over the ``n_ranked`` patches whose exact |effect| exceeds
    ``NOISE_FLOOR`` x the largest — patches that cannot change the metric have exact effects of 0
    or float noise (~1e-7), whose ranks are arbitrary and would decide a rank correlation over all
    patches; NaN when fewer than 3 patches are above the floor. ``max_abs_error``: the largest
    |estimate − exact| over all patches."""
    a, b = estimate.effect.reshape(-1).double(), exact.effect.reshape(-1).double()
    if a.numel() != b.numel():
        raise InterpICLError("attribution and exact sweeps cover different patches")
    effect_range = float(b.abs().max())
    ranked = b.abs() > NOISE_FLOOR * effect_range
    n_ranked = int(ranked.sum())
    spearman = _pearson(_ranks(a[ranked]), _ranks(b[ranked])) if n_ranked >= 3 else math.nan
    return {
        "n_patches": int(a.numel()),
        "pearson": _pearson(a, b),
        "spearman": spearman,
        "n_ranked": n_ranked,
        "max_abs_error": float((a - b).abs().max()),
        "exact_effect_range": effect_range,
    }


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else math.nan


def _ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of `x`, tied values sharing the mean of their ranks."""
    values, inverse = torch.unique(x, return_inverse=True)  # values sorted ascending
    counts = torch.bincount(inverse, minlength=values.numel()).to(x.dtype)
    first = torch.cumsum(counts, 0) - counts  # rank of each distinct value's first element
    return (first + (counts - 1) / 2)[inverse]
