"""The known-answer zoo: hand-set models, each stating the verdict every role check must give.

Roles are ``"copier"``, ``"selector"`` and ``"classifier"`` (DESIGN.md, "What the product is").
A positive control implements a generalized induction head (GIH) for its parent set and every
role holds; a negative control breaks exactly one role (``ZooModel.breaks``) and only that role's
verdict is stated (False); the one-layer model has no two-layer circuit at all (``breaks`` is
``"circuit"``, every role's verdict None: role checks should say "not applicable",
``interp_icl.models.layout.NO_CIRCUIT``).

**`standard_gih(parents, vocab_size, n_ctx, ...)`**: a TransformerLens-native
(``TransformerBridge.boot_native``), attention-only, norm-free two-layer standard model. Its
logits row i predicts token t = i + 1 (target offset 1). For a parent set pa (offsets >= 1,
P = max(pa)) the target t = i + 1 needs the tuple (x_{t-p})_{p in pa} = (x_{i+1-p}), i.e. offsets
p - 1 from the query row (offset 0 is the row's own token); a key j (value x_j) needs (x_{j-p}),
offsets p. Layer 0 therefore copies the offsets R = {p} ∪ {p - 1 >= 1} (p in pa):

* copier L0 head for offset r: query at i = one-hot of position max(i - r, 0), key at j = one-hot
  of position j (positional only, score gap COPY_SHARPNESS), value = the token one-hot, output
  into its own residual slot S_r: S_r(i) = onehot(x_{i-r}) (x_0 at i < r);
* classifier L1H0: the head dim holds one d-block per compared offset p (the parents, sorted):
  query block = gain x onehot(x_{i+1-p}) (the token slot when p = 1, else S_{p-1}), key block =
  S_p(j) = onehot(x_{j-p}); one more "mask" dimension puts keys j < P (whose parent tuple is
  undefined) at least MASK_SCORE below every other key (query: 1 at every row; key:
  -(MASK_SCORE + sharpness x c) at positions < P, c = number of compared offsets). So the score
  of key j is ``sharpness`` x (number of parents on which x_{j-p} = x_{t-p}) for
  j >= P; value = token x_j, output into the "out" slot, which the unembedding reads with gain
  ``logit_scale``. The prediction is softmax(logit_scale x ŷ) with ŷ_k the attention share of
  token k: the pa-gram estimator's relative frequencies, backed off to keys that match on fewer
  parents (weight e^-sharpness per missing match) where the full tuple has not been seen yet.
  The logits are ``logit_scale`` x frequencies, so the model's confidence is capped at
  e^L / (e^L + d - 1) whatever the count; LOGIT_SCALE = 3.5 is the best single value on the
  default task (d = 3, pa {1, 2}, T = 101: NLL 0.346 vs the pa-gram estimator's 0.296 with
  beta = alpha = 0.1, targets t >= 4, 256 sequences). ``sharpness`` hardly matters (6 to 30 move
  the loss by < 0.002); 30 keeps the attention crisp.

Residual layout (d_model = d + n_ctx + d x (number of copy slots) [+ d spare] + d), in this order::

    [ token one-hot d | position one-hot n_ctx | S_r for r in sorted(copy slots) (d each)
      | spare d (only with extra "non_parent_copier") | out d ]

``copy slots`` = R, plus P + 1 with ``broken="query_non_parent"``. d_head = max(n_ctx,
c x d + 1) with c the number of offsets the classifier compares (|pa|, or |pa| + 1 with
``query_non_parent``): head dims 0..n_ctx-1 are positions for positional heads; for the
classifier, blocks of d then the mask dimension. All biases are zero.

Heads of layer 0, in order: the copiers by increasing offset (the two halves of a redundant copier
side by side), then the extras' heads ("non_parent_copier", "diffuse"), then idle heads; layer 1:
the classifier (head 0), then idle heads. n_heads = max(heads needed by layer 0, by layer 1), plus
one with extra "idle". `standard_gih_layout(...)` states each head's job (also
``ZooModel.heads``) and the slots.

Extras (the circuit stays a GIH): "idle" (one more all-zero head per layer), "non_parent_copier"
(a layer-0 head copying max(R) + 1 into the spare slot, read by nothing), "redundant" (the copier
of min(pa) is two heads, each attending that offset and writing 0.5 x onehot into the same slot),
"diffuse" (a layer-0 head with uniform causal attention whose value is the token one-hot, writing
DIFFUSE_WEIGHT x the in-context unigram frequencies straight into the out slot: a unigram-smoothing
head on the direct path that nothing in layer 1 reads).

Broken variants (each breaks one role): "missing_copier" (nothing copies offset P; S_P stays 0)
and "wrong_offset" (the copier of S_P attends offset P + 1) break the copier; "query_non_parent"
(the classifier also compares offset P + 1, from S_P on the query side and a copier of P + 1 on
the key side, with the same gain) breaks the selector; "uniform_classifier" (classifier query 0:
uniform causal attention) and "positional_classifier" (the classifier attends position i - 1 by
position only) break the classifier.

**`one_layer(vocab_size, n_ctx)`**: one attention-only layer, one head with uniform causal
attention copying the in-context unigram frequencies into the logits (the in-context unigram
predictor, softened): no copier -> classifier circuit can exist.

**gih family** zoo members are `interp_icl.models.handmade_gih.gih_for_parents` models with
a = GIH_A = 5 (with the default a = 200 a token unseen in a context gets probability ~0, NLL ~1.1
instead of ~0.5 at n_ctx 64), and broken ones made from them by editing weights (see `zoo`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn
from transformer_lens.model_bridge import TransformerBridge

from interp_icl.builtin_families import StandardConfig
from interp_icl.errors import require
from interp_icl.models.gih import GIHModel, feature_unit
from interp_icl.models.handmade_gih import gih_for_parents
from interp_icl.models.standard import build_standard

ROLES = ("copier", "selector", "classifier")
EXTRAS = ("idle", "non_parent_copier", "redundant", "diffuse")
BROKEN = (
    "missing_copier",
    "wrong_offset",
    "query_non_parent",
    "uniform_classifier",
    "positional_classifier",
)
BROKEN_ROLE = {
    "missing_copier": "copier",
    "wrong_offset": "copier",
    "query_non_parent": "selector",
    "uniform_classifier": "classifier",
    "positional_classifier": "classifier",
}
SHARPNESS = 30.0  # classifier: score per matching parent (after 1/sqrt(d_head))
COPY_SHARPNESS = 30.0  # positional heads: score gap between the attended position and the rest
LOGIT_SCALE = 3.5  # tuned on the default task (d = 3, pa {1, 2}, T = 101)
MASK_SCORE = 100.0  # keys j < max(pa) (undefined parent tuple) score this much below any other
DIFFUSE_WEIGHT = 0.1  # extra "diffuse": the unigram frequencies' weight in the out slot


@dataclass(frozen=True)
class HeadRole:
    """What one head of a zoo model does (its stated, known answer).

    role: "copier" (copies `offset` into a slot), "non_parent_copier" (copies `offset`, a
    non-parent, into a slot nothing reads), "diffuse" (uniform causal attention), "classifier"
    (the layer-1 GIH head), "broken_classifier" (the layer-1 head of a broken-classifier variant;
    `offset` 1 for the positional one), "idle" (all weights zero).
    offset: the relative offset the head attends (i -> i - offset), None when not positional.
    weight: the head's output gain (0.5 for each half of a redundant copier).
    """

    layer: int
    head: int
    role: str
    offset: int | None = None
    slot: str | None = None
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True)
class ZooModel:
    """One known-answer model.

    build: makes the model (fresh each call). family: "standard" (TransformerBridge, logits, row i
    predicts token i + 1) or "gih" (GIHModel, probabilities, row t predicts token t).
    expected: role -> the verdict every check of that role must give (True holds, False fails,
    None no statement). breaks: the role a negative control breaks ("circuit" for the one-layer
    model), None for positive controls. heads: the stated job of each head (`HeadRole`).
    circuit: the edges the construction uses (`StandardGIHLayout.circuit_edges`, `_gih_circuit`).
    """

    name: str
    build: Callable[[], nn.Module]
    parents: tuple[int, ...]
    vocab_size: int
    n_ctx: int
    family: str
    expected: dict[str, bool | None]
    breaks: str | None
    description: str
    heads: tuple[HeadRole, ...] = field(default=())
    circuit: frozenset[tuple[str, str]] | None = None  # the edges the construction uses


# ----- the standard GIH ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StandardGIHLayout:
    """Where everything sits in a `standard_gih` model.

    parents: sorted parent offsets. compared: the offsets the classifier compares (the parents, plus
    max(pa) + 1 for ``broken="query_non_parent"``). heads: every head's `HeadRole` (layer 0 then
    layer 1). slots: residual slot name -> first index ("tok", "pos" of width n_ctx, "S{r}",
    "spare", "out", each other slot of width d). mask_dim: the classifier's head dimension that
    masks keys j < max(pa).
    """

    parents: tuple[int, ...]
    vocab_size: int
    compared: tuple[int, ...]
    heads: tuple[HeadRole, ...]
    n_heads: int
    d_head: int
    d_model: int
    slots: dict[str, int]

    @property
    def mask_dim(self) -> int:
        return self.vocab_size * len(self.compared)

    def circuit_edges(self) -> frozenset[tuple[str, str]]:
        """The edges the construction uses, as (sender, receiver) names of
        `interp_icl.circuits.graph` ("embed", "L0H1", "L1H0.k", "logits"): every edge whose
        patching can change the output, and no other. The classifier's query reads the token slot
        (compared offset 1) or S_{p-1}, its key S_p — a block whose other side nothing writes
        (``missing_copier``: S_P stays 0) scores 0 whatever its query, so neither side is an edge —,
        its value the token; a broken classifier reads
        no copier (query 0, or attention by position: positions are not a sender); a copier
        carries the token (its value) when its slot is read; the diffuse head writes to the
        logits; everything else (idle heads, a copier whose slot nothing reads) has no edge."""
        writers: dict[str, list[str]] = {"tok": ["embed"]}
        for h in self.heads:
            if h.role == "copier":
                writers.setdefault(h.slot, []).append(h.name)
        edges: set[tuple[str, str]] = set()
        for h in self.heads:
            if h.role in ("classifier", "broken_classifier"):
                reads = {"v": ["tok"]}
                if h.role == "classifier":  # a compared block counts only when both sides are written
                    live = [p for p in self.compared if writers.get("tok" if p == 1 else f"S{p - 1}") and writers.get(f"S{p}")]
                    reads["q"] = ["tok" if p == 1 else f"S{p - 1}" for p in live]
                    reads["k"] = [f"S{p}" for p in live]
                for part, slots in reads.items():
                    edges |= {(w, f"{h.name}.{part}") for slot in slots for w in writers.get(slot, [])}
                edges.add((h.name, "logits"))
            elif h.role == "diffuse":
                edges |= {("embed", f"{h.name}.v"), (h.name, "logits")}
        used = {sender for sender, _ in edges}
        edges |= {("embed", f"{h.name}.v") for h in self.heads if h.role == "copier" and h.name in used}
        return frozenset(edges)


def _check(
    parents: Sequence[int], vocab_size: int, n_ctx: int, extra: Sequence[str], broken: str | None
) -> tuple[int, ...]:
    pa = tuple(sorted({int(p) for p in parents}))
    require(1 <= len(pa) <= 3, f"parents must be 1 to 3 distinct offsets, got {list(parents)}")
    require(len(pa) == len(tuple(parents)), f"parents must be distinct, got {list(parents)}")
    require(vocab_size >= 2, f"vocab_size must be >= 2, got {vocab_size}")
    require(n_ctx >= 3, f"n_ctx must be >= 3, got {n_ctx}")
    require(
        pa[0] >= 1 and pa[-1] <= n_ctx - 2,
        f"parents must lie in 1..n_ctx-2 = 1..{n_ctx - 2}, got {list(pa)}; raise n_ctx",
    )
    unknown = [e for e in extra if e not in EXTRAS]
    require(not unknown, f"unknown extra {unknown}; choose from {list(EXTRAS)}")
    require(len(set(extra)) == len(tuple(extra)), f"extra lists a knob twice: {list(extra)}")
    require(
        broken is None or broken in BROKEN,
        f"unknown broken variant {broken!r}; choose from {list(BROKEN)}",
    )
    return pa


def _plan(
    pa: tuple[int, ...], vocab_size: int, n_ctx: int, extra: Sequence[str], broken: str | None
) -> StandardGIHLayout:
    d, top = vocab_size, max(pa)
    copy_offsets = sorted({p for p in pa} | {p - 1 for p in pa if p >= 2})
    layer0: list[tuple[str, int | None, str | None, float]] = []  # role, offset, slot, weight
    for r in copy_offsets:
        if r == top and broken == "missing_copier":
            continue
        if r == top and broken == "wrong_offset":
            layer0.append(("copier", top + 1, f"S{r}", 1.0))
        elif r == min(pa) and "redundant" in extra:
            layer0 += [("copier", r, f"S{r}", 0.5), ("copier", r, f"S{r}", 0.5)]
        else:
            layer0.append(("copier", r, f"S{r}", 1.0))
    copy_slots = list(copy_offsets)
    compared = list(pa)
    if broken == "query_non_parent":
        layer0.append(("copier", top + 1, f"S{top + 1}", 1.0))
        copy_slots.append(top + 1)
        compared.append(top + 1)
    if "non_parent_copier" in extra:
        layer0.append(("non_parent_copier", max(copy_offsets) + 1, "spare", 1.0))
    if "diffuse" in extra:
        layer0.append(("diffuse", None, "out", DIFFUSE_WEIGHT))
    layer1_role = {
        "uniform_classifier": "broken_classifier",
        "positional_classifier": "broken_classifier",
    }
    layer1 = [
        (
            layer1_role.get(broken or "", "classifier"),
            1 if broken == "positional_classifier" else None,
            "out",
            1.0,
        )
    ]
    n_heads = max(len(layer0), len(layer1)) + (1 if "idle" in extra else 0)

    heads = []
    for layer, jobs in ((0, layer0), (1, layer1)):
        for h in range(n_heads):
            role, offset, slot, weight = jobs[h] if h < len(jobs) else ("idle", None, None, 0.0)
            heads.append(HeadRole(layer, h, role, offset, slot, weight))

    slots: dict[str, int] = {"tok": 0, "pos": d}
    at = d + n_ctx
    for r in sorted(copy_slots):
        slots[f"S{r}"] = at
        at += d
    if "non_parent_copier" in extra:
        slots["spare"] = at
        at += d
    slots["out"] = at
    d_model = at + d
    d_head = max(n_ctx, len(compared) * d + 1)
    return StandardGIHLayout(pa, d, tuple(compared), tuple(heads), n_heads, d_head, d_model, slots)


def standard_gih_layout(
    parents: Sequence[int],
    vocab_size: int,
    n_ctx: int,
    *,
    extra: Sequence[str] = (),
    broken: str | None = None,
) -> StandardGIHLayout:
    """The layout of ``standard_gih(parents, vocab_size, n_ctx, extra=extra, broken=broken)``:
    its heads' stated jobs and its residual slots (see the module docstring)."""
    pa = _check(parents, vocab_size, n_ctx, extra, broken)
    return _plan(pa, vocab_size, n_ctx, extra, broken)


