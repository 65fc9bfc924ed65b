"""The classifier role (last layer): a set of last-layer heads attends to the earlier keys whose
parent context matches the target's and copies the tokens there — REFERENCE §1.

Keys and rows. For the rows that predict targets t = t0..T-1 the candidate keys are l <= t - 1;
``full(l)`` marks keys l >= max(pa) matching the target on every parent offset, ``partial(l)`` on
at least one but not all (`interp_icl.analysis.classifier.match_counts`; none for one parent).

Detector. The classifier set C is every last-layer head whose pattern matters: giving that head
alone uniform attention on the scored rows raises the loss by more than PATTERN_MATTERS (0.01) x
the circuit's estimator gain (below), with an interval above 0 (null: a head whose pattern does not
matter — idle, or attending uniformly already — costs 0). A role spread over several soft heads is
one set; whether the set's attention is a match pattern is for the causal checks to say. As
evidence each head's *match selectivity* is reported: (m - s) / (1 - s), m its attention mass on
full-match keys and s their share among the row's candidate keys (uniform attention's mass), over
rows with a match and s < 1 — 1 for a head that attends only to full matches, 0 for one that ignores
them. It is not the detector: on sticky Markov chains a head that attends the previous position by
position alone scores 0.3 (the zoo's positional classifier). (The first design admitted heads with
selectivity >= 0.5 each, then with an interval above 0; the first found no head in quickstart seed 0
— its last-layer heads have 0.14-0.49 — the second admitted the positional head and float noise.
Both were replaced before any population run.)

Checks:
  * ``has_heads``: the largest single-head uniform cost / gain; holds when C is not empty;
  * ``fitted_recovery``: every head in C gets the pattern softmax_l(a_h full(l) + b_h partial(l))
    on those rows, (a_h, b_h) fitted jointly by minimising the patched model's loss on the first
    half of the sequences (FIT_STEPS Adam steps at FIT_LR from a_h = the classifier pass's
    full-match logit gap, b_h = 0, then at most FIT_POLISH L-BFGS iterations; weights frozen;
    deterministic), scored on the held-out second half as recovery = (L_uniform - L_fitted) /
    (L_uniform - L_model), uniform = the same heads with uniform attention over keys 0..t-1 (the
    fitted family at a = b = 0, so the null is 0). Needed >= RECOVERY (0.9); interval: seeded
    bootstrap over held-out sequences; undefined (fails) unless the model's held-out loss is below
    the uniform pattern's with an interval excluding 0;
  * ``uniform_necessary``: C's patterns replaced by uniform attention raise the loss by
    (L_uniform - L_model) / (unigram - pa-gram estimator loss) >= NECESSARY_FRACTION (0.5) of the
    circuit's estimator gain, interval over sequences excluding 0 (the null of a set that does
    not classify).
Other last-layer heads whose ablation (mean or resample ``z``) costs more than MATTERS_FRACTION x
the gain are reported with their account.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from interp_icl.analysis.classifier import classifier as classifier_pass
from interp_icl.analysis.result import make_table, row, scalar_row, set_label
from interp_icl.models import target_offset
from interp_icl.patching.interventions import patched_output, sequence_nll
from interp_icl.roles.check import Check, RoleResult, passes
from interp_icl.roles.context import RoleContext, match_masks, mean_interval
from interp_icl.roles.heads import layer_z, other_heads
from interp_icl.stats import ratio_interval

ROLE = "classifier"
RECOVERY = 0.9
NECESSARY_FRACTION = 0.5
MATTERS_FRACTION = 0.1
PATTERN_MATTERS = 0.01
FIT_STEPS = 30
FIT_LR = 0.5
FIT_POLISH = 20


def pattern_rows(full: Tensor, partial: Tensor, past: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``[B, H, Q, T]`` rows softmax_l(a_h full + b_h partial) over the keys in `past` (float64;
    differentiable in `a`, `b` ``[H]``)."""
    scores = a[None, :, None, None] * full[:, None].double() + b[None, :, None, None] * partial[:, None].double()
    return torch.softmax(scores.masked_fill(~past, -math.inf), dim=-1)


def match_selectivity(ctx: RoleContext) -> Tensor:
    """``[B, H]`` each last-layer head's match selectivity per sequence (NaN for a sequence with no
    counted row; see the module docstring)."""
    name = f"blocks.{ctx.shape.classifier_layer}.attn.hook_pattern"
    pattern = ctx.cached(name).double()
    full, _, past = match_masks(ctx.tokens, ctx.parents, ctx.t0)
    rows = torch.arange(ctx.t0, ctx.tokens.shape[1]) - target_offset(ctx.model)
    mass = (pattern[:, :, rows] * full[:, None]).sum(-1)  # [B, H, Q]
    share = full.sum(-1) / past.sum(-1)[None]  # [B, Q]
    counted = (full.any(-1) & (share < 1))[:, None].double()  # [B, 1, Q]
    value = (mass - share[:, None]) / (1 - share[:, None]).clamp_min(1e-12)
    total, count = (value * counted).sum(-1), counted.sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


