"""Preconditioned gradient descent and GD++ on in-context linear regression, their exact
linear-attention constructions, and the comparisons with trained LSA models (REFERENCE §5).

Shapes as in `interp_icl.theory.linear_regression_gd`: x ``[B, N, d]``, y ``[B, N]``,
x_q ``[B, d]``, predictions ``[B]``; a preconditioner Γ is ``[d, d]``, k of them ``[k, d, d]``.

**Preconditioned GD (PGD)**, Ahn et al. 2023: with L(W) = (1/2N) Σ_i (W x_i − y_i)² and
∇L(W) = (1/N) Σ_i (W x_i − y_i) x_iᵀ (a row; w = Wᵀ as a vector),

    w_{t+1} = w_t − Γ_t ∇L(w_t),   ŷ = w_k · x_q,   w_0 = 0,

one matrix Γ_t per step. Plain GD is Γ_t = η I.

**One LSA layer = one PGD step** (`pgd_construction`, column-vector convention of
`interp_icl.models.linear_attention`, D = d + 1, no 1/N in the layer):

    W_K = [[I, 0], [0, 0]],  W_Q = [[Γᵀ, 0], [0, 0]],  W_V = [[0, 0], [0, −1]],
    P = (1/N) [[0, 0], [0, 1]].

Every token's y-slot holds r_j = y_j − w_t · x_j (the query's holds −w_t · x_q); the layer adds
−(1/N) Σ_i r_i x_iᵀ Γᵀ x_j = −(Γ (1/N) Σ_i r_i x_i) · x_j = −(w_{t+1} − w_t) · x_j because
(1/N) Σ_i r_i x_i = −∇L(w_t). So k stacked layers with Γ_1..Γ_k are k PGD steps [derived,
tested]. Conversely a trained layer's **effective preconditioner** is
Γ_l = −N (P W_V)[d, d] · ((W_Kᵀ W_Q)[:d, :d])ᵀ (`learned_preconditioners`): exact when the
other blocks that reach the y-slot are zero (Ahn et al.'s sparse form, P = [[0,0],[0,1]]).

**Optimal one-step preconditioner** [derived here; Ahn et al. 2023, Theorem 1, state it for
σ = 0, τ = 1]: for x ~ N(0, Σ), w ~ N(0, τ² I), y = w · x + N(0, σ²), N points, the population
loss E(ŷ − y_q)² of one PGD step from 0 is minimised by

    Γ* = ( (N+1)/N Σ + (tr Σ + σ²/τ²)/N · I )⁻¹.

Derivation: h = (1/N) Xᵀ y, ŷ = x_qᵀ Γ h; E[hwᵀ] = τ² Σ and, by Isserlis,
E[hhᵀ] = τ² ((N+1)/N Σ² + (tr Σ/N) Σ) + (σ²/N) Σ; the loss
tr(Σ Γ E[hhᵀ] Γᵀ) − 2 tr(Σ Γ E[hwᵀ]) + τ² tr Σ + σ² is a convex quadratic in Γ with
stationary point Γ* = E[hwᵀ] E[hhᵀ]⁻¹ (`optimal_preconditioner`, `pgd_population_loss`). So it
is not Σ⁻¹: the finite-N term shrinks it along Σ's small directions.

**GD++**, von Oswald et al. 2023: a layer also transforms the inputs with the curvature of the
context. Every token (context and query) carries (x_j, r_j), r_j = y_j for the context and 0 for
the query; layer t computes, from its input,

    r_j ← r_j − η_t (1/N) Σ_i r_i x_iᵀ x_j,     x_j ← x_j − γ_t (1/N) Σ_i x_i x_iᵀ x_j,

i.e. x ← (I − γ_t S) x with S = (1/N) Σ_i x_i x_iᵀ, and ŷ = −r_q after the last layer. With
γ = 0 it is plain GD. One LSA layer does it exactly (`gdpp_construction`): W_K = W_Q =
[[I, 0], [0, 0]], W_V = −I, P = (1/N) diag(γ, …, γ, η) [derived, tested]. The paper defines
GD++ as this data transformation followed by a GD step; here both use the layer's input (the
LSA's own order), and the last layer's γ does not reach the prediction.

Fitting (`fit_pgd`, `fit_gdpp`): parameters minimising the mean squared difference from given
targets — the query targets y_q (the family's best member, "optimal") or a model's predictions
(the member closest to the model) — in float64. One PGD step is linear in Γ, so exact least
squares; k steps: L-BFGS from the best plain-GD point (Γ_t = η I, so the fit is never worse
than plain GD) and from Γ_t = c Γ̂ (Γ̂ the best single step, c = 1, 1/2), the best result kept. GD++: L-BFGS over (η_t, γ_t) from several starts (η_GD, γ), the best kept.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from interp_icl.errors import require
from interp_icl.theory.linear_regression_gd import _check_task, fit_gd_lr, gd_gradient


class Fit(NamedTuple):
    """Fitted parameters and the mean squared difference from the targets they were fitted to.

    params: PGD ``[k, d, d]`` (Γ_1..Γ_k) or GD++ ``[k, 2]`` (η_t, γ_t)."""

    params: Tensor
    mse: float


# ----- preconditioned GD ----------------------------------------------------------------------
def _gammas(gammas: Tensor, d: int) -> Tensor:
    gammas = torch.as_tensor(gammas)
    gammas = gammas[None] if gammas.ndim == 2 else gammas
    require(
        gammas.ndim == 3 and tuple(gammas.shape[1:]) == (d, d),
        f"preconditioners must be [d, d] or [k, d, d] with d={d}, got {tuple(gammas.shape)}",
    )
    return gammas


def pgd_weights(x: Tensor, y: Tensor, gammas: Tensor) -> Tensor:
    """w_k ``[B, d]`` after k = len(gammas) PGD steps from 0; gammas ``[k, d, d]`` or ``[d, d]``."""
    gammas = _gammas(gammas, x.shape[-1]).to(x.dtype)
    w = torch.zeros(x.shape[0], x.shape[-1], dtype=x.dtype, device=x.device)
    for gamma in gammas:
        w = w - gd_gradient(x, y, w) @ gamma.T
    return w


def pgd_prediction(x: Tensor, y: Tensor, x_q: Tensor, gammas: Tensor) -> Tensor:
    """ŷ = w_k · x_q ``[B]`` after the PGD steps of `gammas` (``[k, d, d]``)."""
    _check_task(x, y, x_q)
    return (pgd_weights(x, y, gammas) * x_q).sum(-1)


def pgd_construction(gammas: Tensor, n_points: int) -> dict[str, Tensor]:
    """Stacked LSA matrices ``[k, D, D]`` whose k layers are the k PGD steps of `gammas`
    (module docstring); feed ``tokens(x, y, x_q)`` to ``LinearSelfAttention.from_weights``."""
    require(n_points >= 1, f"n_points must be at least 1, got {n_points}")
    gammas = torch.as_tensor(gammas)
    gammas = _gammas(gammas, gammas.shape[-1])
    k, d = gammas.shape[0], gammas.shape[-1]
    D = d + 1
    key = torch.zeros(k, D, D, dtype=gammas.dtype)
    key[:, :d, :d] = torch.eye(d, dtype=gammas.dtype)
    query = torch.zeros(k, D, D, dtype=gammas.dtype)
    query[:, :d, :d] = gammas.transpose(1, 2)
    value = torch.zeros(k, D, D, dtype=gammas.dtype)
    value[:, d, d] = -1.0
    proj = torch.zeros(k, D, D, dtype=gammas.dtype)
    proj[:, d, d] = 1.0 / n_points
    return {"W_Q": query, "W_K": key, "W_V": value, "P": proj}


def optimal_preconditioner(
    sigma: Tensor, n_points: int, noise: float = 0.0, w_scale: float = 1.0
) -> Tensor:
    """Γ* ``[d, d]`` = ((N+1)/N Σ + (tr Σ + σ²/τ²)/N I)⁻¹, the best single PGD step from 0 for
    x ~ N(0, Σ), w ~ N(0, τ² I), noise σ (module docstring)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    require(n_points >= 1 and w_scale > 0, f"need N >= 1 and w_scale > 0, got {n_points}, {w_scale}")
    n, d = n_points, sigma.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    trace = float(torch.trace(sigma)) + noise**2 / w_scale**2
    return torch.linalg.inv((n + 1) / n * sigma + trace / n * eye)


