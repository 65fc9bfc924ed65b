"""Where patched-in activations come from: another run (clean/corrupted/resampled), zero or mean.

Every function returns ``{hook name: activation}`` with a leading batch axis of size B (one source
sequence per base sequence) or 1 (the same activation patched into every sequence).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from interp_icl.errors import InterpICLError, require

ABLATIONS = ("zero", "mean", "resample")


def cached_activations(model: nn.Module, tokens: Tensor, names: Iterable[str]) -> dict[str, Tensor]:
    """Activations of `tokens` at hook `names` (detached), from one forward."""
    names = list(dict.fromkeys(names))
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise InterpICLError(
            f"the model has no hook {missing[0]!r}; this site cannot be patched on it"
        )
    wanted = set(names)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    return {name: cache[name].detach() for name in names}


def ablation_activations(
    model: nn.Module,
    kind: str,
    names: Iterable[str],
    tokens: Tensor,
    reference_tokens: Tensor | None = None,
) -> dict[str, Tensor]:
    """Replacement activations for an ablation of the run on `tokens`.

    zero: all zeros. mean: the position-wise mean over `reference_tokens` (default: `tokens`),
    batch axis 1. resample: the activations of `reference_tokens` sequence b patched into sequence b
    (default reference: the batch rolled by one, so every sequence gets another's activations).
    """
    require(kind in ABLATIONS, f"unknown ablation {kind!r}; choose one of {', '.join(ABLATIONS)}")
    names = list(names)
    if kind == "resample":
        if reference_tokens is None:
            require(
                tokens.shape[0] >= 2,
                "resample ablation needs at least 2 sequences (or reference tokens)",
            )
            reference_tokens = tokens.roll(1, dims=0)
        require(
            reference_tokens.shape == tokens.shape,
            f"resample reference tokens have shape {tuple(reference_tokens.shape)}, "
            f"the patched run {tuple(tokens.shape)}",
        )
        return cached_activations(model, reference_tokens, names)
    reference = tokens if reference_tokens is None else reference_tokens
    require(
        reference.shape[1] == tokens.shape[1],
        "mean-ablation reference tokens must have the patched run's length",
    )
    acts = cached_activations(model, reference, names)
    if kind == "zero":
        return {name: torch.zeros_like(act[:1]) for name, act in acts.items()}
    return {name: act.mean(0, keepdim=True) for name, act in acts.items()}