def _attn(native: nn.Module, layer: int) -> nn.Module:
    return native.layers[layer]._original_component.attn._original_component


def _blank_bridge(
    n_heads: int, d_model: int, d_head: int, vocab_size: int, n_ctx: int, n_layers: int
) -> TransformerBridge:
    """An attention-only, norm-free bridge with every parameter zero."""
    config = StandardConfig(
        family="standard",
        n_layers=n_layers,
        n_heads=n_heads,
        d_model=d_model,
        d_head=d_head,
        d_mlp=4,
        attn_only=True,
        norm="none",
    )
    bridge = build_standard(config, vocab_size, n_ctx, seed=0)
    with torch.no_grad():
        for p in bridge.original_model.parameters():
            p.zero_()
    return bridge


def standard_gih(
    parents: Sequence[int],
    vocab_size: int,
    n_ctx: int,
    *,
    extra: Sequence[str] = (),
    broken: str | None = None,
    sharpness: float = SHARPNESS,
    logit_scale: float = LOGIT_SCALE,
    seed: int = 0,
) -> TransformerBridge:
    """The hand-set two-layer GIH standard model of `parents` (see the module docstring).

    tokens ``[B, T]`` (T <= n_ctx) -> logits ``[B, T, vocab_size]``, row i predicts token i + 1.
    sharpness: the classifier's score per matching parent (after TransformerLens's 1/sqrt(d_head));
    copier heads always use COPY_SHARPNESS. logit_scale: unembedding gain on the out slot.
    seed: only passed to the (fully overwritten) initialisation; the weights do not depend on it.
    """
    pa = _check(parents, vocab_size, n_ctx, extra, broken)
    plan = _plan(pa, vocab_size, n_ctx, extra, broken)
    d, dh, s = vocab_size, plan.d_head, plan.slots
    bridge = _blank_bridge(plan.n_heads, plan.d_model, dh, d, n_ctx, n_layers=2)
    del seed  # every weight is set by hand
    native = bridge.original_model
    eye = torch.eye(d)
    copy_gain = COPY_SHARPNESS * math.sqrt(dh)
    gain = sharpness * math.sqrt(dh)

    with torch.no_grad():
        native.tok_embed._original_component.weight[:, s["tok"] : s["tok"] + d] = eye
        native.pos._original_component.weight[:, s["pos"] : s["pos"] + n_ctx] = torch.eye(n_ctx)
        native.head._original_component.weight[:, s["out"] : s["out"] + d] = logit_scale * eye
        for job in plan.heads:
            a = _attn(native, job.layer)
            rows = slice(job.head * dh, job.head * dh + dh)
            q, k, v, o = (a.q.weight[rows], a.k.weight[rows], a.v.weight[rows], a.o.weight[:, rows])
            if job.role == "idle":
                continue
            if job.role in ("copier", "non_parent_copier") or (
                job.role == "broken_classifier" and job.offset
            ):
                for i in range(n_ctx):  # query at i -> position max(i - offset, 0); key at j -> j
                    q[max(i - job.offset, 0), s["pos"] + i] = copy_gain
                    k[i, s["pos"] + i] = 1.0
            if job.role == "classifier":
                for b, p in enumerate(plan.compared):
                    source = s["tok"] if p == 1 else s[f"S{p - 1}"]
                    q[b * d : b * d + d, source : source + d] = gain * eye
                    k[b * d : b * d + d, s[f"S{p}"] : s[f"S{p}"] + d] = eye
                mask = plan.mask_dim
                q[mask, s["pos"] : s["pos"] + n_ctx] = math.sqrt(dh)  # 1 at every query row
                k[mask, s["pos"] : s["pos"] + max(pa)] = -(
                    MASK_SCORE + sharpness * len(plan.compared)
                )
            # value: the token one-hot; output: weight x value into the head's slot
            v[:d, s["tok"] : s["tok"] + d] = eye
            o[s[job.slot] : s[job.slot] + d, :d] = job.weight * eye
    bridge.eval()
    return bridge


