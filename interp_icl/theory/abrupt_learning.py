"""The three-parameter phenomenological loss of abrupt in-context learning (REFERENCE §3).

**A reconstruction.** Reddy (ICLR 2024) explains the abrupt emergence of an induction head in an
in-context classification task by a phenomenological model of "three nested logits" learned one
after another. The formula below is the project's reconstruction of that model (REFERENCE §3,
"derived reconstruction"); the paper's own equation was not available to check it against. What
was and was not checked is on the docs page ``docs/abrupt_learning.md``.

A sequence holds N item–label pairs (``n_items``) and a target; the network outputs one of L labels
(``n_labels``, L ≥ N ≥ 2). The N context labels are distinct; one is the target's (correct) label
and L − N labels are absent from the context. Three scalar parameters, one per nested softmax:

* β (``beta``) — layer 1: each label token attends to its item (previous-token attention)
  with weight σ = sigmoid(β) ∈ (0, 1) (the other choice has logit 0);
* α (``alpha``) — layer 2: the target attends to the context label whose item matches it with
  logit α σ (the other N − 1 context labels have logit 0), so its attention weight is
  p = e^{ασ} / (e^{ασ} + N − 1) ∈ (0, 1), and 1/N at α = 0;
* ξ (``xi``) — readout: the output logit of each context label is ξ times the attention it
  receives, i.e. ξ p for the correct label and ξ (1 − p)/(N − 1) for each of the N − 1 other
  context labels; absent labels have logit 0.

The loss (nats per target, cross-entropy of the correct label) is

    ℒ(β, α, ξ) = −log[ e^{ξp} / (e^{ξp} + (N − 1) e^{ξ(1−p)/(N−1)} + (L − N)) ].

Write q_c, q_w, q_0 for the softmax probabilities of the correct label, of each other context
label and of each absent label (q_c + (N − 1) q_w + (L − N) q_0 = 1), s = sigmoid(β), a = α s.
The gradient, derived by hand (``gradient``; checked against autograd in the tests):

    ∂ℒ/∂p = −ξ (N q_w + (L − N) q_0)              [uses 1 − q_c = (N − 1) q_w + (L − N) q_0]
    ∂ℒ/∂α = ∂ℒ/∂p · p (1 − p) · s
    ∂ℒ/∂β = ∂ℒ/∂p · p (1 − p) · α s (1 − s)
    ∂ℒ/∂ξ = −q_w (1 − p) expm1(a) − (L − N) q_0 p  [uses 1 − N p = −(1 − p) expm1(a)]

At the origin p = 1/N and all L logits are 0, so ℒ(0, 0, 0) = log L (chance over the L labels)
and ∇ℒ = (0, 0, 1/L − 1/N): only ξ is pushed, and only if L > N. ∂ℒ/∂α carries a factor ξ and
∂ℒ/∂β a factor α ξ, so from near the origin ξ grows first, then α, then β (``growth_order``).
With α = 0 the loss depends on ξ only, −ξ/N + log(N e^{ξ/N} + L − N), which falls from log L to
log N as ξ → ∞: the slow phase learns to pick *some* context label (accuracy 1/L → 1/N). With
L = N that plane is flat at log N, the origin (indeed every point with α = ξ = 0) is stationary,
and learning starts only from a perturbation, through a saddle whose unstable rate in
continuous time is (N − 1)/(2N²) at β = 0.

Conventions: every function works in float64; parameters may be Python floats or tensors of any
broadcastable shapes, and results have the broadcast shape. Gradient descent here is the explicit
Euler integrator of the gradient flow dθ/dt = −∇ℒ(θ): θ_{k+1} = θ_k − lr ∇ℒ(θ_k), step k ↔ time
t = k·lr.
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


def _as_tensors(*values: Scalar) -> list[Tensor]:
    tensors = [torch.as_tensor(v, dtype=DTYPE) for v in values]
    return list(torch.broadcast_tensors(*tensors))


def _label_attention_parts(alpha: Tensor, sigma: Tensor, n_items: int) -> tuple[Tensor, ...]:
    """(a, p, 1 − p) with a = α σ, p = e^a / (e^a + N − 1), both sides computed without
    cancellation (p = sigmoid(a − log(N − 1)))."""
    a = alpha * sigma
    shift = a - math.log(n_items - 1)
    return a, torch.sigmoid(shift), torch.sigmoid(-shift)


def label_attention(beta: Scalar, alpha: Scalar, n_items: int) -> Tensor:
    """p: layer-2 attention of the target on its correct context label, in (0, 1); 1/N at α = 0.

    p = e^{ασ} / (e^{ασ} + N − 1) with σ = sigmoid(β), the layer-1 previous-token weight."""
    _check_sizes(n_items, n_items)
    beta, alpha = _as_tensors(beta, alpha)
    return _label_attention_parts(alpha, torch.sigmoid(beta), n_items)[1]


def _logits(beta: Tensor, alpha: Tensor, xi: Tensor, n_items: int) -> tuple[Tensor, ...]:
    sigma = torch.sigmoid(beta)
    a, p, p_other = _label_attention_parts(alpha, sigma, n_items)
    correct = xi * p  # logit of the correct label
    wrong = xi * p_other / (n_items - 1)  # logit of each other context label
    return sigma, a, p, p_other, correct, wrong


def _log_softmax_parts(correct: Tensor, wrong: Tensor, n_items: int, n_labels: int):
    """(ℒ, log q_w, log q_0), ℒ = −log q_c, each computed as max + log1p(rest) (ℒ keeps its
    relative precision down to ~1e-300, not only down to 1e-16)."""
    zero = torch.zeros_like(correct)
    absent = zero - math.inf if n_labels == n_items else zero + math.log(n_labels - n_items)
    # log of each group's total weight relative to the correct label: 0, log(N−1) + z_w − z_c,
    # log(L−N) − z_c; ℒ = logsumexp of these three.
    groups = torch.stack([zero, math.log(n_items - 1) + wrong - correct, absent - correct], -1)
    top = groups.argmax(-1, keepdim=True)
    peak = groups.gather(-1, top)
    rest = groups.scatter(-1, top, -math.inf)
    nll = (peak + torch.log1p(torch.exp(rest - peak).sum(-1, keepdim=True))).squeeze(-1)
    log_q_wrong = wrong - correct - nll
    log_q_absent = -correct - nll
    return nll, log_q_wrong, log_q_absent


def loss(beta: Scalar, alpha: Scalar, xi: Scalar, n_items: int, n_labels: int) -> Tensor:
    """ℒ(β, α, ξ): cross-entropy of the correct label, nats per target, float64.

    Shapes: β, α, ξ broadcast together; the result has the broadcast shape. Range (0, ∞):
    log L at the origin (chance over L labels), log N on the plateau α = 0, ξ → ∞ (a uniform
    guess among the N context labels), → 0 as ξ → ∞ with α > 0 (the in-context solution).
    Differentiable by autograd."""
    _check_sizes(n_items, n_labels)
    beta, alpha, xi = _as_tensors(beta, alpha, xi)
    *_, correct, wrong = _logits(beta, alpha, xi, n_items)
    return _log_softmax_parts(correct, wrong, n_items, n_labels)[0]


def gradient(beta: Scalar, alpha: Scalar, xi: Scalar, n_items: int, n_labels: int) -> Gradient:
    """∇ℒ(β, α, ξ) in closed form (the formulas in the module docstring), float64.

    Shapes as in `loss`. At the origin it is exactly (0, 0, 1/L − 1/N) up to rounding of the
    last component (exactly 0 when L = N)."""
    _check_sizes(n_items, n_labels)
    beta, alpha, xi = _as_tensors(beta, alpha, xi)
    sigma, a, p, p_other, correct, wrong = _logits(beta, alpha, xi, n_items)
    _, log_q_wrong, log_q_absent = _log_softmax_parts(correct, wrong, n_items, n_labels)
    q_wrong, q_absent = torch.exp(log_q_wrong), torch.exp(log_q_absent)
    n_absent = n_labels - n_items
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
) -> pd.DataFrame:
    """Plain gradient descent on ℒ from ``init`` = (β, α, ξ): θ_{k+1} = θ_k − lr ∇ℒ(θ_k).

    This is the explicit Euler integrator of the gradient flow dθ/dt = −∇ℒ with time step lr
    (time t = step · lr); lr ≤ 0.1 tracks the flow to a few per cent in the rise steps (halving
    lr doubles them). Returns one row per recorded step (0, every ``record_every`` steps, and the
    last step) with columns ``step, time, beta, alpha, xi, loss`` (loss in nats per target,
    evaluated at the recorded parameters)."""
    _check_sizes(n_items, n_labels)
    require(len(init) == 3, f"init must be (beta, alpha, xi), got {init!r}")
    require(lr > 0, f"lr must be > 0 (got {lr})")
    require(steps >= 0 and record_every >= 1, "steps must be >= 0 and record_every >= 1")
    theta = torch.tensor([float(v) for v in init], dtype=DTYPE)
    rows = []
    for step in range(steps + 1):
        beta, alpha, xi = theta
        if step % record_every == 0 or step == steps:
            value = float(loss(beta, alpha, xi, n_items, n_labels))
            rows.append((step, step * lr, *theta.tolist(), value))
        if step < steps:
            theta = theta - lr * torch.stack(gradient(beta, alpha, xi, n_items, n_labels))
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
) -> pd.DataFrame:
    """ℒ on a ``resolution`` × ``resolution`` grid over two parameters, the third held at
    ``fixed_value``. Long format, one row per grid point (y outer, x inner), columns
    ``beta, alpha, xi, loss`` (loss in nats per target)."""
    require(x in PARAMETERS and y in PARAMETERS and x != y, f"x, y: two of {PARAMETERS}")
    require(resolution >= 2, f"resolution must be >= 2 (got {resolution})")
    (fixed,) = [name for name in PARAMETERS if name not in (x, y)]
    xs = torch.linspace(*x_range, resolution, dtype=DTYPE)
    ys = torch.linspace(*y_range, resolution, dtype=DTYPE)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    values = {x: grid_x, y: grid_y, fixed: torch.full_like(grid_x, float(fixed_value))}
    losses = loss(values["beta"], values["alpha"], values["xi"], n_items, n_labels)
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
