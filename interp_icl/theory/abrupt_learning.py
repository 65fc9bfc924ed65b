"""The three-parameter phenomenological loss of abrupt in-context learning (REFERENCE §3).

Reddy (ICLR 2024) explains the abrupt emergence of an induction head in an in-context
classification task by a phenomenological model of "three nested logits" learned one after
another. The default model here (``variant="source"``) is written from the definitions in the
source text (Reddy's essay on the paper, REFERENCE §3). Each statement is marked: [source] stated
there, [derived] worked out here from [source] statements, [reconstruction] filled in by this
project where the source's formula could not be read.

A sequence holds N item–label pairs (``n_items``, 2N context tokens) and a target; the network
outputs one of L labels (``n_labels``, L ≥ N ≥ 2). The N context labels are distinct; one is the
target's (correct) label t and L − N labels are absent from the context. Three scalar parameters:

* β (``beta``) — layer-1 attention strength [source]; it sets y, the attention of each label
  token to its item [source], as y = sigmoid(β) [reconstruction: the source's formula for y is
  an image that was not read];
* α (``alpha``) — layer-2 strength [source]: the target attends to its copy (the label token
  that holds, through layer 1, a copy of the matching item) with weight
  z = e^{αy}/(e^{αy} + 2N), and to every other token with z′ = 1/(2N + e^{αy}) [source];
* ξ (``xi``) — the classifier's overlap ζ_ij = ξ with the labels [source].

With the source's u = ξ(e^{αy} − 1)/(e^{αy} + 2N) = ξ(z − z′) and u′ = ξe^{αy}/(e^{αy} + 2N) = ξz
[source], the cross-entropy over the L labels of the buffer z ℓ_t + z′ Σ_{i≠t} ℓ_i (output logit
ξz for the correct label, ξz′ for each of the N − 1 other context labels, 0 for an absent label)
is [derived from those definitions]

    ℒ(β, α, ξ) = log[1 + (N − 1) e^{−u} + (L − N) e^{−u′}].

Write q_w = e^{−u}/S and q_0 = e^{−u′}/S (S the bracket) for the softmax probabilities of each
other context label and of each absent label, a = α y, w = e^a, D = w + 2N (so z z′ = w/D²).
The gradient, derived by hand (``gradient``; checked against autograd in the tests) [derived]:

    ∂ℒ/∂ξ = −(N − 1) q_w (w − 1)/D − (L − N) q_0 z
    ∂ℒ/∂a = −ξ z z′ [(2N + 1)(N − 1) q_w + 2N (L − N) q_0]
    ∂ℒ/∂α = ∂ℒ/∂a · y,   ∂ℒ/∂β = ∂ℒ/∂a · α y (1 − y)

At the origin z = z′ = 1/(2N + 1), u = u′ = 0 and every label has probability 1/L, so
ℒ(0, 0, 0) = log L, ∂ℒ/∂α = ∂ℒ/∂β = 0 and ∂ℒ/∂ξ = −(L − N)/((2N + 1)L), zero iff L = N
[source, derived]. ∂ℒ/∂α carries a factor ξ and ∂ℒ/∂β a factor α ξ, so from near the origin ξ
grows first, then α, then β (``growth_order``) [source]. With α = 0, u = 0 and
ℒ = log[N + (L − N) e^{−ξ/(2N+1)}], which falls from log L to log N as ξ → ∞: picking *some*
context label (accuracy 1/L → 1/N) [derived]. With L = N that plane is flat at log N and every
point with α = ξ = 0 is stationary; near β = 0 the origin is a saddle with ℒ ≈ log N − c αξ,
unstable rate c = (N − 1)/(2N(2N + 1)) in continuous time [derived, linearisation].

**The named variant** ``variant="n_minus_1_reconstruction"`` is this project's earlier
reconstruction, written before the source's definitions were read: layer-2 attention over the N
context labels only, p = e^{ασ}/(e^{ασ} + N − 1) (σ = sigmoid(β)), and readout logits ξp for the
correct label and ξ(1 − p)/(N − 1) for each other context label, i.e. u = ξ(p − (1 − p)/(N − 1)),
u′ = ξp. It keeps the same qualitative claims — ℒ(0) = log L, ∇ℒ(0) = (0, 0, 1/L − 1/N), ξ → α → β
— with a saddle rate (N − 1)/(2N²) at L = N. Its gradient (q_w, q_0 as above, s = sigmoid(β),
a = α s):

    ∂ℒ/∂p = −ξ (N q_w + (L − N) q_0)
    ∂ℒ/∂α = ∂ℒ/∂p · p (1 − p) · s,   ∂ℒ/∂β = ∂ℒ/∂p · p (1 − p) · α s (1 − s)
    ∂ℒ/∂ξ = −q_w (1 − p) expm1(a) − (L − N) q_0 p

Conventions: every function works in float64; parameters may be Python floats or tensors of any
broadcastable shapes, and results have the broadcast shape. ``variant`` is one of `VARIANTS`
(default `SOURCE`). Gradient descent here is the explicit Euler integrator of the gradient flow
dθ/dt = −∇ℒ(θ): θ_{k+1} = θ_k − lr ∇ℒ(θ_k), step k ↔ time t = k·lr.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd
import torch
from torch import Tensor

from interp_icl.curves import half_rise_step
from interp_icl.errors import require

if TYPE_CHECKING:  # plotly is imported by the figure builders only
    import plotly.graph_objects as go

PARAMETERS = ("beta", "alpha", "xi")  # the argument order of `loss` and `gradient`
SEQUENTIAL_ORDER = ("xi", "alpha", "beta")  # the order of growth from near the origin, L > N
SYMBOLS = {"beta": "β", "alpha": "α", "xi": "ξ"}
SOURCE = "source"  # the source text's definitions (the default)
N_MINUS_1_RECONSTRUCTION = "n_minus_1_reconstruction"  # the project's earlier reconstruction
VARIANTS = (SOURCE, N_MINUS_1_RECONSTRUCTION)
DTYPE = torch.float64

Scalar = float | Tensor


class Gradient(NamedTuple):
    """∇ℒ: ∂ℒ/∂β, ∂ℒ/∂α, ∂ℒ/∂ξ (nats per unit parameter), each of the broadcast shape."""

    beta: Tensor
    alpha: Tensor
    xi: Tensor


def _check_sizes(n_items: int, n_labels: int) -> None:
    require(
        int(n_items) == n_items and n_items >= 2,
        f"n_items must be an integer >= 2 (got {n_items}): the model needs a wrong context label",
    )
    require(
        int(n_labels) == n_labels and n_labels >= n_items,
        f"n_labels must be an integer >= n_items = {n_items} (got {n_labels}): the N context "
        "labels are distinct labels",
    )


def _check_variant(variant: str) -> None:
    require(variant in VARIANTS, f"variant must be one of {VARIANTS} (got {variant!r})")


def _as_tensors(*values: Scalar) -> list[Tensor]:
    tensors = [torch.as_tensor(v, dtype=DTYPE) for v in values]
    return list(torch.broadcast_tensors(*tensors))


# ----- the source's model -----------------------------------------------------------------------
class _SourceParts(NamedTuple):
    """Intermediate quantities of the source's model, each of the broadcast shape."""

    y: Tensor  # layer-1 label→item attention, sigmoid(β)
    a: Tensor  # α y
    z: Tensor  # target → its copy, e^a/(e^a + 2N)
    z_other: Tensor  # target → each other token, 1/(e^a + 2N)
    gap: Tensor  # z − z′ = (e^a − 1)/(e^a + 2N), exactly 0 at a = 0


