"""Causal experiments that verify each role of the two-layer circuit (REFERENCE §1), with verdicts.

"Layer 1" below means the copier layers (every layer before the last) and "layer 2" the last
layer (`interp_icl.models.layout.ModelLayout`); in a 2-layer model these are layers 0 and 1, in a
3-layer model layers 0-1 and 2. A 1-layer model has no such circuit: each experiment then returns
an empty table and the verdict ``holds = None`` with the reason in ``not_applicable``.

All three take clean sequences ``[B, T]`` of an in-context Markov task and its parent set pa, work
on both model families through the hook contract, and return a `PassResult` (tidy ``.table`` of
mean ± stderr over sequences, JSON-able ``.summary`` with the verdict and the thresholds used).

Losses are mean NLL per sequence over the targets t in [t0, T-1], t0 = the copier pass's
`default_max_offset` (gih: M + 1; standard: max(pa) + 2), so every offset tested has a token.
The estimator losses they are compared with are `sgram_probs`: add-β smoothing (β = the task's
Dirichlet α by default) and the in-context unigram for contexts not seen yet, which is what the
models fall back to (no matching key). With that fallback the pa-gram estimator is not exactly the
Bayes predictor (which falls back to uniform): ~0.01 nats worse on the default task.

copier (layer 1). Each layer-1 head is *mean-ablated*: its output ``hook_z`` at every position is
    replaced by its mean over reference sequences at that position (for the gih model a constant
    direction after normalisation, so the head's factor in every similarity becomes 1 and the
    model computes the S-gram without that head's offset). A head *copies parent p* when the
    copier pass finds it sharp (mass >= 0.5) on attention offset p ∈ pa (key-side offset; see
    `interp_icl.analysis.copier`). Expected effect of removing parent p: the loss of the
    (pa \\ {p})-gram estimator minus the pa-gram estimator's. Verdicts:
      * a parent copier is *necessary* when its ablation effect >= NECESSARY_FRACTION (0.5) x the
        expected effect and > 2 stderr;
      * any other head has *no effect* when |effect| <= NO_EFFECT_FRACTION (0.1) x the smallest
        expected effect;
      * the role holds when both hold for every head and every parent has a copier.
    Path ablation (the head's mean replacing its output only along the path into layer 2's
    queries, keys or values, all layer-2 heads at once; `paths.destination_inputs`) shows which
    input carries the head: `carried_by` lists the inputs whose path effect is >=
    CARRIED_FRACTION (0.25) of the head's ablation effect. The path is route ``all`` (through
    everything between the layers, the FFN/MLP included); on standard models the ``direct``
    route (residual stream only, no MLP) is reported beside it.

selector (FFN / what layer 2 compares). At the query row that predicts the last token t = T-1,
    the layer-2 query (``blocks.1.attn.hook_q``: φ for the gih model, every head's q for a
    standard model) is recomputed on the sequence with the token at t - δ changed (to another
    token drawn uniformly) and patched into the clean run at that row only (keys untouched).
    Offsets δ = 1..M (gih window) or 1..max(pa)+2. Per δ: the query's change, relative to the
    query's typical difference between two sequences, and KL(clean prediction || patched).
      * *invariance*: every non-parent δ moves the query by <= INVARIANCE_CHANGE (0.1)
        (``feature_invariant``) and the prediction by a KL <= INVARIANCE_KL_FRACTION (0.1) x the
        mean KL over parent offsets (``prediction_invariant``);
      * *parents carried*: every parent δ moves the query by >= PARENT_CHANGE (0.5);
      * *interchange*: the clean query of another sequence whose query parent tuple differs is
        patched in; the prediction should follow the parent tuple: its argmax must equal the
        argmax of the pa-gram counts of the *base* context at the *source* tuple. Accuracy over
        pairs whose counts determine the answer (top count >= runner-up + INTERCHANGE_MIN_MARGIN
        (2), so one stray key cannot tie it); the role needs >= INTERCHANGE_ACCURACY (0.95).

classifier (layer 2). Every layer-2 head's attention pattern on the rows that predict targets
    t0..T-1 is replaced by
      * the *fitted* pattern softmax_l(a_h · full(l) + b_h · partial(l)) over keys l <= t - 1, where
        full(l) = 1[key l matches the target on every parent offset] and partial(l) = 1[on at least
        one but not all] (`match_counts` in 1..|pa|-1, keys l >= max(pa); with one parent there is
        no partial match and b_h = 0). (a_h, b_h) of all heads are fitted jointly by minimising the
        patched model's mean NLL on the first half of the sequences (from a_h = the classifier
        pass's full-match logit gap and b_h = 0: FIT_STEPS (30) Adam steps at learning rate
        FIT_LR (0.5), then at most FIT_POLISH (20) L-BFGS iterations; model weights frozen;
        deterministic) and evaluated on the held-out second half,
        beside the model's own loss and the uniform pattern's there. Recovery = (L_uniform -
        L_fitted) / (L_uniform - L_model); the pattern is *fitted_sufficient* when recovery >=
        FITTED_RECOVERY (0.9) (undefined, and not sufficient, unless the model's held-out loss is
        below the uniform pattern's by > 2 stderr). The family contains the ideal pattern below and
        smoothing beyond it (a finite a_h, some weight on partial matches), so a model that
        smooths its full-match counts is not penalised for it. The fit can do better than the model
        (recovery > 1): it chooses the family's best pattern for these sequences;
      * the *ideal* pattern softmax_l(a_h · full(l)), a_h the head's fitted inverse temperature (the
        classifier pass's full-match logit gap): reported as evidence, ``ideal_sufficient`` when the
        loss rises by <= SUFFICIENT_FRACTION (0.1) x (unigram loss - pa-gram loss); not part of the
        verdict (trained standard models smooth beyond it);
      * *uniform* attention over keys 0..t-1 (for the gih model exactly the in-context unigram
        with β = 0; the fitted pattern at a = b = 0, so recovery 0); the pattern is *necessary* when
        this raises the loss by >= NECESSARY_FRACTION (0.5) x (unigram loss - pa-gram loss) and at
        least to the unigram estimator's loss, less UNIGRAM_TOLERANCE (0.1) x that gap.
    The role holds when the pattern is fitted_sufficient and uniform_necessary.
    Estimator gaps, not the model's own loss, set the scale: a sharp hand-made model (large a) is
    the β = 0 estimator, whose loss is dominated by targets it gives probability ~0 and can exceed
    the unigram's. In that limit the uniform pattern cannot raise the loss much and the necessity
    check fails: it is a statement about loss, and such a model's loss says little.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from interp_icl.analysis.classifier import classifier, match_counts
from interp_icl.analysis.common import check_tokens_for
from interp_icl.analysis.copier import copier, default_max_offset
from interp_icl.analysis.result import (
    PassResult,
    make_table,
    mean_stderr,
    row,
    scalar_row,
    set_label,
)
from interp_icl.errors import require
from interp_icl.models import layout, target_offset
from interp_icl.models.layout import NO_CIRCUIT
from interp_icl.patching.metrics import output_log_probs
from interp_icl.patching.paths import COMPONENTS, destination_inputs
from interp_icl.patching.sources import cached_activations
from interp_icl.theory.estimators import context_index, sgram_probs
from interp_icl.seeding import seeded

NECESSARY_FRACTION = 0.5
NO_EFFECT_FRACTION = 0.1
CARRIED_FRACTION = 0.25
INVARIANCE_CHANGE = 0.1
INVARIANCE_KL_FRACTION = 0.1
PARENT_CHANGE = 0.5
INTERCHANGE_ACCURACY = 0.95
INTERCHANGE_MIN_MARGIN = 2
SUFFICIENT_FRACTION = 0.1
FITTED_RECOVERY = 0.9
FIT_STEPS = 30
FIT_LR = 0.5
FIT_POLISH = 20
UNIGRAM_TOLERANCE = 0.1

Hook = tuple[str, Callable[[Tensor, object], Tensor]]


# ----- shared pieces ---------------------------------------------------------------------------
def first_target(model: nn.Module, parents: Sequence[int]) -> int:
    """t0: the first target the role losses count."""
    return default_max_offset(model, tuple(parents))


def _check(
    model: nn.Module, tokens: Tensor, parents: Sequence[int]
) -> tuple[Tensor, tuple[int, ...]]:
    tokens = check_tokens_for(model, tokens)
    parents = tuple(sorted(set(parents)))
    require(
        len(parents) > 0 and parents[0] >= 1, f"parents must be offsets >= 1, got {list(parents)}"
    )
    require(
        tokens.shape[0] >= 2, f"role experiments need at least 2 sequences, got {tokens.shape[0]}"
    )
    t0 = first_target(model, parents)
    require(
        tokens.shape[1] >= 2 * t0 + 2,
        f"role experiments need sequences of at least {2 * t0 + 2} tokens, got {tokens.shape[1]}",
    )
    return tokens, parents


def _not_applicable(name: str, role: str, parents: tuple[int, ...], n: int) -> PassResult:
    """The result of a role experiment on a model without the two-layer circuit."""
    summary = {
        "role": role,
        "parents": list(parents),
        "holds": None,
        "not_applicable": NO_CIRCUIT,
        "failed_checks": [],
        "n_sequences": n,
    }
    return PassResult(name, make_table([]), summary)


def run_patched(model: nn.Module, tokens: Tensor, hooks: Sequence[Hook] = ()) -> Tensor:
    """The model's output ``[B, T, V]`` with forward `hooks` applied (no gradients)."""
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=list(hooks)).detach()


