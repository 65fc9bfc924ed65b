"""In-context linear regression, gradient descent, and its exact linear-attention construction.

REFERENCE §5 (von Oswald et al. 2023; Ahn et al. 2023). Shapes: B tasks, N context points,
d inputs; x ``[B, N, d]``, y ``[B, N]``, x_q ``[B, d]``, targets and predictions ``[B]``.
Every function is pure and works in the dtype of its inputs (float64 for exactness checks).

Gradient descent (GD) runs on one task's context with the linear model ŷ = W x, W ∈ R^{1×d}
(stored as a vector w ``[d]``), and the loss

    L(W) = (1/2N) Σ_i (W x_i − y_i)²,   ∇L(W) = (1/N) Σ_i (W x_i − y_i) x_iᵀ,
    W_{t+1} = W_t − η ∇L(W_t),          prediction after k steps: W_k x_q.

One GD step from W_0 as one linear self-attention layer (`gd_construction`, column-vector
convention of `interp_icl.models.linear_attention`, D = d + 1):

    W_K = W_Q = [[I_d, 0], [0, 0]],  W_V = [[0, 0], [W_0, −1]],  P = (η/N) [[0, 0], [0, 1]].

Then v_i = (0, W_0 x_i − y_i), k_iᵀ q_j = x_iᵀ x_j and the update of every token's y-slot is
y_j + (η/N) Σ_i (W_0 x_i − y_i) x_iᵀ x_j = y_j + η ∇L(W_0) x_j = y_j − ΔW x_j with
ΔW = W_1 − W_0 = −η ∇L(W_0); the x-slots are unchanged. These are the reference code's
``create_weights`` matrices (haiku's ``x @ w`` layout there, transposed here) [code]. The sum
runs over the context tokens only, as in the reference (``include_query=False``) [code].

The query's y-slot starts at −W_0 x_q (`tokens`), so after the layer it holds −W_1 x_q and the
model's readout ŷ = −y_q-slot equals the GD prediction W_1 x_q. The reference code writes the
placeholder ``-x_q · (0 · 1)`` there, i.e. the W_0 = 0 case of this rule [code]; the general
rule is derived here and verified in ``tests/test_linear_attention_gd.py`` [derived].

k GD steps = k stacked layers with the **same** matrices [derived, verified by test]: after
layer t every context token holds y_i − (W_t − W_0) x_i, so its value is W_0 x_i − y_i +
(W_t − W_0) x_i = W_t x_i − y_i and layer t + 1 adds η ∇L(W_t) x_j. This needs the query
excluded as a key/value (its value is not zero after the first layer).

The project's reference text gives x ~ U(−1, 1) (the paper); the reference code draws
U(−input_range/2, input_range/2) with input_range = 1, i.e. ``x_scale=0.5`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from interp_icl.errors import ConfigError, require

TaskPredictor = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, y, x_q) -> ŷ [B]
X_DISTS = ("uniform", "normal")


class RegressionSample(NamedTuple):
    """A batch of in-context linear regression tasks (unpacks as x, y, x_q, y_q, w)."""

    x: Tensor  # [B, N, d]
    y: Tensor  # [B, N]
    x_q: Tensor  # [B, d]
    y_q: Tensor  # [B]
    w: Tensor  # [B, d]


class PredictionDifference(NamedTuple):
    """mean_abs = mean |ŷ_a − ŷ_b|; relative_l2 = ‖ŷ_a − ŷ_b‖₂ / ‖ŷ_b‖₂ (0 = identical)."""

    mean_abs: float
    relative_l2: float


class LRSearch(NamedTuple):
    """A fitted GD learning rate.

    eta: the learning rate; mse: mean squared difference between the GD predictions at eta and
    the targets; method: "closed_form" (one step) or "grid+golden"; at_boundary: the grid optimum
    was the largest grid point (widen eta_max).
    """

    eta: float
    mse: float
    method: str
    at_boundary: bool


# ----- tasks ----------------------------------------------------------------------------------
def input_covariance(
    d: int,
    condition: float,
    basis_seed: int | None = 0,
    x_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """(Σ, A) ``[d, d]`` each, Σ = A Aᵀ = x_scale² U diag(λ) Uᵀ, for x = A z with z ~ N(0, I).

    λ_k = c · condition^(k/(d−1)), k = 0..d−1, geometric with condition number `condition` and
    c chosen so that the mean eigenvalue is 1 (tr Σ = d · x_scale², the isotropic case's trace).
    U: a random orthogonal matrix (QR of a Gaussian matrix from ``seeded(basis_seed)``, columns
    signed so that R has a positive diagonal), or the identity when basis_seed is None. Ahn et
    al.'s code draws x = U D z with a matrix U (``generate_data(..., U, D)``), i.e. Σ = U D² Uᵀ.
    """
    from interp_icl.seeding import seeded

    require(d >= 1, f"d must be at least 1, got {d}")
    require(condition >= 1, f"the condition number must be >= 1, got {condition}")
    require(d >= 2 or condition == 1, f"one dimension has condition number 1, got {condition}")
    require(x_scale > 0, f"x_scale must be positive, got {x_scale}")
    powers = torch.arange(d, dtype=torch.float64) / max(d - 1, 1)
    eig = float(condition) ** powers
    eig = eig / eig.mean()
    if basis_seed is None:
        basis = torch.eye(d, dtype=torch.float64)
    else:
        raw = torch.randn(d, d, generator=seeded(basis_seed), dtype=torch.float64)
        basis, r = torch.linalg.qr(raw)
        basis = basis * torch.sign(torch.diagonal(r))[None, :]
    factor = basis * (x_scale * eig.sqrt())[None, :]
    sigma = factor @ factor.T
    return sigma.to(dtype), factor.to(dtype)


def sample_regression(
    n_tasks: int,
    n_points: int,
    d: int,
    generator: torch.Generator,
    x_dist: str = "uniform",
    x_scale: float = 1.0,
    noise: float = 0.0,
    w_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    x_factor: Tensor | None = None,
) -> RegressionSample:
    """`n_tasks` tasks y = wᵀx + ε, w ~ N(0, w_scale² I), ε ~ N(0, noise²), N context points.

    x and x_q ~ U(−x_scale, x_scale)^d (``x_dist="uniform"``) or N(0, x_scale² I) ("normal");
    the query target y_q carries noise too. Draw order: w, x, x_q, ε, ε_q, so the same
    generator state gives the same tasks. `x_factor` ``[d, d]`` (normal x only; e.g. the A of
    `input_covariance` with x_scale 1): x = A z for the normal draw z, so x ~ N(0, x_scale² A Aᵀ).
    """
    require(n_tasks >= 1, f"n_tasks must be at least 1, got {n_tasks}")
    require(n_points >= 1, f"n_points must be at least 1, got {n_points}")
    require(d >= 1, f"d must be at least 1, got {d}")
    require(x_dist in X_DISTS, f"x_dist must be one of {X_DISTS}, got {x_dist!r}")
    require(x_scale > 0, f"x_scale must be positive, got {x_scale}")
    require(noise >= 0 and w_scale > 0, f"need noise >= 0 and w_scale > 0, got {noise}, {w_scale}")
    require(dtype.is_floating_point, f"dtype must be floating point, got {dtype}")
    require(
        x_factor is None or (x_dist == "normal" and tuple(x_factor.shape) == (d, d)),
        f"x_factor needs x_dist 'normal' and shape [{d}, {d}]",
    )

    def draw_x(*shape: int) -> Tensor:
        if x_dist == "uniform":
            u = torch.rand(*shape, generator=generator, dtype=dtype)
            return (2 * u - 1) * x_scale
        return torch.randn(*shape, generator=generator, dtype=dtype) * x_scale

    w = torch.randn(n_tasks, d, generator=generator, dtype=dtype) * w_scale
    x = draw_x(n_tasks, n_points, d)
    x_q = draw_x(n_tasks, d)
    if x_factor is not None:
        x = x @ x_factor.to(dtype).T
        x_q = x_q @ x_factor.to(dtype).T
    eps = torch.randn(n_tasks, n_points, generator=generator, dtype=dtype)
    eps_q = torch.randn(n_tasks, generator=generator, dtype=dtype)
    y = torch.einsum("bnd,bd->bn", x, w) + noise * eps
    y_q = (x_q * w).sum(-1) + noise * eps_q
    return RegressionSample(x, y, x_q, y_q, w)


def _w0(w0: Tensor | None, x: Tensor) -> Tensor:
    """W_0 as ``[B, d]`` (zeros when None; a ``[d]`` vector is shared by all tasks)."""
    batch, d = x.shape[0], x.shape[-1]
    if w0 is None:
        return torch.zeros(batch, d, dtype=x.dtype, device=x.device)
    w0 = torch.as_tensor(w0, dtype=x.dtype, device=x.device)
    require(
        tuple(w0.shape) in ((d,), (batch, d)),
        f"w0 must have shape [{d}] or [{batch}, {d}], got {tuple(w0.shape)}",
    )
    return w0.expand(batch, d)


def _check_task(x: Tensor, y: Tensor, x_q: Tensor) -> None:
    require(x.ndim == 3, f"x must be [B, N, d], got {tuple(x.shape)}")
    batch, n, d = x.shape
    require(tuple(y.shape) == (batch, n), f"y must be [{batch}, {n}], got {tuple(y.shape)}")
    require(tuple(x_q.shape) == (batch, d), f"x_q must be [{batch}, {d}], got {tuple(x_q.shape)}")


def tokens(x: Tensor, y: Tensor, x_q: Tensor, w0: Tensor | None = None) -> Tensor:
    """The LSA input ``[B, N+1, d+1]``: rows (x_i, y_i), then the query (x_q, −W_0 x_q).

    With w0 = None the query is (x_q, 0), the usual input of a trained model.
    """
    _check_task(x, y, x_q)
    context = torch.cat([x, y[..., None]], dim=-1)
    query_y = -(x_q * _w0(w0, x)).sum(-1)
    query = torch.cat([x_q, query_y[:, None]], dim=-1)
    return torch.cat([context, query[:, None]], dim=1)


# ----- gradient descent -----------------------------------------------------------------------
def gd_gradient(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """∇L(W) ``[B, d]`` of L(W) = (1/2N) Σ_i (W x_i − y_i)² at w ``[B, d]``."""
    residual = torch.einsum("bnd,bd->bn", x, w) - y
    return torch.einsum("bn,bnd->bd", residual, x) / x.shape[1]


def gd_weights(
    x: Tensor, y: Tensor, eta: float | Tensor, w0: Tensor | None = None, steps: int = 1
) -> Tensor:
    """W_k ``[B, d]`` after `steps` full-batch GD steps with learning rate eta from W_0."""
    require(steps >= 0, f"steps must be >= 0, got {steps}")
    w = _w0(w0, x)
    for _ in range(steps):
        w = w - eta * gd_gradient(x, y, w)
    return w


def gd_step_prediction(
    x: Tensor,
    y: Tensor,
    x_q: Tensor,
    eta: float | Tensor,
    w0: Tensor | None = None,
    steps: int = 1,
) -> Tensor:
    """ŷ_GD = W_k x_q ``[B]`` after `steps` GD steps (one by default) from W_0 (0 when None)."""
    _check_task(x, y, x_q)
    return (gd_weights(x, y, eta, w0, steps) * x_q).sum(-1)


def gd_construction(
    d: int,
    eta: float,
    w0: Tensor | None = None,
    *,
    n_points: int,
    normalize: bool = False,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """One layer's LSA matrices (W_Q, W_K ``[d+1, d+1]``, W_V, P ``[d+1, d+1]``) that perform
    one GD step with learning rate eta from W_0 ``[d]`` on N = n_points context tokens.

    P = (η/N)[[0,0],[0,1]] for a model without normalisation (von Oswald), P = η[[0,0],[0,1]]
    with ``normalize=True`` (the model divides by N, Ahn et al.). Use with
    ``LinearSelfAttention.from_weights(weights, n_layers=k)`` for k steps, and feed
    ``tokens(x, y, x_q, w0)`` so that the query starts at −W_0 x_q.
    """
    require(d >= 1, f"d must be at least 1, got {d}")
    require(n_points >= 1, f"n_points must be at least 1, got {n_points}")
    D = d + 1
    w0 = torch.zeros(d, dtype=dtype) if w0 is None else torch.as_tensor(w0).to(dtype)
    require(tuple(w0.shape) == (d,), f"w0 must have shape [{d}], got {tuple(w0.shape)}")
    qk = torch.zeros(D, D, dtype=dtype)
    qk[:d, :d] = torch.eye(d, dtype=dtype)
    value = torch.zeros(D, D, dtype=dtype)
    value[d, :d] = w0
    value[d, d] = -1.0
    proj = torch.zeros(D, D, dtype=dtype)
    proj[d, d] = eta if normalize else eta / n_points
    return {"W_Q": qk.clone(), "W_K": qk.clone(), "W_V": value, "P": proj}


# ----- baselines ------------------------------------------------------------------------------
def least_squares_prediction(x: Tensor, y: Tensor, x_q: Tensor) -> Tensor:
    """ŵᵀx_q ``[B]`` with ŵ = X⁺ y, the minimum-norm least-squares fit (the λ → 0⁺ ridge)."""
    _check_task(x, y, x_q)
    w = torch.einsum("bdn,bn->bd", torch.linalg.pinv(x), y)
    return (w * x_q).sum(-1)


def ridge_prediction(x: Tensor, y: Tensor, x_q: Tensor, lam: float) -> Tensor:
    """ŵᵀx_q ``[B]`` with ŵ = (XᵀX + λI)⁻¹ Xᵀy (sums over points, not means).

    With λ = noise² / w_scale² this is the posterior mean of w ~ N(0, w_scale² I) given
    y = Xw + N(0, noise² I), hence the Bayes-optimal prediction under squared loss
    (`bayes_ridge_lambda`).
    """
    _check_task(x, y, x_q)
    require(lam > 0, f"ridge lam must be positive (use least_squares_prediction for 0), got {lam}")
    d = x.shape[-1]
    gram = x.transpose(1, 2) @ x + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(gram, torch.einsum("bnd,bn->bd", x, y))
    return (w * x_q).sum(-1)


def bayes_ridge_lambda(noise: float, w_scale: float = 1.0) -> float:
    """λ = noise² / w_scale², the ridge penalty of the posterior mean (see `ridge_prediction`)."""
    require(noise > 0, f"the Bayes ridge needs noise > 0, got {noise}; use least squares")
    return noise**2 / w_scale**2


# ----- comparing a model with GD --------------------------------------------------------------
def prediction_difference(y_model: Tensor, y_ref: Tensor) -> PredictionDifference:
    """How far predictions ``[B]`` are from a reference (e.g. GD): mean |Δ| and ‖Δ‖₂ / ‖ŷ_ref‖₂."""
    require(
        y_model.shape == y_ref.shape,
        f"predictions differ in shape: {tuple(y_model.shape)} vs {tuple(y_ref.shape)}",
    )
    diff = (y_model.detach() - y_ref.detach()).double()
    ref_norm = float(torch.linalg.vector_norm(y_ref.detach().double()))
    rel = float(torch.linalg.vector_norm(diff)) / ref_norm if ref_norm > 0 else math.inf
    return PredictionDifference(float(diff.abs().mean()), rel)


def prediction_gradient(predict: TaskPredictor, x: Tensor, y: Tensor, x_q: Tensor) -> Tensor:
    """∂ŷ/∂x_q ``[B, d]`` of a predictor (x, y, x_q) -> ŷ ``[B]``, by autograd.

    Assumes task b's prediction depends on task b only (true of LSA models and GD), so the
    gradient of the batch sum gives every task's gradient at once.
    """
    _check_task(x, y, x_q)
    x_q = x_q.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = predict(x.detach(), y.detach(), x_q)
        require(
            tuple(out.shape) == (x.shape[0],),
            f"a predictor must return [B]={x.shape[0]} values, got {tuple(out.shape)}",
        )
        (grad,) = torch.autograd.grad(out.sum(), x_q)
    return grad


def sensitivity_cosine(
    predict_a: TaskPredictor, predict_b: TaskPredictor, x: Tensor, y: Tensor, x_q: Tensor
) -> float:
    """Mean over tasks of cos(∂ŷ_a/∂x_q, ∂ŷ_b/∂x_q), in [−1, 1] (1 = same direction).

    Von Oswald et al.'s alignment measure; their code differentiates w.r.t. the query token's
    x-slot and adds 1e-8 to each norm, which biases an exact match below 1 by ~2e-8/‖∂ŷ‖; here
    a task whose gradients are both nonzero gets the exact cosine (0 if one is zero). With
    `tokens(..., w0)` the query's initial y-slot −W_0 x_q depends on x_q too; the gradient
    includes that path.
    """
    ga = prediction_gradient(predict_a, x, y, x_q).double()
    gb = prediction_gradient(predict_b, x, y, x_q).double()
    norms = ga.norm(dim=-1) * gb.norm(dim=-1)
    cos = (ga * gb).sum(-1) / norms.clamp_min(torch.finfo(torch.float64).tiny)
    return float(cos.mean())


def lsa_predictor(model: object, w0: Tensor | None = None) -> TaskPredictor:
    """(x, y, x_q) -> ``model.predict(tokens(x, y, x_q, w0))``, for any model with `predict`."""
    return lambda x, y, x_q: model.predict(tokens(x, y, x_q, w0))


def gd_predictor(eta: float, w0: Tensor | None = None, steps: int = 1) -> TaskPredictor:
    """(x, y, x_q) -> ŷ_GD after `steps` steps with learning rate eta."""
    return lambda x, y, x_q: gd_step_prediction(x, y, x_q, eta, w0, steps)


# ----- learning-rate fitting ------------------------------------------------------------------
def fit_gd_lr(
    x: Tensor,
    y: Tensor,
    x_q: Tensor,
    targets: Tensor,
    *,
    steps: int = 1,
    w0: Tensor | None = None,
    eta_max: float | None = None,
    n_grid: int = 200,
) -> LRSearch:
    """The η minimising mean_b (ŷ_GD(η)_b − targets_b)², computed in float64.

    One step: ŷ_GD(η) = W_0 x_q − η ∇L(W_0) x_q = a + η b is affine in η, so the least-squares
    η = Σ b (t − a) / Σ b² is exact (any sign). k > 1 steps: ŷ_GD is a degree-k polynomial in η;
    grid search on [0, eta_max] (n_grid + 1 points) then golden-section refinement in the
    bracket around the best grid point. eta_max defaults to 3 / mean_b λ_max(X_bᵀX_b / N),
    1.5 times the step size at which GD diverges on a typical task.
    """
    _check_task(x, y, x_q)
    require(steps >= 1, f"steps must be at least 1, got {steps}")
    require(
        tuple(targets.shape) == (x.shape[0],), f"targets must be [B], got {tuple(targets.shape)}"
    )
    x, y, x_q, t = (v.detach().double() for v in (x, y, x_q, targets))
    w0 = None if w0 is None else torch.as_tensor(w0).detach().double()

    def mse(eta: float) -> float:
        return float(((gd_step_prediction(x, y, x_q, eta, w0, steps) - t) ** 2).mean())

    if steps == 1:
        a = gd_step_prediction(x, y, x_q, 0.0, w0, 1)
        b = gd_step_prediction(x, y, x_q, 1.0, w0, 1) - a
        denom = float((b * b).sum())
        require(denom > 0, "GD predictions do not depend on eta here (zero gradient)", ConfigError)
        eta = float((b * (t - a)).sum()) / denom
        return LRSearch(eta, mse(eta), "closed_form", False)

    if eta_max is None:
        lam_max = torch.linalg.eigvalsh(x.transpose(1, 2) @ x / x.shape[1])[:, -1].mean()
        eta_max = 3.0 / float(lam_max)
    require(
        eta_max > 0 and n_grid >= 2, f"need eta_max > 0 and n_grid >= 2, got {eta_max}, {n_grid}"
    )
    grid = [eta_max * i / n_grid for i in range(n_grid + 1)]
    losses = [mse(e) for e in grid]
    best = min(range(len(grid)), key=losses.__getitem__)
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, n_grid)]
    ratio = (math.sqrt(5) - 1) / 2
    left, right = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f_left, f_right = mse(left), mse(right)
    for _ in range(80):
        if f_left <= f_right:
            hi, right, f_right = right, left, f_left
            left = hi - ratio * (hi - lo)
            f_left = mse(left)
        else:
            lo, left, f_left = left, right, f_right
            right = lo + ratio * (hi - lo)
            f_right = mse(right)
    eta = (lo + hi) / 2
    return LRSearch(eta, mse(eta), "grid+golden", best == n_grid)


def tune_gd_lr(
    model_predict: TaskPredictor,
    sample: RegressionSample | tuple[Tensor, ...],
    *,
    steps: int = 1,
    w0: Tensor | None = None,
    eta_max: float | None = None,
    n_grid: int = 200,
) -> LRSearch:
    """The GD learning rate whose predictions best match a model's on `sample` (fresh tasks):
    argmin_η mean_b (ŷ_GD(η) − ŷ_model)², by `fit_gd_lr`. `sample` is (x, y, x_q, ...)."""
    x, y, x_q = sample[0], sample[1], sample[2]
    with torch.no_grad():
        targets = model_predict(x, y, x_q)
    return fit_gd_lr(x, y, x_q, targets, steps=steps, w0=w0, eta_max=eta_max, n_grid=n_grid)


def optimal_gd_lr(
    sample: RegressionSample | tuple[Tensor, ...],
    *,
    steps: int = 1,
    w0: Tensor | None = None,
    eta_max: float | None = None,
    n_grid: int = 200,
) -> LRSearch:
    """The GD learning rate with the smallest squared error on the query targets y_q
    (`sample` = (x, y, x_q, y_q, ...)). The reference code's ``scan_lrs`` does this by brute
    force over η ∈ {0.001, 0.101, ..., 24.901} on 10,000 tasks; here it is exact for one step."""
    x, y, x_q, y_q = sample[0], sample[1], sample[2], sample[3]
    return fit_gd_lr(x, y, x_q, y_q, steps=steps, w0=w0, eta_max=eta_max, n_grid=n_grid)