def pattern_costs(ctx: RoleContext) -> Tensor:
    """``[B, H]`` the loss change when one last-layer head alone gets uniform attention on the
    scored rows (computed once per context)."""
    if "pattern_costs" not in ctx.memo:
        n_heads = int(ctx.cached(f"blocks.{ctx.shape.classifier_layer}.attn.hook_pattern").shape[1])
        zero = torch.zeros(1, dtype=torch.float64)
        with torch.no_grad():
            costs = [set_pattern_nll(ctx, [h], zero, zero, ctx.tokens) - ctx.clean for h in range(n_heads)]
        ctx.memo["pattern_costs"] = torch.stack(costs, 1)
    return ctx.memo["pattern_costs"]


def circuit_gain(ctx: RoleContext) -> float:
    """Mean of unigram minus pa-gram estimator loss (nats): the scale of the classifier's checks."""
    return mean_interval(ctx.estimator(()) - ctx.estimator(ctx.parents))[0]


def classifier_heads(ctx: RoleContext) -> list[int]:
    """The detector's classifier set C (see the module docstring)."""
    costs, floor = pattern_costs(ctx), PATTERN_MATTERS * circuit_gain(ctx)
    out = []
    for h in range(costs.shape[1]):
        mean, _, interval = mean_interval(costs[:, h])
        if mean > floor and interval is not None and interval[0] > 0:
            out.append(h)
    return out


def set_pattern_nll(ctx: RoleContext, heads: list[int], a: Tensor, b: Tensor, tokens: Tensor) -> Tensor:
    """``[B]`` loss with the patterns of `heads` on the target rows replaced by
    softmax(a full + b partial) (a = b = 0: uniform); differentiable in a, b under grad mode."""
    name = f"blocks.{ctx.shape.classifier_layer}.attn.hook_pattern"
    rows = torch.arange(ctx.t0, tokens.shape[1]) - target_offset(ctx.model)
    new = pattern_rows(*match_masks(tokens, ctx.parents, ctx.t0), a, b)
    index = torch.tensor(heads, dtype=torch.long)

    def hook(act: Tensor, hook) -> Tensor:
        act = act.clone()
        act[:, index[:, None], rows[None, :]] = new.to(act.dtype)
        return act

    output = patched_output(ctx.model, tokens, [(name, hook)])
    return sequence_nll(ctx.model, output, tokens, ctx.t0)


