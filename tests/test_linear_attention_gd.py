"""Linear self-attention against its formula, the GD construction against GD, and the GD tools
against independent closed forms (REFERENCE §5)."""

import math

import pytest
import torch

from interp_icl.errors import InterpICLError, TokenError
from interp_icl.models.linear_attention import LinearAttentionConfig, LinearSelfAttention
from interp_icl.theory import linear_regression_gd as lr
from interp_icl.seeding import generator

F64 = torch.float64


def _task(seed, n_tasks, n_points, d, **kw):
    return lr.sample_regression(n_tasks, n_points, d, generator(seed, "lsa-test"), dtype=F64, **kw)


def _w0(seed, d):
    return torch.randn(d, generator=generator(seed, "w0"), dtype=F64)


def _random_model(d, n_layers, seed=0, **kw):
    cfg = LinearAttentionConfig(d_x=d, n_layers=n_layers, init_variance=float(d + 1), **kw)
    return LinearSelfAttention(cfg, generator(seed, "lsa-init")).to(F64)


def _naive_forward(model, e):
    """e_j <- e_j + P c sum_i (W_V e_i)(W_K e_i)^T (W_Q e_j), written as loops over tokens."""
    e = e.clone()
    seq = e.shape[1]
    keys = range(seq) if model.cfg.include_query else range(seq - 1)
    c = 1.0 / (seq - 1) if model.cfg.normalize else 1.0
    for layer in range(model.cfg.n_layers):
        w = {k: v.detach() for k, v in model.layer_weights(layer).items()}
        new = e.clone()
        for b in range(e.shape[0]):
            for j in range(seq):
                acc = torch.zeros(e.shape[-1], dtype=e.dtype)
                for i in keys:
                    acc += (w["W_V"] @ e[b, i]) * torch.dot(w["W_K"] @ e[b, i], w["W_Q"] @ e[b, j])
                new[b, j] = e[b, j] + c * (w["P"] @ acc)
        e = new
    return e


# ----- the model ------------------------------------------------------------------------------
@pytest.mark.parametrize("include_query", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_forward_matches_formula(include_query, normalize):
    model = _random_model(3, 2, include_query=include_query, normalize=normalize, d_head=2)
    s = _task(0, 3, 5, 3)
    e = lr.tokens(s.x, s.y, s.x_q)
    out = model(e)
    assert torch.allclose(out, _naive_forward(model, e), atol=1e-12, rtol=1e-12)
    assert torch.equal(model.predict(e), -out[:, -1, -1])
    assert torch.allclose(model.layer_predictions(e)[-1], model.predict(e), atol=0, rtol=0)


def test_hooks_and_mask():
    model = _random_model(4, 2)
    s = _task(1, 6, 7, 4)
    e = lr.tokens(s.x, s.y, s.x_q)
    _, cache = model.run_with_cache(e)
    T, D = 8, 5
    shapes = {
        "hook_resid_pre": (6, T, D),
        "attn.hook_q": (6, T, 1, D),
        "attn.hook_k": (6, T, 1, D),
        "attn.hook_v": (6, T, 1, D),
        "attn.hook_attn_scores": (6, 1, T, T),
        "attn.hook_pattern": (6, 1, T, T),
        "attn.hook_z": (6, T, 1, D),
        "hook_attn_out": (6, T, D),
        "hook_resid_post": (6, T, D),
    }
    for layer in range(2):
        for name, shape in shapes.items():
            assert tuple(cache[f"blocks.{layer}.{name}"].shape) == shape
        # the query is excluded as a key/value: its column of the scores is zero
        assert torch.all(cache[f"blocks.{layer}.attn.hook_attn_scores"][..., -1] == 0)

    # patching the query's value changes nothing; patching a context value changes the output
    def zero_pos(pos):
        def hook(v, hook):
            v = v.clone()
            v[:, pos] = 0
            return v

        return hook

    base = model.predict(e)
    same = model.run_with_hooks(e, fwd_hooks=[("blocks.0.attn.hook_v", zero_pos(-1))])
    other = model.run_with_hooks(e, fwd_hooks=[("blocks.0.attn.hook_v", zero_pos(0))])
    assert torch.equal(-same[:, -1, -1], base)
    assert not torch.allclose(-other[:, -1, -1], base)
    cfg = model.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head) == (2, 1, 5, 5)