def replace(value: Tensor, index: tuple = ()) -> Callable[[Tensor, object], Tensor]:
    """A hook that writes `value` into ``act[index]`` (the whole activation for index ())."""

    def hook(act: Tensor, hook) -> Tensor:
        act = act.clone()
        act[(slice(None), *index)] = value.to(act.dtype)
        return act

    return hook


def sequence_nll(model: nn.Module, output: Tensor, tokens: Tensor, t0: int) -> Tensor:
    """``[B]`` mean NLL (nats) of targets t0..T-1 under a model output ``[B, T, V]``."""
    off = target_offset(model)
    targets = torch.arange(t0, tokens.shape[1])
    logp = output_log_probs(model, output[:, targets - off].double())
    return -logp.gather(-1, tokens[:, targets, None])[..., 0].mean(-1)


def estimator_nll(
    tokens: Tensor, offsets: Sequence[int], vocab: int, beta: float, t0: int
) -> Tensor:
    """``[B]`` mean NLL of targets t0..T-1 under the in-context S-gram estimator (add-β)."""
    probs = sgram_probs(tokens, tuple(offsets), vocab, beta)[:, t0:].double()
    return -torch.log(probs.gather(-1, tokens[:, t0:, None])[..., 0].clamp_min(1e-300)).mean(-1)