@contextmanager
def _frozen(model: nn.Module):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def fit_pattern(ctx: RoleContext, heads: list[int], a0: list[float], tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) ``[|heads|]`` minimising the mean of `set_pattern_nll` on `tokens` (see the module
    docstring; with one parent b stays 0)."""
    a = torch.tensor([x if math.isfinite(x) else 0.0 for x in a0], dtype=torch.float64, requires_grad=True)
    b = torch.zeros_like(a, requires_grad=len(ctx.parents) > 1)
    free = [a, b] if len(ctx.parents) > 1 else [a]

    def loss() -> Tensor:
        return set_pattern_nll(ctx, heads, a, b, tokens).mean()

    adam = torch.optim.Adam(free, lr=FIT_LR)
    lbfgs = torch.optim.LBFGS(free, max_iter=FIT_POLISH, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        lbfgs.zero_grad()
        value = loss()
        value.backward()
        return value

    with _frozen(ctx.model), torch.enable_grad():
        for _ in range(FIT_STEPS):
            adam.zero_grad()
            loss().backward()
            adam.step()
        lbfgs.step(closure)
    return a.detach(), b.detach()


def classifier_role(ctx: RoleContext, reference: Tensor) -> RoleResult:
    """The classifier checks on `ctx`; `reference` ``[R, T]`` gives mean ``z`` for other heads."""
    last = ctx.shape.classifier_layer
    per_sequence = match_selectivity(ctx)
    selectivity = [mean_interval(per_sequence[:, h])[0] for h in range(per_sequence.shape[1])]
    costs = pattern_costs(ctx)
    heads = classifier_heads(ctx)
    units = [f"L{last}H{h}" for h in range(len(selectivity))]
    gain = ctx.estimator(()) - ctx.estimator(ctx.parents)
    gain_mean = mean_interval(gain)[0]
    rows = [row("model", "loss", ctx.clean), row("unigram estimator", "loss", ctx.estimator(())),
            row("pa-gram estimator", "loss", ctx.estimator(ctx.parents), offset_set=set_label(ctx.parents))]
    rows += [row(units[h], "match_selectivity", per_sequence[:, h], head=h) for h in range(len(units))]
    rows += [row(units[h], "uniform_pattern_cost", costs[:, h], head=h) for h in range(len(units))]
    relative = costs / gain_mean if gain_mean > 0 else torch.full_like(costs, math.nan)
    best = int(torch.tensor([mean_interval(relative[:, h])[0] for h in range(len(units))]).nan_to_num(-math.inf).argmax())
    mean, _, interval = mean_interval(relative[:, best])
    checks = [Check(ROLE, "has_heads", mean, PATTERN_MATTERS, ">=", interval, bool(heads),
                    "a head whose pattern does not matter costs 0 when made uniform",
                    "uniform attention on one head, loss change / estimator gain: "
                    + ", ".join(f"{u} {mean_interval(relative[:, h])[0]:+.3f}" for h, u in enumerate(units))
                    + "; match selectivity: " + ", ".join(f"{u} {v:.2f}" for u, v in zip(units, selectivity))
                    + f"; set {'+'.join(units[h] for h in heads) or 'empty'}")]
    details: dict = {"heads": [units[h] for h in heads], "match_selectivity": dict(zip(units, selectivity))}
    if heads:
        checks += _pattern_checks(ctx, heads, units, gain, gain_mean, rows, details)
    else:
        for name, needed in (("fitted_recovery", RECOVERY), ("uniform_necessary", NECESSARY_FRACTION)):
            checks.append(Check(ROLE, name, None, needed, ">=", None, False, "–", "no last-layer head's pattern matters"))
    mean_z = layer_z(ctx, last, reference).mean(0, keepdim=True)
    outside = [h for h in range(len(units)) if h not in heads]
    others = other_heads(ctx, last, outside, mean_z, MATTERS_FRACTION * gain_mean, rows)
    return RoleResult(ROLE, checks, make_table(rows), details, others)


def _pattern_checks(ctx, heads, units, gain, gain_mean, rows, details) -> list[Check]:
    last = ctx.shape.classifier_layer
    fit = classifier_pass(ctx.model, ctx.tokens, parents=ctx.parents, layer=last).summary["heads"]
    a0 = [fit[units[h]]["parents"]["logit_gap"] for h in heads]
    half = ctx.n // 2
    fit_a, fit_b = fit_pattern(ctx, heads, a0, ctx.tokens[:half])
    zeros = torch.zeros(len(heads), dtype=torch.float64)
    with torch.no_grad():
        uniform = set_pattern_nll(ctx, heads, zeros, zeros, ctx.tokens)
        fitted = set_pattern_nll(ctx, heads, fit_a, fit_b, ctx.tokens[half:])
    model_held, uniform_held = ctx.clean[half:], uniform[half:]
    rows += [row("fitted pattern", "held_out_loss", fitted), row("uniform pattern", "held_out_loss", uniform_held),
             row("model", "held_out_loss", model_held), row("uniform pattern", "loss", uniform)]
    for j, h in enumerate(heads):
        rows.append(scalar_row(units[h], "fitted_a", float(fit_a[j]), half, head=h))
        rows.append(scalar_row(units[h], "fitted_b", float(fit_b[j]), half, head=h))
    details.update({"fitted_a": {units[h]: float(fit_a[j]) for j, h in enumerate(heads)},
                    "fitted_b": {units[h]: float(fit_b[j]) for j, h in enumerate(heads)}})

    def recovery(index: Tensor) -> float:
        gap = float((uniform_held[index] - model_held[index]).mean())
        return float((uniform_held[index] - fitted[index]).mean()) / gap if gap > 0 else math.nan

    _, _, gap_interval = mean_interval(uniform_held - model_held)
    resolved = gap_interval is not None and gap_interval[0] > 0
    value = recovery(torch.arange(len(fitted))) if resolved else math.nan
    interval = ratio_interval(recovery, len(fitted)) if resolved else None
    checks = [Check(
        ROLE, "fitted_recovery", value, RECOVERY, ">=", interval, bool(resolved and passes(value, RECOVERY, ">=")),
        "the uniform pattern recovers 0",
        (f"held-out loss: model {float(model_held.mean()):.4f}, fitted {float(fitted.mean()):.4f}, "
         f"uniform {float(uniform_held.mean()):.4f}; " if resolved else
         "the model's held-out loss is not below the uniform pattern's (interval includes 0); ")
        + "a, b = " + ", ".join(f"{units[h]} ({float(fit_a[j]):.2f}, {float(fit_b[j]):.2f})" for j, h in enumerate(heads)),
    )]
    rise = (uniform - ctx.clean) / gain_mean if gain_mean > 0 else torch.full_like(uniform, math.nan)
    mean, _, interval = mean_interval(rise)
    holds = passes(mean, NECESSARY_FRACTION, ">=") and interval is not None and interval[0] > 0
    checks.append(Check(
        ROLE, "uniform_necessary", mean, NECESSARY_FRACTION, ">=", interval, bool(holds),
        "a set that does not classify costs 0 when made uniform",
        f"uniform attention on {'+'.join(units[h] for h in heads)}: loss {float(uniform.mean()):.4f} vs model "
        f"{float(ctx.clean.mean()):.4f}; estimator gain (unigram - pa-gram) {gain_mean:.4f}",
    ))
    return checks