def _source_parts(beta: Tensor, alpha: Tensor, n_items: int) -> _SourceParts:
    """z, z′ and z − z′ without overflow or cancellation: z = sigmoid(a − log 2N),
    z′ = (1 − z)/(2N), and (e^a − 1)/(e^a + 2N) written with e^{−a} for a ≥ 0 and with e^a for
    a < 0 (both branches on clamped inputs, so neither overflows)."""
    y = torch.sigmoid(beta)
    a = alpha * y
    shift = a - math.log(2 * n_items)
    z = torch.sigmoid(shift)
    z_other = torch.sigmoid(-shift) / (2 * n_items)
    a_pos, a_neg = a.clamp(min=0.0), a.clamp(max=0.0)
    gap_pos = -torch.expm1(-a_pos) / (1.0 + 2 * n_items * torch.exp(-a_pos))
    gap_neg = torch.expm1(a_neg) / (torch.exp(a_neg) + 2 * n_items)
    return _SourceParts(y, a, z, z_other, torch.where(a >= 0, gap_pos, gap_neg))


# ----- the named variant: the earlier N − 1 reconstruction --------------------------------------
def _n_minus_1_parts(alpha: Tensor, sigma: Tensor, n_items: int) -> tuple[Tensor, ...]:
    """(a, p, 1 − p) with a = α σ, p = e^a / (e^a + N − 1), both sides computed without
    cancellation (p = sigmoid(a − log(N − 1)))."""
    a = alpha * sigma
    shift = a - math.log(n_items - 1)
    return a, torch.sigmoid(shift), torch.sigmoid(-shift)