def _stat(values: Tensor) -> dict:
    mean, stderr, n = mean_stderr(values)
    return {"mean": mean, "stderr": stderr, "n": n}


# ----- copier ----------------------------------------------------------------------------------
def copier_role(
    model: nn.Module,
    tokens: Tensor,
    parents: Sequence[int],
    beta: float,
    reference_tokens: Tensor | None = None,
) -> PassResult:
    """Mean-ablate each layer-1 head (and each of its paths into layer 2); see the module docstring.
    `reference_tokens` ``[R, T]`` give the means (default: `tokens`)."""
    tokens, parents = _check(model, tokens, parents)
    reference = tokens if reference_tokens is None else check_tokens_for(model, reference_tokens)
    require(
        reference.shape[1] == tokens.shape[1], "reference tokens must have the clean tokens' length"
    )
    shape = layout(model)
    if not shape.has_circuit:
        return _not_applicable("copier_role", "copier", parents, int(tokens.shape[0]))
    vocab, t0 = int(model.cfg.d_vocab), first_target(model, parents)
    last = shape.classifier_layer
    heads = copier(model, tokens, parents, layer=shape.copier_layers).summary["heads"]

    clean = sequence_nll(model, run_patched(model, tokens), tokens, t0)
    pa_gram = estimator_nll(tokens, parents, vocab, beta, t0)
    expected = {
        p: estimator_nll(tokens, [q for q in parents if q != p], vocab, beta, t0) - pa_gram
        for p in parents
    }
    smallest_expected = min(mean_stderr(e)[0] for e in expected.values())
    routes = ("all", "direct") if shape.direct_path else ("all",)

    rows = [
        row("model", "loss", clean),
        row("pa-gram estimator", "loss", pa_gram, offset_set=set_label(parents)),
    ]
    for p, e in expected.items():
        rows.append(row(f"without parent {p}", "expected_effect", e, parent=p))
    verdicts: dict[str, dict] = {}
    for layer in shape.copier_layers:
        z_name = f"blocks.{layer}.attn.hook_z"
        mean_z = cached_activations(model, reference, [z_name])[z_name].mean(
            0, keepdim=True
        )  # [1, T, H, dh]
        paths = {  # (route, component) -> [H, B, T, H2, d]
            (route, c): destination_inputs(
                model, tokens, mean_z, c, src_layer=layer, dst_layer=last, route=route
            )
            for route in routes
            for c in COMPONENTS
        }
        for h in range(mean_z.shape[2]):
            unit = f"L{layer}H{h}"
            verdicts[unit], head_rows = _ablate_copier(
                model, tokens, t0, heads[unit], layer, h, mean_z, paths, last, clean, expected,
                smallest_expected,
            )
            rows += head_rows
    covered = sorted(
        {v["copies_parent"] for v in verdicts.values() if v["copies_parent"] is not None}
    )
    failed = [f"parent {p} has no copier head" for p in parents if p not in covered]
    for unit, v in verdicts.items():
        if v["copies_parent"] is not None and not v["necessary"]:
            failed.append(
                f"{unit} copies parent {v['copies_parent']} but its ablation changes the loss by "
                f"{v['effect']:+.3f} ± {v['effect_stderr']:.3f} (needs >= {NECESSARY_FRACTION} x {v['expected_effect']:.3f})"
            )
        if v["copies_parent"] is None and not v["no_effect"]:
            failed.append(
                f"{unit} copies no parent but its ablation changes the loss by {v['effect']:+.3f} "
                f"(allowed {NO_EFFECT_FRACTION} x {smallest_expected:.3f})"
            )
    summary = {
        "role": "copier",
        "parents": list(parents),
        "beta": beta,
        "first_target": t0,
        "ablation": "mean over reference sequences, per position",
        "model_loss": mean_stderr(clean)[0],
        "pa_gram_loss": mean_stderr(pa_gram)[0],
        "expected_effect": {str(p): mean_stderr(e)[0] for p, e in expected.items()},
        "heads": verdicts,
        "parents_copied": covered,
        "thresholds": {
            "necessary": NECESSARY_FRACTION,
            "no_effect": NO_EFFECT_FRACTION,
            "carried": CARRIED_FRACTION,
        },
        "holds": not failed,
        "failed_checks": failed,
        "n_sequences": int(tokens.shape[0]),
    }
    return PassResult("copier_role", make_table(rows), summary)