def one_layer(vocab_size: int, n_ctx: int, logit_scale: float = LOGIT_SCALE) -> TransformerBridge:
    """A one-layer standard model: one head with uniform causal attention whose value is the
    token one-hot, read by the unembedding with `logit_scale` (softmax(scale x in-context unigram
    frequencies)). Residual layout ``[token d | position n_ctx | out d]``; d_head = d."""
    require(vocab_size >= 2, f"vocab_size must be >= 2, got {vocab_size}")
    require(n_ctx >= 2, f"n_ctx must be >= 2, got {n_ctx}")
    d = vocab_size
    bridge = _blank_bridge(1, 2 * d + n_ctx, d, d, n_ctx, n_layers=1)
    native = bridge.original_model
    out = d + n_ctx
    with torch.no_grad():
        native.tok_embed._original_component.weight[:, :d] = torch.eye(d)
        native.pos._original_component.weight[:, d : d + n_ctx] = torch.eye(n_ctx)
        a = _attn(native, 0)
        a.v.weight[:d, :d] = torch.eye(d)
        a.o.weight[out : out + d, :d] = torch.eye(d)
        native.head._original_component.weight[:, out : out + d] = logit_scale * torch.eye(d)
    bridge.eval()
    return bridge


# ----- gih-family members -------------------------------------------------------------------------
# classifier scale of the zoo's gih models (a = 200 gives unseen tokens probability ~0)
GIH_A = 5.0