def pgd_population_loss(
    gamma: Tensor, sigma: Tensor, n_points: int, noise: float = 0.0, w_scale: float = 1.0
) -> float:
    """E[(ŷ − y_q)²]/2 of one PGD step with Γ ``[d, d]`` from 0, exactly (module docstring)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    gamma = torch.as_tensor(gamma, dtype=torch.float64)
    n, tau2 = n_points, w_scale**2
    hh = tau2 * ((n + 1) / n * sigma @ sigma + torch.trace(sigma) / n * sigma) + noise**2 / n * sigma
    loss = (
        torch.trace(sigma @ gamma @ hh @ gamma.T)
        - 2 * tau2 * torch.trace(sigma @ gamma @ sigma)
        + tau2 * torch.trace(sigma)
        + noise**2
    )
    return float(loss) / 2


# ----- GD++ -----------------------------------------------------------------------------------
def gdpp_prediction(x: Tensor, y: Tensor, x_q: Tensor, params: Tensor) -> Tensor:
    """ŷ ``[B]`` of GD++ with per-layer params ``[k, 2]`` = (η_t, γ_t) (module docstring)."""
    _check_task(x, y, x_q)
    params = torch.as_tensor(params, dtype=x.dtype)
    require(params.ndim == 2 and params.shape[1] == 2, f"params must be [k, 2], got {tuple(params.shape)}")
    n = x.shape[1]
    r, r_q = y, torch.zeros_like(y[:, 0])
    for eta, gamma in params:
        r_new = r - eta * torch.einsum("bi,bid,bjd->bj", r, x, x) / n
        r_q = r_q - eta * torch.einsum("bi,bid,bd->b", r, x, x_q) / n
        curvature = torch.einsum("bid,bie->bde", x, x) / n  # S [B, d, d]
        x, x_q = x - gamma * x @ curvature, x_q - gamma * torch.einsum("bd,bde->be", x_q, curvature)
        r = r_new
    return -r_q


def gdpp_construction(params: Tensor, d: int, n_points: int) -> dict[str, Tensor]:
    """Stacked LSA matrices ``[k, D, D]`` (D = d + 1) whose k layers are the GD++ layers of
    params ``[k, 2]`` = (η_t, γ_t): W_K = W_Q = [[I, 0], [0, 0]], W_V = −I,
    P = (1/N) diag(γ_t, …, γ_t, η_t)."""
    params = torch.as_tensor(params, dtype=torch.float64)
    require(params.ndim == 2 and params.shape[1] == 2, f"params must be [k, 2], got {tuple(params.shape)}")
    require(n_points >= 1 and d >= 1, f"need N >= 1 and d >= 1, got {n_points}, {d}")
    k, D = params.shape[0], d + 1
    qk = torch.zeros(k, D, D, dtype=torch.float64)
    qk[:, :d, :d] = torch.eye(d, dtype=torch.float64)
    value = -torch.eye(D, dtype=torch.float64).expand(k, D, D).clone()
    proj = torch.zeros(k, D, D, dtype=torch.float64)
    for t, (eta, gamma) in enumerate(params):
        proj[t] = torch.diag(torch.cat([gamma.expand(d), eta[None]])) / n_points
    return {"W_Q": qk.clone(), "W_K": qk, "W_V": value, "P": proj}


# ----- fitting --------------------------------------------------------------------------------
def _lbfgs(loss_fn, start: Tensor, iterations: int) -> Tensor:
    params = start.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=iterations, tolerance_grad=1e-12, tolerance_change=1e-15,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    opt.step(closure)
    return params.detach()


def fit_pgd(
    x: Tensor, y: Tensor, x_q: Tensor, targets: Tensor, steps: int, iterations: int = 500
) -> Fit:
    """Γ_1..Γ_steps ``[steps, d, d]`` minimising mean (ŷ_PGD − targets)², float64 (module
    docstring: least squares for one step, L-BFGS from three starts for more; the loss is a
    polynomial of degree 2·steps in the entries, not convex)."""
    _check_task(x, y, x_q)
    require(steps >= 1, f"steps must be at least 1, got {steps}")
    x, y, x_q, t = (v.detach().double() for v in (x, y, x_q, targets))
    d = x.shape[-1]

    def mse(gammas: Tensor) -> Tensor:
        return ((pgd_prediction(x, y, x_q, gammas) - t) ** 2).mean()

    if steps == 1:  # ŷ = x_qᵀ Γ h = Σ_ab Γ_ab x_q,a h_b: linear in vec(Γ)
        h = torch.einsum("bn,bnd->bd", y, x) / x.shape[1]
        features = (x_q[:, :, None] * h[:, None, :]).reshape(len(t), d * d)
        solution = torch.linalg.lstsq(features, t[:, None]).solution
        gammas = solution.reshape(1, d, d)
        return Fit(gammas, float(mse(gammas)))
    one_step = fit_pgd(x, y, x_q, t, steps=1).params[0]
    eta = fit_gd_lr(x, y, x_q, t, steps=steps).eta
    eye = torch.eye(d, dtype=torch.float64)
    starts = [eta * eye.expand(steps, d, d)] + [c * one_step.expand(steps, d, d) for c in (1.0, 0.5)]
    best, best_mse = None, math.inf
    for start in starts:
        for gammas in (start, _lbfgs(mse, start, iterations)):
            value = float(mse(gammas))
            if value < best_mse:  # NaN (a diverged search) never wins
                best, best_mse = gammas.clone(), value
    return Fit(best, best_mse)


def fit_gdpp(
    x: Tensor,
    y: Tensor,
    x_q: Tensor,
    targets: Tensor,
    steps: int,
    iterations: int = 200,
    gamma_starts: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0),
) -> Fit:
    """(η_t, γ_t) ``[steps, 2]`` minimising mean (ŷ_GD++ − targets)², float64: L-BFGS from
    (η_GD, g / λ̄) for every g in `gamma_starts` (η_GD: the best plain GD for these targets,
    λ̄ = mean eigenvalue of S), the best result kept; the loss is not convex in γ, so one start
    can stop in a poor local minimum. The last γ cannot change ŷ; it is 0. With g = 0 among the
    starts the fit is never worse than plain GD."""
    _check_task(x, y, x_q)
    require(steps >= 1, f"steps must be at least 1, got {steps}")
    x, y, x_q, t = (v.detach().double() for v in (x, y, x_q, targets))
    eta = fit_gd_lr(x, y, x_q, t, steps=steps).eta
    mean_eig = float(torch.einsum("bnd,bnd->", x, x)) / (x.shape[0] * x.shape[1] * x.shape[2])
    last = torch.tensor([1.0, 0.0], dtype=torch.float64)

    def full(params: Tensor) -> Tensor:
        return torch.cat([params[:-1], params[-1:] * last])

    def mse(params: Tensor) -> Tensor:
        return ((gdpp_prediction(x, y, x_q, full(params)) - t) ** 2).mean()

    best, best_mse = None, math.inf
    for g in gamma_starts if steps > 1 else (0.0,):
        start = torch.tensor([[eta, g / mean_eig]] * steps, dtype=torch.float64)
        for params in (start, _lbfgs(mse, start, iterations)):
            value = float(mse(params))
            if value < best_mse:  # NaN (a diverged search) never wins
                best, best_mse = full(params), value
    return Fit(best, best_mse)


# ----- trained models -------------------------------------------------------------------------
def learned_preconditioners(model, n_points: int) -> tuple[Tensor, Tensor]:
    """(Γ ``[L, d, d]``, x_update ``[L]``) of an LSA model, float64 (module docstring).

    Γ_l = −c (P W_V)[d, d] ((W_Kᵀ W_Q)[:d, :d])ᵀ with c = N (c = 1 for ``normalize=True``),
    layer l's preconditioner if it is a PGD layer. x_update_l = ‖(P W_V)[:d, :d]‖_F /
    |(P W_V)[d, d]|: how strongly the layer also rewrites the x-slots (0 for PGD; √d γ/η for a
    GD++ layer)."""
    d = model.cfg.d_x
    scale = 1.0 if model.cfg.normalize else float(n_points)
    gammas, x_update = [], []
    for layer in range(model.cfg.n_layers):
        w = {k: v.detach().double() for k, v in model.layer_weights(layer).items()}
        value = w["P"] @ w["W_V"]
        kq = w["W_K"].T @ w["W_Q"]
        gammas.append(-scale * value[d, d] * kq[:d, :d].T)
        x_update.append(float(value[:d, :d].norm() / value[d, d].abs().clamp_min(1e-300)))
    return torch.stack(gammas), torch.tensor(x_update, dtype=torch.float64)


def matrix_cosine(a: Tensor, b: Tensor) -> float:
    """⟨A, B⟩_F / (‖A‖_F ‖B‖_F); ‖cA − B‖/‖B‖ at the best scalar c is √(1 − cos²) when cos ≥ 0."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    require(a.shape == b.shape, f"matrices differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))