# ----- shared -----------------------------------------------------------------------------------
def _margins(
    beta: Tensor, alpha: Tensor, xi: Tensor, n_items: int, variant: str
) -> tuple[Tensor, Tensor]:
    """(u, u′): the correct label's logit minus that of each other context label, and minus
    that of each absent label (0)."""
    if variant == SOURCE:
        parts = _source_parts(beta, alpha, n_items)
        return xi * parts.gap, xi * parts.z
    _, p, p_other = _n_minus_1_parts(alpha, torch.sigmoid(beta), n_items)
    correct = xi * p
    return correct - xi * p_other / (n_items - 1), correct


def _log_sum(u: Tensor, u_prime: Tensor, n_items: int, n_labels: int) -> tuple[Tensor, ...]:
    """(ℒ, log q_w, log q_0) with ℒ = log[1 + (N − 1) e^{−u} + (L − N) e^{−u′}], computed as
    max + log1p(rest) (ℒ keeps its relative precision down to ~1e-300, not only to 1e-16)."""
    zero = torch.zeros_like(u)
    absent = zero - math.inf if n_labels == n_items else zero + math.log(n_labels - n_items)
    groups = torch.stack([zero, math.log(n_items - 1) - u, absent - u_prime], -1)
    top = groups.argmax(-1, keepdim=True)
    peak = groups.gather(-1, top)
    rest = groups.scatter(-1, top, -math.inf)
    nll = (peak + torch.log1p(torch.exp(rest - peak).sum(-1, keepdim=True))).squeeze(-1)
    return nll, -u - nll, -u_prime - nll


def label_attention(beta: Scalar, alpha: Scalar, n_items: int, *, variant: str = SOURCE) -> Tensor:
    """Layer-2 attention of the target on its correct context label, in (0, 1), float64.

    Source: z = e^{αy}/(e^{αy} + 2N), y = sigmoid(β); 1/(2N + 1) at α = 0. Variant
    ``n_minus_1_reconstruction``: p = e^{ασ}/(e^{ασ} + N − 1), σ = sigmoid(β); 1/N at α = 0.
    Shapes: β, α broadcast together; the result has the broadcast shape."""
    _check_sizes(n_items, n_items)
    _check_variant(variant)
    beta, alpha = _as_tensors(beta, alpha)
    if variant == SOURCE:
        return _source_parts(beta, alpha, n_items).z
    return _n_minus_1_parts(alpha, torch.sigmoid(beta), n_items)[1]


def loss(
    beta: Scalar, alpha: Scalar, xi: Scalar, n_items: int, n_labels: int, *, variant: str = SOURCE
) -> Tensor:
    """ℒ(β, α, ξ): cross-entropy of the correct label, nats per target, float64.

    Shapes: β, α, ξ broadcast together; the result has the broadcast shape. Range (0, ∞):
    log L at the origin (chance over L labels), log N on the plateau α = 0, ξ → ∞ (a uniform
    guess among the N context labels), → 0 as ξ → ∞ with α > 0 (the in-context solution).
    Differentiable by autograd."""
    _check_sizes(n_items, n_labels)
    _check_variant(variant)
    beta, alpha, xi = _as_tensors(beta, alpha, xi)
    u, u_prime = _margins(beta, alpha, xi, n_items, variant)
    return _log_sum(u, u_prime, n_items, n_labels)[0]