def test_init_is_seeded_and_small():
    cfg = LinearAttentionConfig(d_x=10, n_layers=2)
    a = LinearSelfAttention(cfg, generator(3, "init"))
    b = LinearSelfAttention(cfg, generator(3, "init"))
    c = LinearSelfAttention(cfg, generator(4, "init"))
    assert torch.equal(a.W_V, b.W_V) and not torch.equal(a.W_V, c.W_V)
    assert torch.equal(LinearSelfAttention(cfg).P, LinearSelfAttention(cfg).P)  # default seed
    expected = math.sqrt(0.002 / (2 * 11))
    assert a.W_Q.std().item() == pytest.approx(expected, rel=0.15)
    tied = LinearSelfAttention(LinearAttentionConfig(d_x=2, n_layers=3, tied=True))
    assert tied.W_Q.shape == (1, 3, 3) and len(tied.blocks) == 3


def test_bad_input_and_weights():
    model = _random_model(3, 1)
    with pytest.raises(TokenError):
        model(torch.zeros(2, 5, 3, dtype=F64))  # d + 1 = 4 entries expected
    with pytest.raises(TokenError):
        model(torch.zeros(2, 5, 4, dtype=torch.long))
    with pytest.raises(TokenError):
        model(torch.zeros(2, 1, 4, dtype=F64))  # no context
    weights = lr.gd_construction(3, 0.1, n_points=5)
    with pytest.raises(InterpICLError):
        LinearSelfAttention.from_weights({k: v for k, v in weights.items() if k != "P"})
    with pytest.raises(InterpICLError):
        LinearSelfAttention.from_weights({**weights, "W_V": torch.zeros(3, 3, dtype=F64)})
    stacked = {k: torch.stack([v, v]) for k, v in weights.items()}
    with pytest.raises(InterpICLError):
        LinearSelfAttention.from_weights(stacked, n_layers=3)


# ----- the GD construction --------------------------------------------------------------------
CASES = [(1, 5, 0.1), (3, 10, 0.5), (10, 10, 1.0), (5, 40, 0.8), (8, 3, 0.3)]


@pytest.mark.parametrize("d,n,eta", CASES)
def test_construction_is_one_gd_step(d, n, eta):
    s = _task(d * 100 + n, 128, n, d)
    w0 = _w0(d, d)
    truth = lr.gd_step_prediction(s.x, s.y, s.x_q, eta, w0)
    e = lr.tokens(s.x, s.y, s.x_q, w0)
    weights = lr.gd_construction(d, eta, w0, n_points=n)
    model64 = LinearSelfAttention.from_weights(weights)
    assert model64.W_Q.dtype == F64
    assert (model64.predict(e) - truth).abs().max().item() <= 1e-12
    # float32: the same tasks rounded to float32, GD computed exactly on the rounded tasks
    model32 = LinearSelfAttention.from_weights({k: v.float() for k, v in weights.items()})
    e32 = e.float()
    x32, y32, xq32 = e32[:, :-1, :-1].double(), e32[:, :-1, -1].double(), e32[:, -1, :-1].double()
    truth32 = lr.gd_step_prediction(x32, y32, xq32, eta, weights["W_V"][-1, :-1].float().double())
    assert (model32.predict(e32).double() - truth32).abs().max().item() <= 1e-6
    # every context token's y-slot becomes y_j - (W_1 - W_0) x_j; the x-slots are untouched
    delta = lr.gd_weights(s.x, s.y, eta, w0) - w0
    out = model64(e)
    assert torch.allclose(out[:, :-1, -1], s.y - torch.einsum("bnd,bd->bn", s.x, delta), atol=1e-12)
    assert torch.equal(out[..., :-1], e[..., :-1])


def test_construction_normalized_variant():
    s = _task(5, 64, 7, 4)
    w0 = _w0(5, 4)
    weights = lr.gd_construction(4, 0.4, w0, n_points=7, normalize=True)
    model = LinearSelfAttention.from_weights(weights, normalize=True)
    truth = lr.gd_step_prediction(s.x, s.y, s.x_q, 0.4, w0)
    assert (model.predict(lr.tokens(s.x, s.y, s.x_q, w0)) - truth).abs().max().item() <= 1e-12


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_stacked_construction_is_k_gd_steps(steps):
    d, n, eta = 4, 12, 0.6
    s = _task(steps, 64, n, d)
    w0 = _w0(steps, d)
    weights = lr.gd_construction(d, eta, w0, n_points=n)
    e = lr.tokens(s.x, s.y, s.x_q, w0)
    tied = LinearSelfAttention.from_weights(weights, n_layers=steps)
    untied = LinearSelfAttention.from_weights(
        {k: torch.stack([v] * steps) for k, v in weights.items()}
    )
    assert tied.cfg.tied and not untied.cfg.tied
    per_layer = tied.layer_predictions(e)
    for k in range(1, steps + 1):
        truth = lr.gd_step_prediction(s.x, s.y, s.x_q, eta, w0, steps=k)
        assert (per_layer[k - 1] - truth).abs().max().item() <= 1e-12
    assert torch.allclose(untied.predict(e), per_layer[-1], atol=1e-12, rtol=0)