def _gih(
    parents: tuple[int, ...],
    vocab_size: int,
    n_ctx: int,
    broken: str | None = None,
    distractor: bool = False,
) -> GIHModel:
    """gih_for_parents(parents, window=3, a=GIH_A), edited for the broken variants:
    "selects_distractor" (FFN weight on {head of min(pa), distractor head}), "wrong_offset" (the
    head of the largest parent copies max(pa) + 1), "uniform_classifier" (a = 0)."""
    model = gih_for_parents(parents, vocab_size, n_ctx, window=3, distractor=distractor, a=GIH_A)
    with torch.no_grad():
        if broken == "selects_distractor":
            model.c.zero_()
            model.c[model.subsets.index((0, len(parents)))] = 1.0
        elif broken == "wrong_offset":
            h = len(parents) - 1
            model.w_rpe[h].fill_(-30.0)
            model.w_rpe[h, max(parents)] = 30.0  # w_rpe[h, r - 1] scores offset r = max(pa) + 1
        elif broken == "uniform_classifier":
            model.a.zero_()
    return model


def _gih_circuit(parents: tuple[int, ...], broken: str | None) -> frozenset[tuple[str, str]]:
    """The edges a `_gih` model's construction uses (names of `interp_icl.circuits.gih`): the
    classifier's values and output, and — unless a = 0 makes its attention uniform — the copiers
    of the one subset the FFN weights (heads of the parents, or {min(pa), distractor}), that
    subset's feature and the classifier's query and key reading it. Every other subset's weight is
    0, so its feature is 0 on every input and no edge through it changes anything."""
    edges = {("embed", "L1H0.v"), ("L1H0", "logits")}
    if broken != "uniform_classifier":
        used = (0, len(parents)) if broken == "selects_distractor" else tuple(range(len(parents)))
        unit = feature_unit(used)
        edges |= {("embed", f"L0H{h}.v") for h in used} | {(f"L0H{h}", f"{unit}.in") for h in used}
        edges |= {(unit, "L1H0.q"), (unit, "L1H0.k")}
    return frozenset(edges)


