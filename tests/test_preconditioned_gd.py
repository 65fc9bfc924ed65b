"""Preconditioned GD, GD++ and anisotropic inputs (issue 16, part 3): the theory against
independent truth (closed forms against Monte Carlo, constructions against the recursions written
out by hand), the task option, and the study's --quick mode (mechanics, not science)."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp_icl.config import TaskConfig
from interp_icl.errors import ConfigError
from interp_icl.models.linear_attention import LinearSelfAttention
from interp_icl.seeding import generator
from interp_icl.tasks import make_task
from interp_icl.theory import linear_regression_gd as lr
from interp_icl.theory import preconditioned_gd as pg

F64 = torch.float64
ANALYSES = Path(__file__).parents[1] / "analyses"


def anisotropic(n, n_points=6, d=3, condition=10.0, seed=0, noise=0.0):
    sigma, factor = lr.input_covariance(d, condition, basis_seed=3)
    sample = lr.sample_regression(
        n, n_points, d, generator(seed, "pgd"), x_dist="normal", noise=noise, dtype=F64,
        x_factor=factor,
    )
    return sigma, sample


# ----- the task option ------------------------------------------------------------------------
def test_default_tasks_draw_what_they_drew_before():
    for kwargs in ({}, {"x_dist": "normal", "x_scale": 2.0}):
        task = make_task(TaskConfig(name="regression", x_dim=4, n_points=5, **kwargs))
        batch = task.sample(16, generator(0, "t"))
        old = lr.sample_regression(16, 5, 4, generator(0, "t"), **kwargs)
        assert torch.equal(batch.tokens[:, :-1, :-1], old.x) and torch.equal(batch.tokens[:, -1, -1], old.y_q)
        assert task.x_covariance() is None and "x_condition" not in task.describe()


def test_anisotropic_task_has_the_configured_covariance():
    task = make_task(TaskConfig(name="regression", x_dim=4, n_points=50, x_dist="normal", x_condition=20.0, x_scale=2.0))
    sigma = task.x_covariance()
    eig = torch.linalg.eigvalsh(sigma)
    assert float(eig[-1] / eig[0]) == pytest.approx(20.0) and float(eig.mean()) == pytest.approx(4.0)
    tokens = task.sample(4000, generator(1, "cov")).tokens.double()
    x = tokens[:, :, :-1].reshape(-1, 4)
    empirical = x.T @ x / len(x)
    assert float((empirical - sigma).norm() / sigma.norm()) < 0.02
    y = tokens[:, :-1, -1]
    w = torch.linalg.lstsq(tokens[:, :-1, :-1], y[..., None]).solution[..., 0]
    assert torch.allclose(tokens[:, -1, -1], (tokens[:, -1, :-1] * w).sum(-1), atol=1e-3)  # same w for the query
    assert task.describe()["x_condition"] == 20.0
    axes = make_task(TaskConfig(name="regression", x_dim=3, x_dist="normal", x_condition=10.0, x_basis_seed=None))
    assert torch.allclose(axes.x_covariance(), torch.diag(torch.diag(axes.x_covariance())))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x_condition": 10.0}, "needs task.x_dist 'normal'"),
        ({"x_dist": "normal", "x_condition": 0.5}, "x_condition"),
        ({"x_basis_seed": 4}, "needs task.x_condition"),
        ({"x_dist": "normal", "x_condition": 10.0, "x_dim": 1}, "needs x_dim >= 2"),
    ],
)
def test_bad_anisotropy_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        TaskConfig(name="regression", **kwargs)
    assert "\n" not in str(info.value).strip()


def test_input_covariance_is_orthogonal_and_geometric():
    sigma, factor = lr.input_covariance(5, 10.0, basis_seed=7)
    assert torch.allclose(factor @ factor.T, sigma)
    eig = torch.linalg.eigvalsh(sigma)
    ratios = eig[1:] / eig[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 10.0 ** 0.25))
    assert not torch.allclose(sigma, torch.diag(torch.diag(sigma)))  # rotated
    assert torch.equal(sigma, lr.input_covariance(5, 10.0, basis_seed=7)[0])


# ----- preconditioned GD ----------------------------------------------------------------------
def test_preconditioned_gd_with_eta_identity_is_plain_gd():
    _, (x, y, x_q, _, _) = anisotropic(64)
    gammas = 0.3 * torch.eye(3, dtype=F64).expand(3, 3, 3)
    assert torch.allclose(pg.pgd_prediction(x, y, x_q, gammas), lr.gd_step_prediction(x, y, x_q, 0.3, steps=3), atol=1e-12)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_constructed_lsa_is_preconditioned_gd(layers):
    _, (x, y, x_q, _, _) = anisotropic(128, n_points=7, d=3)
    gammas = 0.2 * torch.randn(layers, 3, 3, generator=generator(layers, "g"), dtype=F64)
    model = LinearSelfAttention.from_weights(pg.pgd_construction(gammas, n_points=7))
    with torch.no_grad():
        steps = model.layer_predictions(lr.tokens(x, y, x_q))
    for k in range(layers):  # by hand: w <- w - Γ_k (1/N) Σ (w·x_i - y_i) x_i
        w = torch.zeros(128, 3, dtype=F64)
        for gamma in gammas[: k + 1]:
            grad = torch.stack([sum(((w[b] @ x[b, i]) - y[b, i]) * x[b, i] for i in range(7)) / 7 for b in range(128)])
            w = w - grad @ gamma.T
        assert float((steps[k] - (w * x_q).sum(-1)).abs().max()) < 1e-12
    learned, x_update = pg.learned_preconditioners(model, n_points=7)
    assert torch.allclose(learned, gammas, atol=1e-14) and float(x_update.abs().max()) == 0.0


def test_optimal_preconditioner_matches_brute_force_and_is_not_sigma_inverse():
    sigma, (x, y, x_q, y_q, _) = anisotropic(200_000, n_points=6, d=3, noise=0.5)
    closed = pg.optimal_preconditioner(sigma, 6, noise=0.5)
    brute = pg.fit_pgd(x, y, x_q, y_q, steps=1).params[0]  # least squares on 200,000 tasks
    assert float((brute - closed).norm() / closed.norm()) < 0.03
    # Ahn et al.'s Theorem 1 form (σ = 0) and the stationarity of the exact population loss
    ahn = torch.linalg.inv(7 / 6 * sigma + torch.trace(sigma) / 6 * torch.eye(3, dtype=F64))
    assert torch.allclose(pg.optimal_preconditioner(sigma, 6), ahn)
    gamma = closed.clone().requires_grad_(True)
    hh = 7 / 6 * sigma @ sigma + torch.trace(sigma) / 6 * sigma + 0.25 / 6 * sigma
    loss = torch.trace(sigma @ gamma @ hh @ gamma.T) - 2 * torch.trace(sigma @ gamma @ sigma)
    (grad,) = torch.autograd.grad(loss, gamma)
    assert float(grad.abs().max()) < 1e-10
    assert pg.matrix_cosine(closed, torch.linalg.inv(sigma)) < 0.99


def test_population_loss_matches_monte_carlo():
    sigma, (x, y, x_q, y_q, _) = anisotropic(200_000, n_points=6, d=3, noise=0.5)
    for gamma in (pg.optimal_preconditioner(sigma, 6, noise=0.5), 0.1 * torch.eye(3, dtype=F64)):
        mc = float(0.5 * ((pg.pgd_prediction(x, y, x_q, gamma) - y_q) ** 2).mean())
        assert pg.pgd_population_loss(gamma, sigma, 6, noise=0.5) == pytest.approx(mc, rel=0.02)
    best = pg.pgd_population_loss(pg.optimal_preconditioner(sigma, 6), sigma, 6)
    assert best < pg.pgd_population_loss(0.3 * torch.linalg.inv(sigma), sigma, 6)


def test_fit_pgd_reaches_a_constructed_two_step_predictor():
    _, (x, y, x_q, _, _) = anisotropic(4096, n_points=8, d=3)
    gammas = torch.stack([0.5 * torch.eye(3, dtype=F64), torch.diag(torch.tensor([0.8, 0.3, 0.1], dtype=F64))])
    targets = pg.pgd_prediction(x, y, x_q, gammas)
    fit = pg.fit_pgd(x, y, x_q, targets, steps=2)
    assert fit.mse < 1e-8 * float((targets**2).mean())


# ----- GD++ -----------------------------------------------------------------------------------
def test_gdpp_construction_is_the_gdpp_recursion_and_gamma_zero_is_gd():
    _, (x, y, x_q, _, _) = anisotropic(64, n_points=5, d=3)
    params = torch.tensor([[0.4, 0.2], [0.3, 0.1], [0.5, 0.0]], dtype=F64)
    model = LinearSelfAttention.from_weights(pg.gdpp_construction(params, d=3, n_points=5))
    with torch.no_grad():
        built = model.predict(lr.tokens(x, y, x_q))
    # by hand, one task at a time: x <- (I - γ S) x for every token, r <- r - η (1/N) Σ r_i x_i·x_j
    for b in range(4):
        xs, r = torch.cat([x[b], x_q[b][None]]), torch.cat([y[b], torch.zeros(1, dtype=F64)])
        for eta, gamma in params:
            s = xs[:5].T @ xs[:5] / 5
            r = r - eta * (xs @ (xs[:5].T @ r[:5])) / 5
            xs = xs - gamma * xs @ s
        assert float((built[b] + r[-1]).abs()) < 1e-12
    assert float((built - pg.gdpp_prediction(x, y, x_q, params)).abs().max()) < 1e-12
    plain = pg.gdpp_prediction(x, y, x_q, torch.tensor([[0.4, 0.0]] * 3, dtype=F64))
    assert torch.allclose(plain, lr.gd_step_prediction(x, y, x_q, 0.4, steps=3), atol=1e-12)
    _, x_update = pg.learned_preconditioners(model, n_points=5)
    assert float(x_update[0]) == pytest.approx(math.sqrt(3) * 0.2 / 0.4)


def test_fit_gdpp_recovers_gdpp_predictions_and_beats_gd():
    _, (x, y, x_q, y_q, _) = anisotropic(1024, n_points=8, d=3)
    params = torch.tensor([[0.6, 0.3], [0.5, 0.0]], dtype=F64)
    targets = pg.gdpp_prediction(x, y, x_q, params)
    fit = pg.fit_gdpp(x, y, x_q, targets, steps=2)
    assert fit.mse < 1e-8 * float((targets**2).mean())
    gd = lr.fit_gd_lr(x, y, x_q, y_q, steps=2)
    assert pg.fit_gdpp(x, y, x_q, y_q, steps=2).mse <= gd.mse + 1e-12


def test_matrix_cosine():
    a = torch.randn(3, 3, generator=generator(0, "m"), dtype=F64)
    assert pg.matrix_cosine(a, 2 * a) == pytest.approx(1.0) and pg.matrix_cosine(a, -a) == pytest.approx(-1.0)


# ----- the study's --quick mode ---------------------------------------------------------------
def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_study", ANALYSES / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_quick_mode_measures_every_cell_against_every_family(tmp_path, local_ray):
    script = load_script("preconditioned_gd")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    committed = json.loads((ANALYSES / "sweeps" / "preconditioned_gd.json").read_text())
    assert committed["axes"]["task.x_condition"][0] >= 10 and len(committed["seeds"]) >= 2
    assert sorted(committed["axes"]["model.n_layers"]) == [1, 2, 3]
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["seeds"] == [0] and spec["axes"]["model.n_layers"] == script.QUICK_LAYERS
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == len(script.QUICK_LAYERS) and set(results["status"]) == {"done"}
    runs = pd.read_csv(tmp_path / "preconditioned_gd_data" / "runs.csv")
    assert sorted(runs["layers"]) == script.QUICK_LAYERS and summary["n_runs"] == len(runs)
    for family in script.FAMILIES:
        assert runs[f"dist_{family}_opt"].gt(0).all() and runs[f"cos_{family}_opt"].between(-1, 1).all()
        assert runs[f"loss_{family}_opt"].lt(runs["loss_zero"]).all()
    # the fitted families nest: PGD and GD++ contain plain GD, so they fit the model at least as well
    assert (runs["dist_PGD_fit"] <= runs["dist_GD_fit"] + 1e-9).all()
    assert (runs["dist_GD++_fit"] <= runs["dist_GD_fit"] + 1e-9).all()
    assert set(runs["closest_opt"]) <= set(script.FAMILIES) and runs["gradient_norm"].gt(0).all()
    # convergence: the gradient against its own sampling noise, and the answer 20 % earlier
    assert runs["gradient_noise"].gt(0).all() and runs["gradient_noise_ratio"].gt(0).all()
    assert runs["converged"].isin([True, False]).all()
    assert (runs["step_80%"] == 48).all() and (runs["final_step"] == 60).all()  # checkpoints every 12
    assert set(runs["closest_opt_80%"]) <= set(script.FAMILIES)
    assert (runs["verdict_same_at_80%"] == (runs["closest_opt_80%"] == runs["closest_opt"])).all()
    layers = pd.read_csv(tmp_path / "preconditioned_gd_data" / "layers.csv")
    assert len(layers) == sum(script.QUICK_LAYERS)
    verdicts = pd.DataFrame(summary["verdicts"])
    assert list(verdicts["layers"]) == script.QUICK_LAYERS
    theory = pd.DataFrame(summary["theory"])
    assert theory["what"].str.startswith("closed-form").sum() == 1
    assert (tmp_path / "preconditioned_gd.html").read_text().count("<section") == 6


def test_gradient_check_tells_the_optimum_from_a_point_beside_it():
    """The study's convergence check against a point whose answer is known: the 1-layer LSA built
    with the closed-form optimum Γ* is the population optimum of one PGD step (w ~ N(0, I), no
    noise), so its gradient on fresh tasks is sampling noise (ratio near 1); at 0.8 Γ* a real
    gradient remains (ratio far above 1). The same tasks for both."""
    script = load_script("preconditioned_gd")
    task = make_task(TaskConfig(name="regression", x_dim=3, n_points=7, x_dist="normal", x_condition=10.0))
    gamma = pg.optimal_preconditioner(task.x_covariance(), 7)
    ratios = {}
    for scale in (1.0, 0.8):
        model = LinearSelfAttention.from_weights(pg.pgd_construction(scale * gamma, n_points=7)).double()
        ratios[scale] = script.gradient_check(model, task, 65536)["gradient_noise_ratio"]
    assert ratios[1.0] < script.NOISE_RATIO_CONVERGED < 10 < ratios[0.8]


def test_closest_family_reads_a_tie_as_the_simpler_family():
    script = load_script("preconditioned_gd")
    assert script.closest_family({"GD": 0.5, "PGD": 0.2, "GD++": 0.3}) == "PGD"
    assert script.closest_family({"GD": 0.59, "PGD": 0.64, "GD++": 0.59 * (1 - 1e-9)}) == "GD"  # 1 layer: GD++ is GD
    assert script.closest_family({"GD": 0.5, "PGD": 0.2, "GD++": 0.19}) == "GD++"