def test_including_the_query_breaks_the_second_step():
    d, n, eta = 3, 8, 0.5
    s = _task(7, 32, n, d)
    weights = lr.gd_construction(d, eta, n_points=n)
    e = lr.tokens(s.x, s.y, s.x_q)
    model = LinearSelfAttention.from_weights(weights, n_layers=2, include_query=True)
    layer_preds = model.layer_predictions(e)
    # from W_0 = 0 the query's value is 0 in layer 1, so one step is still exact ...
    one = lr.gd_step_prediction(s.x, s.y, s.x_q, eta)
    assert (layer_preds[0] - one).abs().max().item() <= 1e-12
    # ... but afterwards the query's own (nonzero) value enters the sum
    two = lr.gd_step_prediction(s.x, s.y, s.x_q, eta, steps=2)
    assert (layer_preds[1] - two).abs().max().item() > 1e-3


# ----- gradient descent and baselines against independent computations ------------------------
def test_gd_gradient_matches_autograd():
    s = _task(11, 16, 9, 5)
    w = torch.randn(16, 5, dtype=F64, generator=generator(11, "w")).requires_grad_(True)
    loss = ((torch.einsum("bnd,bd->bn", s.x, w) - s.y) ** 2).sum(-1) / (2 * s.x.shape[1])
    (auto,) = torch.autograd.grad(loss.sum(), w)
    assert torch.allclose(lr.gd_gradient(s.x, s.y, w.detach()), auto, atol=1e-13, rtol=0)


def test_least_squares_and_ridge():
    s = _task(12, 64, 15, 6)  # N > d, no noise: least squares recovers w exactly
    assert torch.allclose(lr.least_squares_prediction(s.x, s.y, s.x_q), s.y_q, atol=1e-10)
    noise, w_scale = 0.5, 1.5
    s = _task(13, 64, 4, 6, noise=noise, w_scale=w_scale)  # N < d
    lam = lr.bayes_ridge_lambda(noise, w_scale)
    assert lam == pytest.approx(noise**2 / w_scale**2)
    ridge = lr.ridge_prediction(s.x, s.y, s.x_q, lam)
    # posterior mean in the dual (Gaussian conditioning) form: τ² Xᵀ (τ² X Xᵀ + σ² I)⁻¹ y
    cov_y = w_scale**2 * s.x @ s.x.transpose(1, 2) + noise**2 * torch.eye(4, dtype=F64)
    post = w_scale**2 * torch.einsum("bnd,bn->bd", s.x, torch.linalg.solve(cov_y, s.y))
    assert torch.allclose(ridge, (post * s.x_q).sum(-1), atol=1e-12, rtol=0)
    # λ -> 0⁺ ridge is the minimum-norm least-squares fit
    tiny = lr.ridge_prediction(s.x, s.y, s.x_q, 1e-9)
    assert torch.allclose(tiny, lr.least_squares_prediction(s.x, s.y, s.x_q), atol=1e-6)


# ----- comparison measures and learning-rate fitting ------------------------------------------
def test_prediction_difference():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert lr.prediction_difference(a, a) == (0.0, 0.0)
    diff = lr.prediction_difference(a + torch.tensor([0.0, 0.0, 0.3]), a)
    assert diff.mean_abs == pytest.approx(0.1)
    assert diff.relative_l2 == pytest.approx(0.3 / math.sqrt(14))


def test_sensitivity_of_construction_and_gd():
    d, n, eta = 5, 10, 0.7
    s = _task(21, 64, n, d)
    w0 = _w0(21, d)
    model = LinearSelfAttention.from_weights(lr.gd_construction(d, eta, w0, n_points=n))
    gd = lr.gd_predictor(eta, w0)
    # ∂ŷ_GD/∂x_q = W_1 for one step (independent closed form)
    grad = lr.prediction_gradient(gd, s.x, s.y, s.x_q)
    assert torch.allclose(grad, lr.gd_weights(s.x, s.y, eta, w0), atol=1e-13, rtol=0)
    model_grad = lr.prediction_gradient(lr.lsa_predictor(model, w0), s.x, s.y, s.x_q)
    assert torch.allclose(model_grad, grad, atol=1e-12, rtol=0)
    assert lr.sensitivity_cosine(lr.lsa_predictor(model, w0), gd, s.x, s.y, s.x_q) == pytest.approx(
        1.0, abs=1e-9
    )
    # not vacuous: GD and least squares point in different directions
    cos = lr.sensitivity_cosine(lr.least_squares_prediction, gd, s.x, s.y, s.x_q)
    assert cos < 0.99