def _gih_heads(
    offsets: Sequence[int], n_parents: int, broken_classifier: bool = False
) -> tuple[HeadRole, ...]:
    """Heads of a gih zoo model: head h copies offsets[h] (a non-parent copier from n_parents
    on), then the layer-1 classifier."""
    layer0 = tuple(
        HeadRole(0, h, "copier" if h < n_parents else "non_parent_copier", r)
        for h, r in enumerate(offsets)
    )
    return layer0 + (HeadRole(1, 0, "broken_classifier" if broken_classifier else "classifier"),)


GIH_BROKEN_ROLE = {
    "selects_distractor": "selector",
    "wrong_offset": "copier",
    "uniform_classifier": "classifier",
}


# ----- the registry -------------------------------------------------------------------------------
ALL_HOLD = {role: True for role in ROLES}
NO_STATEMENT = {role: None for role in ROLES}


def _breaks(role: str) -> dict[str, bool | None]:
    return {r: (False if r == role else None) for r in ROLES}


def _std(
    name: str,
    parents: tuple[int, ...],
    d: int,
    n_ctx: int,
    description: str,
    *,
    extra: tuple[str, ...] = (),
    broken: str | None = None,
    logit_scale: float = LOGIT_SCALE,
) -> ZooModel:
    role = BROKEN_ROLE[broken] if broken else None
    layout = standard_gih_layout(parents, d, n_ctx, extra=extra, broken=broken)
    return ZooModel(
        name=name,
        build=partial(
            standard_gih, parents, d, n_ctx, extra=extra, broken=broken, logit_scale=logit_scale
        ),
        parents=parents,
        vocab_size=d,
        n_ctx=n_ctx,
        family="standard",
        expected=_breaks(role) if role else dict(ALL_HOLD),
        breaks=role,
        description=description,
        heads=layout.heads,
        circuit=layout.circuit_edges(),
    )


