"""The selector role (FFN / what the last layer compares): the classifier heads' query depends on
the target's parent tokens and on nothing else — REFERENCE §1.

Setting. At the row i = t - o that predicts the last target t = T-1 (o the target offset), the
query of the classifier heads C (`interp_icl.roles.classifier.classifier_heads`; every last-layer
head when C is empty) is recomputed on the sequence with the token at t - δ changed (to another
token drawn uniformly, seeded) and patched into the clean run at that row only (keys untouched).
Offsets δ = 1..R (R = t0: the gih window + 1, else max(pa) + 2), so non-parent offsets inside and
beyond the parents are tested, and δ = 1 — the query row's own token in a standard model — is a
non-parent whenever 1 is not a parent. KL_δ = KL(clean prediction || patched prediction) at that row,
nats, per sequence.

Checks:
  * ``query_reads_only_parents``: selectivity = max over non-parent δ of mean KL_δ, divided by the
    min over parents p of mean KL_p — a within-model contrast. Needed <= NON_PARENT_RATIO (0.1); null: a
    query that does not select its inputs moves about as much for a non-parent as for the least
    read parent (ratio ~1), so the bootstrap interval's upper end must be below 1. A parent that
    does not move the query fails it too (its KL is the denominator).
  * ``interchange``: the clean query of another sequence whose query parent tuple differs is
    patched in; the prediction's argmax must follow the source tuple — equal the argmax of the
    pa-gram counts of the *base* context at the *source* tuple — over pairs whose counts determine
    it (top count >= runner-up + MIN_MARGIN). Needed >= INTERCHANGE (0.95); null: a query the
    prediction ignores keeps the base prediction, which matches the implied answer at the rate
    ``kept`` (measured on the same pairs); the Wilson interval's lower end must exceed it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from interp_icl.analysis.result import make_table, row
from interp_icl.models import target_offset
from interp_icl.patching.interventions import replace, row_kl, run_patched
from interp_icl.patching.sources import cached_activations
from interp_icl.roles.check import Check, RoleResult, passes
from interp_icl.roles.classifier import classifier_heads
from interp_icl.roles.context import RoleContext
from interp_icl.stats import ratio_interval, wilson_interval
from interp_icl.theory.estimators import context_index

ROLE = "selector"
NON_PARENT_RATIO = 0.1
INTERCHANGE = 0.95
MIN_MARGIN = 2


def selector_role(ctx: RoleContext, generator: torch.Generator) -> RoleResult:
    """The selector checks on `ctx`; `generator` draws the replacement tokens."""
    model, tokens = ctx.model, ctx.tokens
    batch, seq = tokens.shape
    t = seq - 1
    i = t - target_offset(model)
    q_name = f"blocks.{ctx.shape.classifier_layer}.attn.hook_q"
    heads = classifier_heads(ctx) or list(range(int(ctx.cached(q_name).shape[2])))
    index = torch.tensor(heads, dtype=torch.long)
    clean_q = ctx.cached(q_name)[:, i][:, index]  # [B, |C|, d]
    clean_row = run_patched(model, tokens)[:, i]

    rows, kls = [], {}
    for delta in range(1, ctx.t0 + 1):
        changed = tokens.clone()
        shift = torch.randint(1, ctx.vocab, (batch,), generator=generator)
        changed[:, t - delta] = (tokens[:, t - delta] + shift) % ctx.vocab
        new_q = cached_activations(model, changed, [q_name])[q_name][:, i][:, index]
        patched = run_patched(model, tokens, [(q_name, replace(new_q, (i, index)))])[:, i]
        kls[delta] = row_kl(model, clean_row, patched)
        kind = "parent" if delta in ctx.parents else "non-parent"
        rows.append(row(f"δ={delta}", "prediction_kl", kls[delta], offset=delta, kind=kind))
        change = (new_q - clean_q).flatten(1).norm(dim=-1) / clean_q.flatten(1).norm(dim=-1).clamp_min(1e-12)
        rows.append(row(f"δ={delta}", "relative_query_change", change, offset=delta, kind=kind))

    parents = [d for d in kls if d in ctx.parents]
    others = [d for d in kls if d not in ctx.parents]

    def selectivity(sample: Tensor) -> float:
        denominator = min(float(kls[p][sample].mean()) for p in parents)
        numerator = max(float(kls[d][sample].mean()) for d in others)
        return numerator / denominator if denominator > 0 else math.inf

    everyone = torch.arange(batch)
    value = selectivity(everyone)
    interval = ratio_interval(selectivity, batch)
    holds = passes(value, NON_PARENT_RATIO, "<=") and interval is not None and interval[1] < 1
    text = ", ".join(f"δ={d} ({'parent' if d in ctx.parents else 'non-parent'}) {float(kls[d].mean()):.4g}" for d in kls)
    checks = [Check(ROLE, "query_reads_only_parents", value, NON_PARENT_RATIO, "<=", interval, bool(holds),
                    "a query that does not select moves as much for a non-parent (ratio ~1)",
                    f"prediction KL (nats) from the query with the token at t-δ changed: {text}")]
    checks.append(_interchange(ctx, q_name, i, index, clean_q, clean_row, rows))
    details = {"heads": [f"L{ctx.shape.classifier_layer}H{h}" for h in heads],
               "prediction_kl": {str(d): float(v.mean()) for d, v in kls.items()}}
    return RoleResult(ROLE, checks, make_table(rows), details)


def _interchange(ctx, q_name, i, index, clean_q, clean_row, rows) -> Check:
    tokens, batch, t = ctx.tokens, ctx.n, ctx.tokens.shape[1] - 1
    contexts = context_index(tokens, ctx.parents, ctx.vocab)  # [B, T]
    query_context = contexts[:, t]
    source = torch.full((batch,), -1, dtype=torch.long)
    for b in range(batch):
        for k in range(1, batch):
            if query_context[(b + k) % batch] != query_context[b]:
                source[b] = (b + k) % batch
                break
    has_source = source >= 0
    source = source.clamp_min(0)
    patched = run_patched(ctx.model, tokens, [(q_name, replace(clean_q[source], (i, index)))])[:, i]
    keys = torch.arange(t)
    same = contexts[:, keys] == query_context[source][:, None]
    counts = (same[..., None] & (tokens[:, keys, None] == torch.arange(ctx.vocab))).sum(1)  # [B, d]
    top2 = counts.topk(2, dim=-1).values
    eligible = has_source & (top2[:, 0] >= top2[:, 1] + MIN_MARGIN)
    implied = counts.argmax(-1)
    follows = (patched.argmax(-1) == implied)[eligible]
    kept = (clean_row.argmax(-1) == implied)[eligible]
    n = int(eligible.sum())
    nan = torch.full((batch,), math.nan, dtype=torch.float64)
    rows.append(row("interchange", "follows_source", torch.where(eligible, (patched.argmax(-1) == implied).double(), nan)))
    rows.append(row("interchange", "base_prediction_matches", torch.where(eligible, (clean_row.argmax(-1) == implied).double(), nan)))
    if n == 0:
        return Check(ROLE, "interchange", None, INTERCHANGE, ">=", None, None, "–",
                     "no interchange pair has a determined answer")
    accuracy, null = float(follows.double().mean()), float(kept.double().mean())
    interval = wilson_interval(int(follows.sum()), n)
    holds = passes(accuracy, INTERCHANGE, ">=") and interval[0] > null
    return Check(ROLE, "interchange", accuracy, INTERCHANGE, ">=", interval, bool(holds),
                 f"a query the prediction ignores keeps the base prediction, right at rate {null:.3f}",
                 f"{int(follows.sum())}/{n} determined pairs follow the source's parent tuple")