def gradient(
    beta: Scalar, alpha: Scalar, xi: Scalar, n_items: int, n_labels: int, *, variant: str = SOURCE
) -> Gradient:
    """∇ℒ(β, α, ξ) in closed form (the formulas in the module docstring), float64.

    Shapes as in `loss`. At the origin it is (0, 0, −(L − N)/((2N + 1)L)) for the source's
    model and (0, 0, 1/L − 1/N) for the variant, up to rounding of the last component (exactly
    0 when L = N)."""
    _check_sizes(n_items, n_labels)
    _check_variant(variant)
    beta, alpha, xi = _as_tensors(beta, alpha, xi)
    u, u_prime = _margins(beta, alpha, xi, n_items, variant)
    _, log_q_wrong, log_q_absent = _log_sum(u, u_prime, n_items, n_labels)
    q_wrong, q_absent = torch.exp(log_q_wrong), torch.exp(log_q_absent)
    n_absent = n_labels - n_items
    if variant == SOURCE:
        y, _, z, z_other, gap = _source_parts(beta, alpha, n_items)
        d_xi = -(n_items - 1) * q_wrong * gap - n_absent * q_absent * z
        weights = (2 * n_items + 1) * (n_items - 1) * q_wrong + 2 * n_items * n_absent * q_absent
        d_a = -xi * z * z_other * weights  # ∂ℒ/∂(αy)
        d_beta = d_a * alpha * y * torch.sigmoid(-beta)  # y(1 − y) without cancellation
        return Gradient(beta=d_beta, alpha=d_a * y, xi=d_xi)
    sigma = torch.sigmoid(beta)
    a, p, p_other = _n_minus_1_parts(alpha, sigma, n_items)
    d_p = -xi * (n_items * q_wrong + n_absent * q_absent)
    d_a = d_p * p * p_other  # ∂ℒ/∂(ασ)
    d_xi = -q_wrong * p_other * torch.expm1(a) - n_absent * q_absent * p
    d_beta = d_a * alpha * sigma * torch.sigmoid(-beta)  # σ(1 − σ) without cancellation
    return Gradient(beta=d_beta, alpha=d_a * sigma, xi=d_xi)


def gradient_flow(
    init: tuple[float, float, float] = (0.0, 0.0, 0.0),
    n_items: int = 8,
    n_labels: int = 32,
    lr: float = 0.1,
    steps: int = 3000,
    record_every: int = 10,
    *,
    variant: str = SOURCE,
) -> pd.DataFrame:
    """Plain gradient descent on ℒ (of ``variant``) from ``init`` = (β, α, ξ):
    θ_{k+1} = θ_k − lr ∇ℒ(θ_k).

    This is the explicit Euler integrator of the gradient flow dθ/dt = −∇ℒ with time step lr
    (time t = step · lr); lr ≤ 0.1 tracks the flow to a few per cent in the rise steps (halving
    lr doubles them). Returns one row per recorded step (0, every ``record_every`` steps, and the
    last step) with columns ``step, time, beta, alpha, xi, loss`` (loss in nats per target,
    evaluated at the recorded parameters)."""
    _check_sizes(n_items, n_labels)
    _check_variant(variant)
    require(len(init) == 3, f"init must be (beta, alpha, xi), got {init!r}")
    require(lr > 0, f"lr must be > 0 (got {lr})")
    require(steps >= 0 and record_every >= 1, "steps must be >= 0 and record_every >= 1")
    theta = torch.tensor([float(v) for v in init], dtype=DTYPE)
    rows = []
    for step in range(steps + 1):
        beta, alpha, xi = theta
        if step % record_every == 0 or step == steps:
            value = float(loss(beta, alpha, xi, n_items, n_labels, variant=variant))
            rows.append((step, step * lr, *theta.tolist(), value))
        if step < steps:
            step_grad = gradient(beta, alpha, xi, n_items, n_labels, variant=variant)
            theta = theta - lr * torch.stack(step_grad)
    return pd.DataFrame(rows, columns=["step", "time", *PARAMETERS, "loss"])