def zoo(n_ctx: int = 64) -> list[ZooModel]:
    """The known-answer models (see the module docstring), each with its sequence length n_ctx
    (the {1, 2, 3} model gets 2 n_ctx: 27 contexts need more tokens to be estimated).

    Positive controls (every role holds): standard GIHs for parents {1,2} (plain, each extra, all
    extras), {2,3}, {1}, {1,2,3}, {1,3} with d = 5, and gih_for_parents((1,2)) with and without a
    distractor head. Negative controls (only the broken role is stated, False): every `BROKEN`
    variant for {1,2}; wrong_offset and query_non_parent for {2,3}; three edited gih models.
    "std-one-layer": a one-layer model, no circuit at all (breaks "circuit", every role None).
    """
    require(n_ctx >= 8, f"zoo needs n_ctx >= 8, got {n_ctx}")
    pa = (1, 2)
    # name, parents, d, n_ctx, extra, broken, logit_scale, description. The {1,2,3} and d = 5
    # models have 27 and 25 contexts, fewer counts each: a less confident logit_scale fits better.
    standard = [
        ("std-12", pa, 3, n_ctx, (), None, LOGIT_SCALE,
         "GIH for parents {1,2}: copiers of offsets 1, 2; classifier compares both"),
        ("std-12-idle", pa, 3, n_ctx, ("idle",), None, LOGIT_SCALE,
         "std-12 plus one all-zero head per layer"),
        ("std-12-non-parent-copier", pa, 3, n_ctx, ("non_parent_copier",), None, LOGIT_SCALE,
         "std-12 plus a layer-0 head copying offset 3 into a slot nothing reads"),
        ("std-12-redundant", pa, 3, n_ctx, ("redundant",), None, LOGIT_SCALE,
         "std-12 with the offset-1 copy split over two heads writing 0.5 each"),
        ("std-12-diffuse", pa, 3, n_ctx, ("diffuse",), None, LOGIT_SCALE,
         "std-12 plus a uniform-attention head writing unigram frequencies to the logits"),
        ("std-12-all-extras", pa, 3, n_ctx, EXTRAS, None, LOGIT_SCALE,
         "std-12 with every extra knob at once"),
        ("std-23", (2, 3), 3, n_ctx, (), None, LOGIT_SCALE,
         "GIH for parents {2,3} (no offset-1 parent): copiers of 1, 2, 3"),
        ("std-1", (1,), 3, n_ctx, (), None, LOGIT_SCALE,
         "GIH for parents {1}: a previous-token head + an induction head"),
        ("std-123", (1, 2, 3), 3, 2 * n_ctx, (), None, 3.0,
         "GIH for parents {1,2,3} on 2 n_ctx tokens, logit_scale 3"),
        ("std-13-d5", (1, 3), 5, n_ctx, (), None, 3.0,
         "GIH for parents {1,3}, vocabulary 5 (copiers of 1, 2, 3), logit_scale 3"),
        ("std-12-missing-copier", pa, 3, n_ctx, (), "missing_copier", LOGIT_SCALE,
         "std-12 without the offset-2 copier (its slot stays 0)"),
        ("std-12-wrong-offset", pa, 3, n_ctx, (), "wrong_offset", LOGIT_SCALE,
         "std-12 whose offset-2 copier copies offset 3 instead"),
        ("std-12-query-non-parent", pa, 3, n_ctx, (), "query_non_parent", LOGIT_SCALE,
         "std-12 whose classifier also compares the non-parent offset 3"),
        ("std-12-uniform-classifier", pa, 3, n_ctx, (), "uniform_classifier", LOGIT_SCALE,
         "std-12 whose classifier query is 0 (uniform attention)"),
        ("std-12-positional-classifier", pa, 3, n_ctx, (), "positional_classifier", LOGIT_SCALE,
         "std-12 whose classifier attends the previous position, by position only"),
        ("std-23-wrong-offset", (2, 3), 3, n_ctx, (), "wrong_offset", LOGIT_SCALE,
         "std-23 whose offset-3 copier copies offset 4 instead"),
        ("std-23-query-non-parent", (2, 3), 3, n_ctx, (), "query_non_parent", LOGIT_SCALE,
         "std-23 whose classifier also compares the non-parent offset 4"),
    ]  # fmt: skip
    models = [
        _std(name, parents, d, ctx, description, extra=extra, broken=broken, logit_scale=scale)
        for name, parents, d, ctx, extra, broken, scale, description in standard
    ]

    # name, broken, distractor, offsets the layer-0 heads copy, description
    gih = [
        ("gih-12", None, False, (1, 2), f"gih_for_parents((1,2), window=3, a={GIH_A})"),
        ("gih-12-distractor", None, True, (1, 2, 3),
         "gih-12 plus a head copying offset 3 that no FFN weight uses"),
        ("gih-12-selects-distractor", "selects_distractor", True, (1, 2, 3),
         "gih-12-distractor with the FFN weight on {offset 1, offset 3}"),
        ("gih-12-wrong-offset", "wrong_offset", False, (1, 3),
         "gih-12 whose parent-2 head copies offset 3"),
        ("gih-12-uniform-classifier", "uniform_classifier", False, (1, 2),
         "gih-12 with classifier scale a = 0 (uniform attention)"),
    ]  # fmt: skip
    for name, broken, distractor, offsets, description in gih:
        role = GIH_BROKEN_ROLE[broken] if broken else None
        models.append(
            ZooModel(
                name=name,
                build=partial(_gih, pa, 3, n_ctx, broken=broken, distractor=distractor),
                parents=pa,
                vocab_size=3,
                n_ctx=n_ctx,
                family="gih",
                expected=_breaks(role) if role else dict(ALL_HOLD),
                breaks=role,
                description=description,
                heads=_gih_heads(offsets, len(pa), broken_classifier=role == "classifier"),
                circuit=_gih_circuit(pa, broken),
            )
        )
    models.append(
        ZooModel(
            name="std-one-layer",
            build=partial(one_layer, 3, n_ctx),
            parents=pa,
            vocab_size=3,
            n_ctx=n_ctx,
            family="standard",
            expected=dict(NO_STATEMENT),
            breaks="circuit",
            description="one layer, one uniform-attention head (in-context unigram): no circuit",
            heads=(HeadRole(0, 0, "diffuse", slot="out"),),
            circuit=frozenset({("embed", "L0H0.v"), ("L0H0", "logits")}),
        )
    )
    return models


def zoo_model(name: str, n_ctx: int = 64) -> ZooModel:
    """The zoo model called `name` (see `zoo`)."""
    models = {m.name: m for m in zoo(n_ctx)}
    require(name in models, f"unknown zoo model {name!r}; choose from {sorted(models)}")
    return models[name]
