"""Classifier pass: how layer 2 scores earlier positions, and which strategy the model computes.

Layer 2 predicts token t from a query at row i = t - target_offset and copies the token x_l of
each key l <= t - 1 it attends to (REFERENCE §1, §2). For an offset set S, key l *matches* target
t on offset δ ∈ S when x_{l-δ} = x_{t-δ}; its match count is the number of such δ, and it is a
*full match* when all of S match. The S-gram estimator is exactly "attend uniformly to the full
matches". For each layer-2 head and each offset set S given (the selected set, the true parents):
  * ``full_match_mass``: attention on full-match keys, over queries that have at least one;
  * ``full_match_uniform``: the share of full-match keys among all t keys 0..t-1 a query can
    attend to (what uniform attention would put there);
  * ``attn_per_key_m{k}``: mean attention on one key with match count k (k = 0..|S|);
  * ``full_match_logit_gap``: the effective inverse temperature — the slope of a regression of the
    pre-softmax score (see `attention_scores`) on the full-match indicator, both demeaned within each
    query, pooled over a sequence's queries (in gih models this is a when p_S = 1);
    ``full_match_r2``: the share of within-query score variance that indicator explains.
Keys and queries: t in [max(S) + 1, T - 1], keys l in [max(S), t - 1].

Strategy comparison: KL(model ‖ strategy) of the next-token laws at targets t >= W, averaged over
targets within a sequence, mean ± stderr over sequences, for the uniform law, the in-context
unigram, every in-context S-gram with S ⊆ {1..W}, 1 <= |S| <= D (add-β smoothing, β = 0.01 by
default, so every KL is finite), and the Bayes predictor when the caller passes its probabilities.
The closest strategy has the smallest mean KL; its margin to the runner-up comes with the stderr
of the paired per-sequence difference (``closest_is_resolved``: margin > 2 stderr). Note that for
the Markov task the Bayes predictor *is* the parent-set S-gram with β = α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import ActivationMemo, attention_scores, check_tokens_for, target_log_probs, target_offset
from interp_icl.analysis.result import PassResult, make_table, mean_stderr, per_sequence_mean, row, set_label
from interp_icl.errors import require
from interp_icl.models import layout
from interp_icl.theory.estimators import context_index, sgram_probs, unigram_probs
from interp_icl.theory.selection import window_subsets

DEFAULT_BETA = 0.01


def match_counts(tokens: Tensor, offsets: Sequence[int]) -> Tensor:
    """m[b, t, l] = #{δ ∈ S : x_{t-δ} = x_{l-δ}}, ``[B, T, T]`` long; entries with t or l < max(S)
    are meaningless (callers mask them)."""
    batch, seq = tokens.shape
    counts = torch.zeros(batch, seq, seq, dtype=torch.long)
    for delta in offsets:
        shifted = context_index(tokens, (delta,), 1)  # x_{p-δ} (any vocabulary: one offset, base unused)
        counts += (shifted[:, :, None] == shifted[:, None, :]).long()
    return counts


def _match_rows(
    pattern: Tensor, scores: Tensor, tokens: Tensor, offsets: tuple[int, ...], off: int, layer: int, head: int
) -> tuple[list[dict], dict]:
    """Rows and summary numbers for one layer-2 head and one offset set."""
    batch, seq = tokens.shape
    first = max(offsets)
    targets = torch.arange(first + 1, seq)  # [Q]
    keys = torch.arange(seq)
    valid = (keys[None, :] >= first) & (keys[None, :] <= targets[:, None] - 1)  # [Q, T]
    counts = match_counts(tokens, offsets)[:, targets]  # [B, Q, T]
    full = (counts == len(offsets)) & valid
    attn = pattern[:, head, targets - off].double()  # [B, Q, T]
    score = scores[:, head, targets - off].double()

    has_match = full.any(-1)  # [B, Q]
    mass = (attn * full).sum(-1)
    share = full.sum(-1) / targets[None, :]  # both families attend to keys 0..t-1: t keys
    label = set_label(offsets)
    unit = f"L{layer}H{head} S={label}"
    labels = dict(layer=layer, head=head, offset_set=label)
    rows = [
        row(unit, "full_match_mass", per_sequence_mean(mass, has_match), **labels),
        row(unit, "full_match_uniform", per_sequence_mean(share.expand_as(mass), has_match), **labels),
    ]
    for k in range(len(offsets) + 1):
        at_k = (counts == k) & valid
        rows.append(row(unit, f"attn_per_key_m{k}", per_sequence_mean(attn, at_k), **labels))

    # within-query demeaned regression of score on the full-match indicator
    n_keys = valid.sum(-1, keepdim=True)
    f = full.double()
    s = torch.where(valid, score, torch.zeros_like(score))
    f_dm = torch.where(valid, f - f.sum(-1, keepdim=True) / n_keys, torch.zeros_like(f))
    s_dm = torch.where(valid, s - s.sum(-1, keepdim=True) / n_keys, torch.zeros_like(s))
    sxy = (s_dm * f_dm).sum((1, 2))
    sxx = (f_dm**2).sum((1, 2))
    syy = (s_dm**2).sum((1, 2))
    nan = torch.full_like(sxy, math.nan)
    slope = torch.where(sxx > 0, sxy / sxx.clamp_min(1e-300), nan)
    r2 = torch.where((sxx > 0) & (syy > 0), sxy**2 / (sxx * syy).clamp_min(1e-300), nan)
    gap_row = row(unit, "full_match_logit_gap", slope, **labels)
    r2_row = row(unit, "full_match_r2", r2, **labels)
    rows += [gap_row, r2_row]
    summary = {
        "full_match_mass": rows[0]["mean"],
        "full_match_uniform": rows[1]["mean"],
        "logit_gap": gap_row["mean"],
        "r2": r2_row["mean"],
    }
    return rows, summary


def _kl_per_sequence(log_model: Tensor, probs: Tensor, positions: Tensor) -> Tensor:
    """KL(model ‖ q) averaged over target positions, ``[B]``."""
    lp = log_model[:, positions].double()
    lq = torch.log(probs[:, positions].double().clamp_min(1e-300))
    return (lp.exp() * (lp - lq)).sum(-1).mean(-1)


def classifier(
    model: nn.Module,
    tokens: Tensor,
    parents: tuple[int, ...] | None = None,
    selected: tuple[int, ...] | None = None,
    window: int | None = None,
    max_degree: int | None = None,
    bayes_probs: Tensor | None = None,
    beta: float = DEFAULT_BETA,
    layer: int | None = None,
    memo: ActivationMemo | None = None,
) -> PassResult:
    """Classifier pass on `tokens` ``[B, T]``.

    parents / selected: offset sets whose matches are measured (either may be None).
    window, max_degree: the strategy family S ⊆ {1..window}, |S| <= max_degree (defaults: the
    layout's window and max_degree (gih: M and D); else window = max(parents ∪ selected ∪ {2}) + 1
    and max_degree = min(window, 3)).
    layer: the comparing layer (default: the last, `ModelLayout.classifier_layer`).
    bayes_probs: target-aligned Bayes probabilities ``[B, T, d]`` of the same tokens, if known.
    """
    tokens = check_tokens_for(model, tokens)
    batch, seq = tokens.shape
    d = int(model.cfg.d_vocab)
    off = target_offset(model)
    sets: dict[str, tuple[int, ...]] = {}
    for role, s in (("selected", selected), ("parents", parents)):
        if s:
            s = tuple(sorted(s))
            require(min(s) >= 1, f"{role} offsets must be >= 1, got {list(s)}")
            sets[role] = s
    shape = layout(model)
    layer = shape.classifier_layer if layer is None else layer
    if window is None:
        known = [o for s in sets.values() for o in s] + [2]
        window = int(shape.window) if shape.window is not None else max(known) + 1
    if max_degree is None:
        max_degree = int(shape.max_degree) if shape.max_degree is not None else min(window, 3)
    longest = max([window] + [max(s) for s in sets.values()])
    require(seq >= longest + 3, f"classifier needs sequences of at least {longest + 3} tokens, got {seq}")
    require(bayes_probs is None or bayes_probs.shape == (batch, seq, d), "bayes_probs must be [B, T, d] like the tokens")

    rows: list[dict] = []
    heads: dict[str, dict] = {}
    scores, pattern = attention_scores(model, tokens, layer, memo)
    n_heads = pattern.shape[1]
    for h in range(n_heads):
        per_set: dict[str, dict] = {}
        for role, s in sets.items():
            same = [r for r, v in per_set.items() if v["offsets"] == list(s)]
            if same:  # the selected set is the true parent set: measured once
                per_set[role] = per_set[same[0]]
                continue
            head_rows, head_summary = _match_rows(pattern, scores, tokens, s, off, layer, h)
            rows += head_rows
            per_set[role] = {"offsets": list(s), **head_summary}
        heads[f"L{layer}H{h}"] = per_set

    # strategies
    log_model = target_log_probs(model, tokens, memo)  # [B, T, d], row t = law of token t
    positions = torch.arange(window, seq)
    candidates: dict[str, Tensor] = {
        "uniform": torch.full((batch, seq, d), 1.0 / d),
        "unigram": unigram_probs(tokens, d, beta),
    }
    sgram_offsets = {f"{set_label(s)}-gram": s for s in window_subsets(window, max_degree)}
    for name, s in sgram_offsets.items():
        candidates[name] = sgram_probs(tokens, s, d, beta)
    if bayes_probs is not None:
        candidates["bayes"] = bayes_probs
    kl = {name: _kl_per_sequence(log_model, probs, positions) for name, probs in candidates.items()}
    model_nll = -torch.gather(log_model[:, positions].double(), -1, tokens[:, positions, None])[..., 0].mean(-1)
    rows.append(row("model", "nll", model_nll))
    for name, probs in candidates.items():
        rows.append(row(f"strategy {name}", "kl_model_to_strategy", kl[name], strategy=name))
        nll = -torch.log(torch.gather(probs[:, positions].double(), -1, tokens[:, positions, None])[..., 0].clamp_min(1e-300)).mean(-1)
        rows.append(row(f"strategy {name}", "nll", nll, strategy=name))

    ranked = sorted(kl, key=lambda n: mean_stderr(kl[n])[0])
    sgrams = [n for n in ranked if n in sgram_offsets]
    best, second = ranked[0], ranked[1]
    margin, margin_se, _ = mean_stderr(kl[second] - kl[best])
    headline_role = "selected" if "selected" in sets else ("parents" if sets else None)
    best_index = None
    if headline_role is not None:
        mass = lambda h: heads[f"L{layer}H{h}"][headline_role]["full_match_mass"]  # noqa: E731
        best_index = max(range(n_heads), key=lambda h: -1.0 if math.isnan(mass(h)) else mass(h))
    summary = {
        "layer": layer,
        "target_offset": off,
        "offset_sets": {role: list(s) for role, s in sets.items()},
        "heads": heads,
        "best_head": None if best_index is None else f"L{layer}H{best_index}",
        "best_head_index": best_index,
        "best_head_for": headline_role,
        "strategy_window": window,
        "strategy_max_degree": max_degree,
        "beta": beta,
        "kl_model_to_strategy": {n: mean_stderr(kl[n])[0] for n in ranked},
        "closest_strategy": best,
        "closest_sgram": sgrams[0],
        "closest_sgram_offsets": list(sgram_offsets[sgrams[0]]),
        "runner_up": second,
        "margin_to_runner_up": margin,
        "margin_stderr": margin_se,
        "closest_is_resolved": bool(margin > 2 * margin_se) if margin_se == margin_se else None,
        "model_nll": mean_stderr(model_nll)[0],
        "n_sequences": batch,
    }
    if "parents" in sets:
        summary["closest_sgram_is_parents"] = summary["closest_sgram_offsets"] == list(sets["parents"])
    return PassResult("classifier", make_table(rows), summary)