def _ablate_copier(
    model: nn.Module,
    tokens: Tensor,
    t0: int,
    info: dict,
    layer: int,
    h: int,
    mean_z: Tensor,
    paths: dict[tuple[str, str], Tensor],
    last: int,
    clean: Tensor,
    expected: dict[int, Tensor],
    smallest_expected: float,
) -> tuple[dict, list[dict]]:
    """(verdict, rows) of mean-ablating head `h` of copier layer `layer` (its copier-pass entry
    `info`, its mean output `mean_z` ``[1, T, H, dh]``) and each of its paths into the last layer
    (`paths`: (route, component) -> ``[H, B, T, H2, d]``); losses per sequence ``[B]`` in nats."""
    unit = f"L{layer}H{h}"
    z_name = f"blocks.{layer}.attn.hook_z"
    offset = info["attn_offset"]
    copies = offset if info["is_copier"] and offset in expected else None
    ablated = sequence_nll(
        model,
        run_patched(model, tokens, [(z_name, replace(mean_z[:, :, h], (slice(None), h)))]),
        tokens,
        t0,
    )
    effect = ablated - clean
    labels = {"layer": layer, "head": h, "offset": offset}
    rows = [
        row(unit, "ablated_loss", ablated, **labels),
        row(unit, "ablation_effect", effect, **labels),
    ]
    path_effects: dict[str, dict[str, float]] = {route: {} for route, _ in paths}
    for (route, c), inputs in paths.items():
        hook = (f"blocks.{last}.attn.hook_{c}", replace(inputs[h]))
        path_effect = sequence_nll(model, run_patched(model, tokens, [hook]), tokens, t0) - clean
        rows.append(row(unit, "path_effect", path_effect, component=c, route=route, **labels))
        path_effects[route][c] = mean_stderr(path_effect)[0]
    e_mean, e_se, _ = mean_stderr(effect)
    significant = e_mean > 2 * e_se
    verdict = {
        "attn_offset": offset,
        "sharpness": info["sharpness"],
        "copies_parent": copies,
        "effect": e_mean,
        "effect_stderr": e_se,
        "path_effects": path_effects,
        "carried_by": [
            c
            for c, v in path_effects["all"].items()
            if significant and v >= CARRIED_FRACTION * e_mean
        ],
    }
    if copies is not None:
        want = mean_stderr(expected[copies])[0]
        verdict["expected_effect"] = want
        verdict["effect_ratio"] = e_mean / want if want > 0 else math.nan
        verdict["necessary"] = bool(significant and e_mean >= NECESSARY_FRACTION * want)
        verdict["holds"] = verdict["necessary"]
    else:
        verdict["no_effect"] = bool(abs(e_mean) <= NO_EFFECT_FRACTION * smallest_expected)
        verdict["holds"] = verdict["no_effect"]
    return verdict, rows


# ----- selector --------------------------------------------------------------------------------
def _row_kl(model: nn.Module, reference: Tensor, output: Tensor) -> Tensor:
    """``[B]`` KL(reference || output) of one output row ``[B, V]`` each."""
    ref, out = output_log_probs(model, reference.double()), output_log_probs(model, output.double())
    return (ref.exp() * (ref - out)).sum(-1)