def rise_step(curve: pd.Series, threshold: float) -> int | None:
    """First step (index of ``curve``) where |value − first value| ≥ threshold; None if never."""
    curve = curve.dropna()
    if len(curve) == 0:
        return None
    reached = curve[(curve - float(curve.iloc[0])).abs() >= threshold]
    return int(reached.index[0]) if len(reached) else None


def growth_order(trajectory: pd.DataFrame, threshold: float | None = 0.1) -> dict[str, Any]:
    """The order in which β, α, ξ grow along a `gradient_flow` trajectory.

    With a ``threshold`` (default 0.1, parameter units): each parameter's *rise step*, the first
    recorded step at which it has moved by at least ``threshold`` from its initial value — the
    onset of growth, which is what the sequential-learning claim is about. With
    ``threshold=None``: the half-rise step of `half_rise_step` (as the dynamics pass uses for
    roles). Half-rise measures where each curve makes most of its change within the recorded
    window — for this model the cliff, which all three cross together — and ξ, which keeps
    growing as the loss → 0, is placed late by it; it depends on the trajectory's length.

    Returns a JSON-serialisable dict: ``rise_step`` {parameter: step or None}, ``order``
    (parameters with a step, ascending; ties broken in `SEQUENTIAL_ORDER`), ``expected_order``
    (`SEQUENTIAL_ORDER`), ``matches_expected_order`` (None when a parameter never rose or two
    share a step, i.e. the order is below the recording resolution), ``ties`` and
    ``criterion``."""
    require(
        {"step", *PARAMETERS} <= set(trajectory.columns),
        "growth_order needs a gradient_flow trajectory (columns step, beta, alpha, xi)",
    )
    require(threshold is None or threshold > 0, f"threshold must be > 0 or None ({threshold})")
    indexed = trajectory.set_index("step").sort_index()
    if threshold is None:
        steps = {name: half_rise_step(indexed[name]) for name in SEQUENTIAL_ORDER}
        criterion = "half-rise step"
    else:
        steps = {name: rise_step(indexed[name], threshold) for name in SEQUENTIAL_ORDER}
        criterion = f"first step with |change| >= {threshold:g}"
    known = {name: s for name, s in steps.items() if s is not None}
    order = sorted(known, key=lambda name: (known[name], SEQUENTIAL_ORDER.index(name)))
    values = list(known.values())
    ties = sorted({s for s in values if values.count(s) > 1})
    decidable = len(known) == len(SEQUENTIAL_ORDER) and not ties
    return {
        "rise_step": steps,
        "order": order,
        "expected_order": list(SEQUENTIAL_ORDER),
        "matches_expected_order": (tuple(order) == SEQUENTIAL_ORDER) if decidable else None,
        "ties": ties,
        "criterion": criterion,
    }


def landscape(
    n_items: int = 8,
    n_labels: int = 32,
    x: str = "alpha",
    y: str = "xi",
    x_range: tuple[float, float] = (-2.0, 8.0),
    y_range: tuple[float, float] = (-2.0, 12.0),
    fixed_value: float = 0.0,
    resolution: int = 81,
    *,
    variant: str = SOURCE,
) -> pd.DataFrame:
    """ℒ on a ``resolution`` × ``resolution`` grid over two parameters, the third held at
    ``fixed_value`` (ℒ of ``variant``). Long format, one row per grid point (y outer, x inner), columns
    ``beta, alpha, xi, loss`` (loss in nats per target)."""
    require(x in PARAMETERS and y in PARAMETERS and x != y, f"x, y: two of {PARAMETERS}")
    require(resolution >= 2, f"resolution must be >= 2 (got {resolution})")
    (fixed,) = [name for name in PARAMETERS if name not in (x, y)]
    xs = torch.linspace(*x_range, resolution, dtype=DTYPE)
    ys = torch.linspace(*y_range, resolution, dtype=DTYPE)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    values = {x: grid_x, y: grid_y, fixed: torch.full_like(grid_x, float(fixed_value))}
    losses = loss(values["beta"], values["alpha"], values["xi"], n_items, n_labels, variant=variant)
    columns = {name: values[name].flatten().numpy() for name in PARAMETERS}
    return pd.DataFrame({**columns, "loss": losses.flatten().numpy()})


