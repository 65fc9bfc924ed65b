"""Single interventions: one forward of a model with chosen activations overwritten.

The batched sweeps (`sweep.patch_sweep`) run many patches of one site at once; an experiment that
needs one specific combination — several heads of a layer at once, a query at one row, a pattern on
some rows — builds it from these:

    run_patched(model, tokens, [(hook_name, replace(value, index)), ...])  -> output [B, T, V]
    sequence_nll(model, output, tokens, t0)                                -> [B] mean NLL, nats
    row_kl(model, reference_row, row)                                      -> [B] KL, nats

``replace(value, index)`` writes `value` into ``act[:, *index]`` (the whole activation for
``index = ()``); `value` broadcasts against that slice (a leading batch axis of 1 patches the same
activation into every sequence). Nothing here computes gradients unless the caller enables them
(`run_patched` never does; `patched_output` follows the caller's grad mode, for fits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from interp_icl.models import target_offset
from interp_icl.patching.metrics import output_log_probs

Hook = tuple[str, Callable[[Tensor, object], Tensor]]


def replace(value: Tensor, index: tuple = ()) -> Callable[[Tensor, object], Tensor]:
    """A forward hook that writes `value` into ``act[:, *index]``."""

    def hook(act: Tensor, hook) -> Tensor:
        act = act.clone()
        act[(slice(None), *index)] = value.to(act.dtype)
        return act

    return hook


def patched_output(model: nn.Module, tokens: Tensor, hooks: Sequence[Hook] = ()) -> Tensor:
    """The model's output ``[B, T, V]`` with forward `hooks` applied, in the caller's grad mode."""
    return model.run_with_hooks(tokens, fwd_hooks=list(hooks))


def run_patched(model: nn.Module, tokens: Tensor, hooks: Sequence[Hook] = ()) -> Tensor:
    """The model's output ``[B, T, V]`` with forward `hooks` applied (no gradients, detached)."""
    with torch.no_grad():
        return patched_output(model, tokens, hooks).detach()


def sequence_nll(model: nn.Module, output: Tensor, tokens: Tensor, t0: int) -> Tensor:
    """``[B]`` mean NLL (nats) of targets t0..T-1 under a model output ``[B, T, V]``."""
    off = target_offset(model)
    targets = torch.arange(t0, tokens.shape[1])
    logp = output_log_probs(model, output[:, targets - off].double())
    return -logp.gather(-1, tokens[:, targets, None])[..., 0].mean(-1)


def sequence_kl(model: nn.Module, reference: Tensor, output: Tensor, t0: int) -> Tensor:
    """``[B]`` mean KL(reference || output) (nats) over the rows that predict targets t0..T-1 of two
    model outputs ``[B, T, V]``."""
    rows = torch.arange(t0, output.shape[1]) - target_offset(model)
    ref = output_log_probs(model, reference[:, rows].double())
    out = output_log_probs(model, output[:, rows].double())
    return (ref.exp() * (ref - out)).sum(-1).mean(-1)


def row_kl(model: nn.Module, reference: Tensor, output: Tensor) -> Tensor:
    """``[B]`` KL(reference || output) of one output row ``[B, V]`` each, nats."""
    ref = output_log_probs(model, reference.double())
    out = output_log_probs(model, output.double())
    return (ref.exp() * (ref - out)).sum(-1)