def selector_role(
    model: nn.Module,
    tokens: Tensor,
    parents: Sequence[int],
    generator: torch.Generator | None = None,
) -> PassResult:
    """Invariance of the layer-2 query to non-parent offsets, and interchange of query features
    between sequences; see the module docstring."""
    tokens, parents = _check(model, tokens, parents)
    shape = layout(model)
    if not shape.has_circuit:
        return _not_applicable("selector_role", "selector", parents, int(tokens.shape[0]))
    generator = generator or seeded(0)
    batch, seq = tokens.shape
    vocab, off = int(model.cfg.d_vocab), target_offset(model)
    t, i = seq - 1, seq - 1 - off  # the last target and the output row that predicts it
    q_name = f"blocks.{shape.classifier_layer}.attn.hook_q"
    max_offset = int(shape.window) if shape.window is not None else max(parents) + 2

    clean_q = cached_activations(model, tokens, [q_name])[q_name][:, i]  # [B, H2, dq]
    clean_row = run_patched(model, tokens)[:, i]
    partner = torch.roll(torch.arange(batch), 1)
    spread = float((clean_q - clean_q[partner]).flatten(1).norm(dim=-1).mean().clamp_min(1e-12))

    rows, offsets = [], {}
    for delta in range(1, max_offset + 1):
        changed = tokens.clone()
        shift = torch.randint(1, vocab, (batch,), generator=generator)
        changed[:, t - delta] = (tokens[:, t - delta] + shift) % vocab
        new_q = cached_activations(model, changed, [q_name])[q_name][:, i]
        change = (new_q - clean_q).flatten(1).norm(dim=-1).double() / spread
        patched_row = run_patched(model, tokens, [(q_name, replace(new_q, (i,)))])[:, i]
        kl = _row_kl(model, clean_row, patched_row)
        kind = "parent" if delta in parents else "non-parent"
        labels = {"offset": delta, "kind": kind}
        rows += [
            row(f"δ={delta}", "query_change", change, **labels),
            row(f"δ={delta}", "prediction_kl", kl, **labels),
        ]
        offsets[delta] = {
            "kind": kind,
            "query_change": mean_stderr(change)[0],
            "prediction_kl": mean_stderr(kl)[0],
        }

    parent_kl = sum(offsets[p]["prediction_kl"] for p in parents if p in offsets) / len(parents)
    for delta, o in offsets.items():
        if o["kind"] == "non-parent":
            o["feature_invariant"] = bool(o["query_change"] <= INVARIANCE_CHANGE)
            o["prediction_invariant"] = bool(
                o["prediction_kl"] <= INVARIANCE_KL_FRACTION * parent_kl
            )
        else:
            o["carried"] = bool(o["query_change"] >= PARENT_CHANGE)

    # interchange: another sequence's query, whose query parent tuple differs
    contexts = context_index(tokens, parents, vocab)  # [B, T]
    query_context = contexts[:, t]
    source = torch.full((batch,), -1, dtype=torch.long)
    for b in range(batch):
        for k in range(1, batch):
            if query_context[(b + k) % batch] != query_context[b]:
                source[b] = (b + k) % batch
                break
    has_source = source >= 0
    source = source.clamp_min(0)
    patched_row = run_patched(model, tokens, [(q_name, replace(clean_q[source], (i,)))])[:, i]
    keys = torch.arange(t)
    same = contexts[:, keys] == query_context[source][:, None]  # keys l < t with the source's tuple
    counts = (same[..., None] & (tokens[:, keys, None] == torch.arange(vocab))).sum(1)  # [B, d]
    top2 = counts.topk(2, dim=-1).values
    eligible = has_source & (top2[:, 0] >= top2[:, 1] + INTERCHANGE_MIN_MARGIN)
    implied = counts.argmax(-1)
    follows = (patched_row.argmax(-1) == implied).double()
    kept = (patched_row.argmax(-1) == clean_row.argmax(-1)).double()
    nan = torch.full_like(follows, math.nan)
    accuracy_values = torch.where(eligible, follows, nan)
    rows.append(row("interchange", "accuracy", accuracy_values))
    rows.append(row("interchange", "kept_base_prediction", torch.where(eligible, kept, nan)))
    accuracy = _stat(accuracy_values)

    non_parents = [o for o in offsets.values() if o["kind"] == "non-parent"]
    feature_invariant = all(o["feature_invariant"] for o in non_parents)
    prediction_invariant = all(o["prediction_invariant"] for o in non_parents)
    carried = all(offsets[p]["carried"] for p in parents if p in offsets)
    failed = []
    for d, o in offsets.items():
        if o["kind"] == "non-parent" and not o["feature_invariant"]:
            failed.append(
                f"non-parent δ={d} moves the query by {o['query_change']:.3f} (allowed {INVARIANCE_CHANGE})"
            )
        if o["kind"] == "non-parent" and not o["prediction_invariant"]:
            failed.append(
                f"non-parent δ={d} moves the prediction by KL {o['prediction_kl']:.4f} "
                f"(allowed {INVARIANCE_KL_FRACTION} x {parent_kl:.4f})"
            )
        if o["kind"] == "parent" and not o["carried"]:
            failed.append(
                f"parent δ={d} moves the query by only {o['query_change']:.3f} (needs {PARENT_CHANGE})"
            )
    if accuracy["n"] == 0:
        failed.append("no interchange pair has a determined answer")
    elif accuracy["mean"] < INTERCHANGE_ACCURACY:
        failed.append(
            f"interchange accuracy {accuracy['mean']:.3f} ± {accuracy['stderr']:.3f} (needs {INTERCHANGE_ACCURACY})"
        )
    summary = {
        "role": "selector",
        "parents": list(parents),
        "feature": q_name,
        "query_row": i,
        "offsets": {str(d): o for d, o in offsets.items()},
        "non_parent_offsets": [d for d, o in offsets.items() if o["kind"] == "non-parent"],
        "feature_invariant": feature_invariant,
        "prediction_invariant": prediction_invariant,
        "parents_carried": carried,
        "interchange_accuracy": accuracy["mean"],
        "interchange_accuracy_stderr": accuracy["stderr"],
        "interchange_pairs": accuracy["n"],
        "thresholds": {
            "invariance_change": INVARIANCE_CHANGE,
            "invariance_kl_fraction": INVARIANCE_KL_FRACTION,
            "parent_change": PARENT_CHANGE,
            "interchange_accuracy": INTERCHANGE_ACCURACY,
            "interchange_min_margin": INTERCHANGE_MIN_MARGIN,
        },
        "holds": not failed,
        "failed_checks": failed,
        "n_sequences": batch,
    }
    return PassResult("selector_role", make_table(rows), summary)