def landscape_figure(
    grid: pd.DataFrame, trajectory: pd.DataFrame | None = None
) -> tuple[go.Figure, pd.DataFrame]:
    """Heatmap of ℒ (nats per target) over the two parameters that vary in a `landscape` grid,
    and, if given, a `gradient_flow` trajectory projected onto that plane (its third parameter
    is not held fixed). Returns ``(figure, data)``: data is the grid (``kind="landscape"``) and the
    trajectory rows (``kind="trajectory"``)."""
    import plotly.graph_objects as go

    varying = [name for name in PARAMETERS if grid[name].nunique() > 1]
    require(len(varying) == 2, "landscape_figure needs a landscape grid over two parameters")
    # `landscape` rows run x inner, y outer: x is the one that changes between the first rows
    x = next(name for name in varying if grid[name].iloc[1] != grid[name].iloc[0])
    (y,) = [name for name in varying if name != x]
    (fixed,) = [name for name in PARAMETERS if name not in varying]
    table = grid.pivot(index=y, columns=x, values="loss")
    fig = go.Figure(
        go.Heatmap(
            z=table.values,
            x=table.columns.values,
            y=table.index.values,
            colorscale="Viridis",
            colorbar={"title": "ℒ (nats)"},
            hovertemplate=f"{SYMBOLS[x]} %{{x:.2f}}, {SYMBOLS[y]} %{{y:.2f}}: ℒ %{{z:.3f}}"
            "<extra></extra>",
        )
    )
    data = grid.assign(kind="landscape")
    if trajectory is not None:
        fig.add_trace(
            go.Scatter(
                x=trajectory[x],
                y=trajectory[y],
                mode="lines+markers",
                marker={"size": 3, "color": "white"},
                line={"color": "white"},
                name="gradient flow",
            )
        )
        data = pd.concat([data, trajectory.assign(kind="trajectory")], ignore_index=True)
    fig.update_layout(
        title=f"phenomenological loss over ({SYMBOLS[x]}, {SYMBOLS[y]}) at "
        f"{SYMBOLS[fixed]} = {float(grid[fixed].iloc[0]):g}",
        height=480,
    )
    fig.update_xaxes(title_text=SYMBOLS[x])
    fig.update_yaxes(title_text=SYMBOLS[y])
    return fig, data


def trajectory_figure(
    trajectory: pd.DataFrame, growth: dict[str, Any] | None = None
) -> tuple[go.Figure, pd.DataFrame]:
    """Two panels over gradient-descent steps: β, α, ξ (parameter units) and ℒ (nats per
    target), with a dashed line at each parameter's rise step from `growth_order` if given.
    Returns ``(figure, data)``: data is long format ``step, quantity, value``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=["parameters (ξ: readout, α: layer 2, β: layer 1)", "loss (nats)"],
    )
    for name in SEQUENTIAL_ORDER:
        fig.add_trace(
            go.Scatter(x=trajectory["step"], y=trajectory[name], mode="lines", name=SYMBOLS[name]),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(x=trajectory["step"], y=trajectory["loss"], mode="lines", name="ℒ"),
        row=2,
        col=1,
    )
    for name, step in ((growth or {}).get("rise_step") or {}).items():
        if step is not None:
            fig.add_vline(x=step, line_dash="dash", annotation_text=SYMBOLS[name], row=1, col=1)
    criterion = f" (dashed: {growth['criterion']})" if growth else ""
    fig.update_layout(title=f"gradient descent on the phenomenological loss{criterion}", height=560)
    fig.update_xaxes(title_text="step", row=2, col=1)
    data = trajectory.melt(
        id_vars="step", value_vars=[*SEQUENTIAL_ORDER, "loss"], var_name="quantity"
    )
    return fig, data