def test_closed_form_lr_recovers_construction():
    d, n, eta = 6, 10, 0.37
    w0 = _w0(31, d)
    model = LinearSelfAttention.from_weights(lr.gd_construction(d, eta, w0, n_points=n))
    fresh = _task(32, 256, n, d)  # tasks the construction was not built from
    fit = lr.tune_gd_lr(lr.lsa_predictor(model, w0), fresh, w0=w0)
    assert fit.method == "closed_form"
    assert fit.eta == pytest.approx(eta, abs=1e-10)
    assert fit.mse < 1e-24


def test_line_search_lr_recovers_stacked_construction():
    d, n, eta = 4, 10, 0.9
    model = LinearSelfAttention.from_weights(lr.gd_construction(d, eta, n_points=n), n_layers=2)
    fresh = _task(33, 256, n, d)
    fit = lr.tune_gd_lr(lr.lsa_predictor(model), fresh, steps=2)
    assert fit.method == "grid+golden" and not fit.at_boundary
    assert fit.eta == pytest.approx(eta, abs=1e-6)


def test_optimal_lr_minimises_query_loss():
    s = _task(34, 512, 10, 3, noise=0.1)
    fit = lr.optimal_gd_lr(s)
    assert fit.eta > 0

    def loss(eta, steps=1):
        pred = lr.gd_step_prediction(s.x, s.y, s.x_q, eta, steps=steps)
        return float(((pred - s.y_q) ** 2).mean())

    assert fit.mse == pytest.approx(loss(fit.eta))
    assert all(fit.mse <= loss(fit.eta + delta) for delta in (-0.05, -1e-3, 1e-3, 0.05))
    search = lr.optimal_gd_lr(s, steps=2)
    assert search.mse == pytest.approx(loss(search.eta, 2))
    assert all(search.mse <= loss(search.eta + delta, 2) for delta in (-0.05, -1e-3, 1e-3, 0.05))


# ----- the task sampler -----------------------------------------------------------------------
def test_sampler_shapes_and_seeding():
    s = lr.sample_regression(7, 10, 3, generator(0, "reg"))
    assert [tuple(t.shape) for t in s] == [(7, 10, 3), (7, 10), (7, 3), (7,), (7, 3)]
    assert all(t.dtype == torch.float32 for t in s)
    again = lr.sample_regression(7, 10, 3, generator(0, "reg"))
    other = lr.sample_regression(7, 10, 3, generator(0, "reg2"))
    assert all(torch.equal(a, b) for a, b in zip(s, again))
    assert not torch.equal(s.x, other.x)
    assert torch.allclose(s.y, torch.einsum("bnd,bd->bn", s.x, s.w))  # noise-free by default
    assert torch.allclose(s.y_q, (s.x_q * s.w).sum(-1))


def test_sampler_distributions():
    u = lr.sample_regression(2000, 10, 3, generator(1, "reg"), x_scale=0.5, dtype=F64)
    assert u.x.abs().max() <= 0.5 and u.x_q.abs().max() <= 0.5
    assert u.x.var().item() == pytest.approx(0.25 / 3, rel=0.05)  # U(-a, a): a²/3
    assert u.w.var().item() == pytest.approx(1.0, rel=0.1)
    g = lr.sample_regression(
        2000, 10, 3, generator(2, "reg"), x_dist="normal", noise=0.3, dtype=F64
    )
    assert g.x.var().item() == pytest.approx(1.0, rel=0.05)
    residual = g.y - torch.einsum("bnd,bd->bn", g.x, g.w)
    assert residual.std().item() == pytest.approx(0.3, rel=0.05)
    with pytest.raises(InterpICLError):
        lr.sample_regression(2, 3, 1, generator(0, "x"), x_dist="cauchy")
    with pytest.raises(InterpICLError):
        lr.sample_regression(2, 0, 1, generator(0, "x"))


def test_tokens_layout():
    s = _task(40, 3, 4, 2)
    w0 = torch.tensor([0.5, -1.0], dtype=F64)
    e = lr.tokens(s.x, s.y, s.x_q, w0)
    assert tuple(e.shape) == (3, 5, 3)
    assert torch.equal(e[:, :-1, :-1], s.x) and torch.equal(e[:, :-1, -1], s.y)
    assert torch.equal(e[:, -1, :-1], s.x_q)
    assert torch.allclose(e[:, -1, -1], -(s.x_q @ w0))
    assert torch.all(lr.tokens(s.x, s.y, s.x_q)[:, -1, -1] == 0)