# ----- classifier ------------------------------------------------------------------------------
def match_masks(
    tokens: Tensor, parents: Sequence[int], t0: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(full, partial, past) for the rows that predict targets t = t0..T-1 (Q = T - t0 of them):
    ``past`` ``[Q, T]`` marks the keys l <= t - 1 a row may attend to; ``full`` and ``partial``
    ``[B, Q, T]`` mark the keys l in [max(pa), t - 1] that match the target on all parent offsets,
    and on at least one but not all of them (`match_counts` in 1..|pa|-1; none when |pa| = 1)."""
    seq = tokens.shape[1]
    targets = torch.arange(t0, seq)
    keys = torch.arange(seq)
    past = keys[None, :] <= targets[:, None] - 1  # [Q, T]
    counted = past & (keys >= max(parents))
    counts = match_counts(tokens, parents)[:, targets]  # [B, Q, T]
    full = (counts == len(parents)) & counted
    partial = (counts >= 1) & (counts < len(parents)) & counted
    return full, partial, past


def pattern_rows(full: Tensor, partial: Tensor, past: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``[B, H, Q, T]`` rows softmax_l(a_h · full + b_h · partial) over the keys in `past`, from
    `match_masks` and per-head `a`, `b` ``[H]`` (float64; differentiable in a and b)."""
    scores = (
        a[None, :, None, None] * full[:, None].double()
        + b[None, :, None, None] * partial[:, None].double()
    )
    return torch.softmax(scores.masked_fill(~past, -math.inf), dim=-1)


def replacement_patterns(
    pattern: Tensor,
    tokens: Tensor,
    parents: Sequence[int],
    inverse_temperatures: Sequence[float],
    t0: int,
    off: int,
) -> tuple[Tensor, Tensor]:
    """(ideal, uniform) copies of a layer-2 pattern ``[B, H, T, T]`` with the rows that predict
    targets t0..T-1 replaced: softmax over keys l <= t-1 of a_h · full-match indicator, and 1/t."""
    targets = torch.arange(t0, tokens.shape[1])
    full, partial, past = match_masks(tokens, parents, t0)
    a = torch.tensor(
        [x if math.isfinite(x) else 0.0 for x in inverse_temperatures], dtype=torch.float64
    )
    ideal_rows = pattern_rows(full, partial, past, a, torch.zeros_like(a))
    uniform_rows = (past / past.sum(-1, keepdim=True)).double().expand_as(ideal_rows)
    ideal, uniform = pattern.clone(), pattern.clone()
    ideal[:, :, targets - off] = ideal_rows.to(pattern.dtype)
    uniform[:, :, targets - off] = uniform_rows.to(pattern.dtype)
    return ideal, uniform


def fitted_pattern_nll(
    model: nn.Module, tokens: Tensor, parents: Sequence[int], a: Tensor, b: Tensor, t0: int
) -> Tensor:
    """``[B]`` mean NLL of targets t0..T-1 with every last-layer head's pattern on the rows that
    predict them replaced by softmax_l(a_h · full + b_h · partial) (`pattern_rows`; a, b ``[H]``).
    Differentiable in a and b when gradients are enabled; a = b = 0 is the uniform pattern."""
    name = f"blocks.{layout(model).classifier_layer}.attn.hook_pattern"
    rows = torch.arange(t0, tokens.shape[1]) - target_offset(model)
    new_rows = pattern_rows(*match_masks(tokens, parents, t0), a, b)
    output = model.run_with_hooks(tokens, fwd_hooks=[(name, replace(new_rows, (slice(None), rows)))])
    return sequence_nll(model, output, tokens, t0)


@contextmanager
def _frozen(model: nn.Module):
    """Model weights without gradients inside the block (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def fit_pattern(
    model: nn.Module,
    tokens: Tensor,
    parents: Sequence[int],
    a0: Sequence[float],
    t0: int,
    steps: int = FIT_STEPS,
    polish: int = FIT_POLISH,
) -> tuple[Tensor, Tensor]:
    """(a, b) ``[H]`` float64 minimising the mean of `fitted_pattern_nll` on `tokens` ``[B, T]``:
    from a = `a0` (non-finite entries: 0), b = 0, `steps` Adam steps (learning rate FIT_LR; they
    keep out of the flat regions where a softmax saturates) then at most `polish` L-BFGS
    iterations (strong-Wolfe line search: the loss only decreases); model weights frozen;
    deterministic. With one parent b stays 0."""
    a = torch.tensor([x if math.isfinite(x) else 0.0 for x in a0], dtype=torch.float64)
    b = torch.zeros_like(a)
    a.requires_grad_(True)
    b.requires_grad_(len(parents) > 1)
    free = [a, b] if len(parents) > 1 else [a]

    def loss() -> Tensor:
        return fitted_pattern_nll(model, tokens, parents, a, b, t0).mean()

    adam = torch.optim.Adam(free, lr=FIT_LR)
    lbfgs = torch.optim.LBFGS(free, max_iter=polish, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        lbfgs.zero_grad()
        value = loss()
        value.backward()
        return value

    with _frozen(model), torch.enable_grad():
        for _ in range(steps):
            adam.zero_grad()
            loss().backward()
            adam.step()
        lbfgs.step(closure)
    return a.detach(), b.detach()


def pattern_recovery(uniform: float, fitted: float, model: float) -> float:
    """(L_uniform - L_fitted) / (L_uniform - L_model): 0 for the uniform pattern, 1 when the
    fitted pattern does as well as the model's own (nan when the model does not beat uniform)."""
    gap = uniform - model
    return (uniform - fitted) / gap if gap > 0 else math.nan


def classifier_role(
    model: nn.Module, tokens: Tensor, parents: Sequence[int], beta: float
) -> PassResult:
    """Replace the layer-2 pattern by the fitted, the ideal and the uniform pattern; see the
    module docstring."""
    tokens, parents = _check(model, tokens, parents)
    shape = layout(model)
    if not shape.has_circuit:
        return _not_applicable("classifier_role", "classifier", parents, int(tokens.shape[0]))
    vocab, off, t0 = int(model.cfg.d_vocab), target_offset(model), first_target(model, parents)
    last = shape.classifier_layer
    fit = classifier(model, tokens, parents=parents, layer=last).summary["heads"]
    a = [fit[f"L{last}H{h}"]["parents"]["logit_gap"] for h in range(len(fit))]
    name = f"blocks.{last}.attn.hook_pattern"
    pattern = cached_activations(model, tokens, [name])[name]
    ideal, uniform = replacement_patterns(pattern, tokens, parents, a, t0, off)

    losses = {
        "model": sequence_nll(model, run_patched(model, tokens), tokens, t0),
        "ideal pattern": sequence_nll(
            model, run_patched(model, tokens, [(name, replace(ideal))]), tokens, t0
        ),
        "uniform pattern": sequence_nll(
            model, run_patched(model, tokens, [(name, replace(uniform))]), tokens, t0
        ),
        "pa-gram estimator": estimator_nll(tokens, parents, vocab, beta, t0),
        "unigram estimator": estimator_nll(tokens, (), vocab, beta, t0),
    }
    n = int(tokens.shape[0])
    units = [f"L{last}H{h}" for h in range(len(a))]

    # fitted pattern: (a_h, b_h) fitted on the first half, losses on the held-out second half
    half = n // 2
    fit_a, fit_b = fit_pattern(model, tokens[:half], parents, a, t0)
    with torch.no_grad():
        fitted_loss = fitted_pattern_nll(model, tokens[half:], parents, fit_a, fit_b, t0)
    held_out = {
        "model": losses["model"][half:],
        "fitted pattern": fitted_loss,
        "uniform pattern": losses["uniform pattern"][half:],
    }
    held_mean = {unit: mean_stderr(v)[0] for unit, v in held_out.items()}
    gap, gap_se, _ = mean_stderr(held_out["uniform pattern"] - held_out["model"])
    gap_resolved = bool(gap > 2 * gap_se)
    recovery = (
        pattern_recovery(held_mean["uniform pattern"], held_mean["fitted pattern"], held_mean["model"])
        if gap_resolved
        else math.nan
    )
    fitted_sufficient = bool(recovery >= FITTED_RECOVERY)  # False for nan

    rows = [row(unit, "loss", values) for unit, values in losses.items()]
    rows += [
        scalar_row(units[h], "fitted_inverse_temperature", a[h], n, head=h) for h in range(len(a))
    ]
    rows += [row(unit, "held_out_loss", values) for unit, values in held_out.items()]
    rows += [scalar_row(units[h], "fitted_a", float(fit_a[h]), half, head=h) for h in range(len(a))]
    rows += [scalar_row(units[h], "fitted_b", float(fit_b[h]), half, head=h) for h in range(len(a))]
    rows.append(scalar_row("fitted pattern", "recovery", recovery, n - half))
    ideal_rise = losses["ideal pattern"] - losses["model"]
    uniform_rise = losses["uniform pattern"] - losses["model"]
    circuit_gain = losses["unigram estimator"] - losses["pa-gram estimator"]
    rows += [
        row("ideal pattern", "loss_rise", ideal_rise),
        row("uniform pattern", "loss_rise", uniform_rise),
    ]
    ideal_mean, gain_mean = mean_stderr(ideal_rise)[0], mean_stderr(circuit_gain)[0]
    uniform_mean, uniform_se, _ = mean_stderr(uniform_rise)
    uniform_minus_unigram = mean_stderr(losses["uniform pattern"] - losses["unigram estimator"])[0]
    ideal_sufficient = bool(ideal_mean <= SUFFICIENT_FRACTION * gain_mean)
    necessary = bool(
        uniform_mean >= NECESSARY_FRACTION * gain_mean
        and uniform_minus_unigram >= -UNIGRAM_TOLERANCE * gain_mean
    )
    failed = []
    if not gap_resolved:
        failed.append(
            f"the model's held-out loss is not resolved below the uniform pattern's "
            f"({-gap:+.3f} ± {gap_se:.3f}), so no recovery can be measured"
        )
    elif not fitted_sufficient:
        failed.append(
            f"the fitted pattern recovers {recovery:.3f} of the model's held-out gain over the "
            f"uniform pattern (needs {FITTED_RECOVERY})"
        )
    if uniform_mean < NECESSARY_FRACTION * gain_mean:
        failed.append(
            f"the uniform pattern raises the loss by only {uniform_mean:+.3f} (needs {NECESSARY_FRACTION} x {gain_mean:.3f})"
        )
    if uniform_minus_unigram < -UNIGRAM_TOLERANCE * gain_mean:
        failed.append(
            f"the uniform pattern's loss stays {-uniform_minus_unigram:.3f} below the unigram estimator's"
        )
    summary = {
        "role": "classifier",
        "parents": list(parents),
        "beta": beta,
        "first_target": t0,
        "fitted_inverse_temperature": {units[h]: a[h] for h in range(len(a))},
        "loss": {unit: mean_stderr(v)[0] for unit, v in losses.items()},
        "fitted_a": {units[h]: float(fit_a[h]) for h in range(len(a))},
        "fitted_b": {units[h]: float(fit_b[h]) for h in range(len(a))},
        "fit_sequences": half,
        "held_out_sequences": n - half,
        "held_out_loss": held_mean,
        "fitted_recovery": recovery,
        "ideal_loss_rise": ideal_mean,
        "ideal_loss_rise_stderr": mean_stderr(ideal_rise)[1],
        "uniform_loss_rise": uniform_mean,
        "uniform_loss_rise_stderr": uniform_se,
        "uniform_minus_unigram_loss": uniform_minus_unigram,
        "circuit_gain": gain_mean,
        "fitted_sufficient": fitted_sufficient,
        "ideal_sufficient": ideal_sufficient,
        "uniform_necessary": necessary,
        "thresholds": {
            "fitted_recovery": FITTED_RECOVERY,
            "ideal_sufficient": SUFFICIENT_FRACTION,
            "necessary": NECESSARY_FRACTION,
            "unigram_tolerance": UNIGRAM_TOLERANCE,
        },
        "holds": not failed,
        "failed_checks": failed,
        "n_sequences": n,
    }
    return PassResult("classifier_role", make_table(rows), summary)


# ----- all three -------------------------------------------------------------------------------
ROLES = ("copier", "selector", "classifier")


def role_experiments(
    model: nn.Module,
    tokens: Tensor,
    parents: Sequence[int],
    beta: float,
    reference_tokens: Tensor | None = None,
    seed: int = 0,
) -> dict[str, PassResult]:
    """The three role experiments on `tokens` ``[B, T]`` (clean sequences of a task with `parents`)."""
    model.eval()
    return {
        "copier": copier_role(model, tokens, parents, beta, reference_tokens),
        "selector": selector_role(model, tokens, parents, seeded(seed)),
        "classifier": classifier_role(model, tokens, parents, beta),
    }
