"""The phenomenological loss of abrupt in-context learning (REFERENCE §3): the source text's
form (the default) against a loss built independently from the source's definitions, autograd
and finite differences, and the claims about its gradient flow; then the named variant
``n_minus_1_reconstruction`` (the project's earlier reconstruction) with its own tests."""

import itertools
import math

import pandas as pd
import pytest
import torch

from interp_icl.errors import InterpICLError
from interp_icl.theory import abrupt_learning as al

F64 = torch.float64
SIZES = [(2, 2), (2, 5), (3, 3), (3, 10), (5, 7), (8, 8), (8, 9), (8, 32), (16, 512)]


def _old_brute_force_loss(beta, alpha, xi, n_items, n_labels):
    """The named variant's three nested softmaxes written out: a 2-way softmax (layer 1), an
    N-way softmax over the context labels (layer 2), an L-way softmax over all labels (readout);
    label 0 is correct."""
    beta, alpha, xi = (torch.tensor(float(v), dtype=F64) for v in (beta, alpha, xi))
    sigma = torch.softmax(torch.stack([beta, torch.zeros((), dtype=F64)]), 0)[0]
    scores = torch.zeros(n_items, dtype=F64)
    scores[0] = alpha * sigma
    attention = torch.softmax(scores, 0)  # target -> each context label
    logits = torch.zeros(n_labels, dtype=F64)  # labels n_items.. are absent from the context
    logits[:n_items] = xi * attention
    return float(-torch.log_softmax(logits, 0)[0])


def _random_points(seed, n, scale=(4.0, 8.0, 20.0)):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, generator=g, dtype=F64) * 2 - 1) * s for s in scale]

def _check_gradient_by_finite_differences(gradient, loss, seed: int, h: float = 1e-5) -> None:
    """`gradient(β, α, ξ, N, L)` equals central differences of `loss` (an independent build of
    the same ℒ) at 6 random points for three (N, L), to 1e-8."""
    for n_items, n_labels in [(3, 10), (8, 32), (8, 8)]:
        for b, a, x in zip(*_random_points(seed, 6, scale=(2.0, 4.0, 8.0)), strict=True):
            point = [float(b), float(a), float(x)]
            closed = gradient(*point, n_items, n_labels)
            for i, name in enumerate(al.PARAMETERS):
                up, down = list(point), list(point)
                up[i] += h
                down[i] -= h
                numeric = (loss(*up, n_items, n_labels) - loss(*down, n_items, n_labels)) / (2 * h)
                assert float(getattr(closed, name)) == pytest.approx(numeric, abs=1e-8), name



def _first_step(trajectory, mask):
    hit = trajectory.loc[mask, "step"]
    return int(hit.iloc[0]) if len(hit) else None


OLD = al.N_MINUS_1_RECONSTRUCTION


def old_loss(*args, **kwargs):
    return al.loss(*args, variant=OLD, **kwargs)


def old_gradient(*args, **kwargs):
    return al.gradient(*args, variant=OLD, **kwargs)


def old_gradient_flow(*args, **kwargs):
    return al.gradient_flow(*args, variant=OLD, **kwargs)


def old_label_attention(*args, **kwargs):
    return al.label_attention(*args, variant=OLD, **kwargs)


def old_landscape(*args, **kwargs):
    return al.landscape(*args, variant=OLD, **kwargs)


def _source_loss_from_definitions(beta, alpha, xi, n_items, n_labels):
    """The source's model built from its definitions, without the closed form: y = sigmoid(β)
    (the reconstructed part); the target's layer-2 softmax over 2N + 1 tokens (its copy with
    logit αy, the 2N − 1 other context tokens and itself with logit 0), whose weights are the
    source's z and z′; the buffer z ℓ_t + z′ Σ_{i≠t} ℓ_i over one-hot labels ℓ (label 0 is the
    target's, labels 1..N−1 the other context labels, N..L−1 absent); readout logits ξ times
    each label's overlap with the buffer; cross-entropy of label 0 over the L labels."""
    beta, alpha, xi = (torch.tensor(float(v), dtype=F64) for v in (beta, alpha, xi))
    y = torch.sigmoid(beta)
    scores = torch.zeros(2 * n_items + 1, dtype=F64)
    scores[0] = alpha * y  # token 0: the target's copy
    attention = torch.softmax(scores, 0)
    z, z_other = attention[0], attention[1]
    w = torch.exp(alpha * y)
    assert float(z) == pytest.approx(float(w / (w + 2 * n_items)), rel=1e-12)
    assert float(z_other) == pytest.approx(float(1 / (2 * n_items + w)), rel=1e-12)
    labels = torch.eye(n_labels, dtype=F64)
    buffer = z * labels[0] + z_other * labels[1:n_items].sum(0)
    logits = xi * (labels @ buffer)
    return float(-torch.log_softmax(logits, 0)[0])


def _source_loss_from_u(beta, alpha, xi, n_items, n_labels):
    """ℒ = log[1 + (N − 1) e^{−u} + (L − N) e^{−u′}] with the source's u, u′ written naively."""
    w = math.exp(alpha / (1 + math.exp(-beta)))
    u = xi * (w - 1) / (w + 2 * n_items)
    u_prime = xi * w / (w + 2 * n_items)
    return math.log(1 + (n_items - 1) * math.exp(-u) + (n_labels - n_items) * math.exp(-u_prime))


# ----- the source's form: closed forms --------------------------------------------------------
def test_source_is_the_default():
    assert al.VARIANTS == ("source", "n_minus_1_reconstruction") and al.SOURCE == "source"
    point = (0.3, 1.7, 2.5, 8, 32)
    assert float(al.loss(*point)) == float(al.loss(*point, variant="source"))
    assert float(al.loss(*point)) != pytest.approx(float(old_loss(*point)), rel=1e-3)
    with pytest.raises(InterpICLError, match="variant"):
        al.loss(*point, variant="n-1")


@pytest.mark.parametrize(("n_items", "n_labels"), [(2, 2), (3, 10), (8, 8), (8, 32), (5, 7)])
def test_source_loss_equals_the_loss_built_from_the_definitions(n_items, n_labels):
    beta, alpha, xi = _random_points(11, 40)
    vectorised = al.loss(beta, alpha, xi, n_items, n_labels)
    assert vectorised.shape == (40,) and vectorised.dtype == F64
    for b, a, x, value in zip(beta, alpha, xi, vectorised, strict=True):
        built = _source_loss_from_definitions(b, a, x, n_items, n_labels)
        assert float(value) == pytest.approx(built, rel=1e-12, abs=1e-13)
        naive = _source_loss_from_u(float(b), float(a), float(x), n_items, n_labels)
        assert float(value) == pytest.approx(naive, rel=1e-11, abs=1e-13)


@pytest.mark.parametrize(("n_items", "n_labels"), SIZES)
def test_source_loss_at_origin_is_log_L(n_items, n_labels):
    value = float(al.loss(0.0, 0.0, 0.0, n_items, n_labels))
    assert value == pytest.approx(math.log(n_labels), abs=1e-14)
    built = _source_loss_from_definitions(0, 0, 0, n_items, n_labels)
    assert built == pytest.approx(value, abs=1e-14)
    attention = float(al.label_attention(0.0, 0.0, n_items))
    assert attention == pytest.approx(1 / (2 * n_items + 1), rel=1e-15)


@pytest.mark.parametrize(("n_items", "n_labels"), SIZES)
def test_source_gradient_at_origin(n_items, n_labels):
    """∂ℒ/∂α = ∂ℒ/∂β = 0 and ∂ℒ/∂ξ = −(L − N)/((2N + 1)L), zero iff L = N (REFERENCE §3)."""
    d = al.gradient(0.0, 0.0, 0.0, n_items, n_labels)
    assert float(d.beta) == 0.0 and float(d.alpha) == 0.0
    expected = -(n_labels - n_items) / ((2 * n_items + 1) * n_labels)
    assert float(d.xi) == pytest.approx(expected, rel=1e-13, abs=1e-300)
    assert (float(d.xi) == 0.0) == (n_labels == n_items)  # exactly 0 iff L = N


@pytest.mark.parametrize(("n_items", "n_labels"), SIZES)
def test_source_closed_form_gradient_equals_autograd(n_items, n_labels):
    beta, alpha, xi = (t.clone().requires_grad_(True) for t in _random_points(12, 200))
    value = al.loss(beta, alpha, xi, n_items, n_labels)
    auto = torch.autograd.grad(value.sum(), (beta, alpha, xi))
    closed = al.gradient(beta.detach(), alpha.detach(), xi.detach(), n_items, n_labels)
    for name, a, c in zip(al.PARAMETERS, auto, closed, strict=True):
        assert torch.allclose(c, a, rtol=1e-10, atol=1e-13), name


def test_source_closed_form_gradient_equals_central_differences():
    """Independent of autograd and of the implementation: finite differences of the loss built
    from the definitions."""
    _check_gradient_by_finite_differences(al.gradient, _source_loss_from_definitions, seed=13)


def test_source_is_finite_at_extreme_parameters():
    big = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=F64)
    beta, alpha, xi = torch.meshgrid(big / 100, big, big / 10, indexing="ij")
    assert torch.isfinite(al.loss(beta, alpha, xi, 8, 32)).all()
    assert all(torch.isfinite(g).all() for g in al.gradient(beta, alpha, xi, 8, 32))
    assert al.loss(beta, alpha, xi, 8, 32).shape == (5, 5, 5)


# ----- the source's form: limits --------------------------------------------------------------
@pytest.mark.parametrize(("n_items", "n_labels"), [(8, 8), (8, 32), (3, 10)])
def test_source_alpha_zero_plane_is_the_context_label_plateau(n_items, n_labels):
    """α = 0: u = 0, ℒ = log[N + (L − N) e^{−ξ/(2N+1)}], from log L down to log N as ξ → ∞;
    flat at log N when L = N, whatever β, and a saddle there (α is pushed once ξ ≠ 0)."""
    for beta in (-2.0, 0.0, 3.0):
        for xi in (0.0, 1.0, 10.0, 100.0):
            closed = math.log(n_items + (n_labels - n_items) * math.exp(-xi / (2 * n_items + 1)))
            value = float(al.loss(beta, 0.0, xi, n_items, n_labels))
            assert value == pytest.approx(closed, rel=1e-13)
    assert float(al.loss(0.0, 0.0, 1e4, n_items, n_labels)) == pytest.approx(
        math.log(n_items), rel=1e-12
    )
    if n_labels == n_items:
        flat = al.gradient(1.0, 0.0, torch.tensor([0.5, 5.0, 50.0], dtype=F64), n_items, n_labels)
        assert torch.equal(flat.xi, torch.zeros(3, dtype=F64))
        assert torch.equal(flat.beta, torch.zeros(3, dtype=F64))
        assert (flat.alpha < 0).all()


def test_source_in_context_limit_loss_goes_to_zero():
    """ξ → ∞ with α > 0: ℒ → (N − 1) e^{−u} + (L − N) e^{−u′} → 0."""
    n_items, n_labels, beta, alpha = 8, 32, 3.0, 12.0
    values = [float(al.loss(beta, alpha, xi, n_items, n_labels)) for xi in (5, 10, 20, 40, 80)]
    assert all(b < a for a, b in itertools.pairwise(values))
    w = math.exp(alpha / (1 + math.exp(-beta)))
    for xi in (80.0, 400.0):
        u, u_prime = xi * (w - 1) / (w + 2 * n_items), xi * w / (w + 2 * n_items)
        asymptote = (n_items - 1) * math.exp(-u) + (n_labels - n_items) * math.exp(-u_prime)
        assert float(al.loss(beta, alpha, xi, n_items, n_labels)) == pytest.approx(
            asymptote, rel=1e-6
        )
    assert float(al.loss(-3.0, 0.5, 1e6, n_items, n_labels)) < 1e-100


# ----- the source's form: gradient flow -------------------------------------------------------
@pytest.fixture(scope="module")
def flow_8_32():
    return al.gradient_flow((0.0, 0.0, 0.0), 8, 32, lr=0.1, steps=3000, record_every=1)


def test_source_flow_grows_xi_then_alpha_then_beta(flow_8_32):
    """N = 8, L = 32 from the origin (lr 0.1): rise steps at threshold 0.1 are ξ 23, α 128,
    β 296; the loss falls monotonically from log 32 to below 0.005 in 3000 steps."""
    for threshold in (0.01, 0.1, 0.5, 1.0):
        growth = al.growth_order(flow_8_32, threshold)
        assert growth["order"] == ["xi", "alpha", "beta"], (threshold, growth)
        assert growth["matches_expected_order"] is True
    assert al.growth_order(flow_8_32, 0.1)["rise_step"] == {"xi": 23, "alpha": 128, "beta": 296}
    loss = flow_8_32["loss"].to_numpy()
    assert loss[0] == pytest.approx(math.log(32), abs=1e-14)
    assert (loss[1:] - loss[:-1] <= 1e-15).all()
    assert loss[-1] < 0.005


def test_source_flow_drop_is_abrupt(flow_8_32):
    """Slow while ξ alone grows, then a cliff after β has grown: the steepest per-step fall
    (step 448) is over 300 times the first step's."""
    fall = -flow_8_32["loss"].diff().iloc[1:]
    assert fall.max() > 300 * fall.iloc[0]
    steepest = int(flow_8_32["step"].iloc[fall.idxmax()])
    assert steepest > al.growth_order(flow_8_32, 0.1)["rise_step"]["beta"]


def test_source_growth_order_is_robust_near_the_origin():
    g = torch.Generator().manual_seed(14)
    for n_items, n_labels in [(2, 32), (8, 9), (8, 32)]:
        init = ((torch.rand(3, generator=g, dtype=F64) * 2 - 1) * 1e-3).tolist()
        trajectory = al.gradient_flow(init, n_items, n_labels, lr=0.1, steps=3000, record_every=10)
        growth = al.growth_order(trajectory, 0.1)
        assert growth["order"] == ["xi", "alpha", "beta"], (n_items, n_labels, growth)


def test_source_L_equals_N_from_the_origin_learns_nothing():
    trajectory = al.gradient_flow((0.0, 0.0, 0.0), 8, 8, lr=0.1, steps=3000, record_every=50)
    assert (trajectory[list(al.PARAMETERS)] == 0.0).all().all()
    assert (trajectory["loss"] == trajectory["loss"].iloc[0]).all()
    assert trajectory["loss"].iloc[0] == pytest.approx(math.log(8), abs=1e-15)
    shifted = al.gradient_flow((0.7, 0.0, 0.0), 8, 8, lr=0.1, steps=500, record_every=50)
    assert (shifted[["alpha", "xi"]] == 0.0).all().all() and (shifted["beta"] == 0.7).all()
    growth = al.growth_order(trajectory, 0.1)
    assert growth["order"] == [] and growth["matches_expected_order"] is None


def test_source_L_equals_N_saddle_escape_rate():
    """L = N, ξ(0) = ε: ℒ ≈ log N − c αξ near the origin (β = 0), c = (N − 1)/(2N(2N + 1)), so
    each factor 1000 in ε delays the escape by log(1000)/(lr c) steps (1342 at N = 8, lr 0.2)."""
    n, lr = 8, 0.2
    half_log_n = 0.5 * math.log(n)
    escapes = {}
    for eps in (1e-2, 1e-5):
        trajectory = al.gradient_flow((0.0, 0.0, eps), n, n, lr=lr, steps=2600, record_every=1)
        escapes[eps] = _first_step(trajectory, trajectory["loss"] < half_log_n)
        assert escapes[eps] is not None
    rate_per_step = lr * (n - 1) / (2 * n * (2 * n + 1))
    predicted = math.log(1e3) / rate_per_step
    assert escapes[1e-5] - escapes[1e-2] == pytest.approx(predicted, rel=0.02)


def test_source_landscape_and_variant_argument():
    grid = al.landscape(8, 32, x="alpha", y="xi", fixed_value=0.5, resolution=5)
    row = grid.iloc[13]
    assert row["loss"] == pytest.approx(
        float(al.loss(row["beta"], row["alpha"], row["xi"], 8, 32)), rel=1e-15
    )
    old = old_landscape(8, 32, x="alpha", y="xi", fixed_value=0.5, resolution=5)
    assert old["loss"].iloc[13] == pytest.approx(
        float(old_loss(row["beta"], row["alpha"], row["xi"], 8, 32)), rel=1e-15
    )
    assert float(al.label_attention(0.0, 2.0, 8)) == pytest.approx(
        math.exp(1.0) / (math.exp(1.0) + 16), rel=1e-14
    )
    assert float(old_label_attention(0.0, 2.0, 8)) == pytest.approx(
        math.exp(1.0) / (math.exp(1.0) + 7), rel=1e-14
    )


# ----- the named variant: closed forms ---------------------------------------------------------------------------
@pytest.mark.parametrize(("n_items", "n_labels"), SIZES)
def test_n_minus_1_gradient_at_origin_is_zero_zero_one_over_L_minus_one_over_N(n_items, n_labels):
    d = old_gradient(0.0, 0.0, 0.0, n_items, n_labels)
    assert float(d.beta) == 0.0 and float(d.alpha) == 0.0
    assert abs(float(d.xi) - (1 / n_labels - 1 / n_items)) < 1e-12
    if n_labels == n_items:
        assert float(d.xi) == 0.0  # exactly: no gradient at all, nothing can be learned


@pytest.mark.parametrize(("n_items", "n_labels"), SIZES)
def test_n_minus_1_loss_at_origin_is_log_L(n_items, n_labels):
    # every logit is 0 at the origin: all L labels equally likely
    value = float(old_loss(0.0, 0.0, 0.0, n_items, n_labels))
    assert value == pytest.approx(math.log(n_labels), abs=1e-14)
    assert _old_brute_force_loss(0, 0, 0, n_items, n_labels) == pytest.approx(value, abs=1e-14)
    assert float(old_label_attention(0.0, 0.0, n_items)) == pytest.approx(1 / n_items, abs=1e-16)


@pytest.mark.parametrize(("n_items", "n_labels"), [(2, 2), (3, 10), (8, 8), (8, 32)])
def test_n_minus_1_loss_matches_the_nested_softmaxes_written_out(n_items, n_labels):
    beta, alpha, xi = _random_points(1, 40)
    vectorised = old_loss(beta, alpha, xi, n_items, n_labels)
    assert vectorised.shape == (40,) and vectorised.dtype == F64
    for b, a, x, value in zip(beta, alpha, xi, vectorised, strict=True):
        assert float(value) == pytest.approx(
            _old_brute_force_loss(b, a, x, n_items, n_labels), rel=1e-12, abs=1e-13
        )


@pytest.mark.parametrize(("n_items", "n_labels"), SIZES)
def test_n_minus_1_closed_form_gradient_equals_autograd(n_items, n_labels):
    beta, alpha, xi = (t.clone().requires_grad_(True) for t in _random_points(2, 200))
    value = old_loss(beta, alpha, xi, n_items, n_labels)
    auto = torch.autograd.grad(value.sum(), (beta, alpha, xi))
    closed = old_gradient(beta.detach(), alpha.detach(), xi.detach(), n_items, n_labels)
    for name, a, c in zip(al.PARAMETERS, auto, closed, strict=True):
        assert torch.allclose(c, a, rtol=1e-10, atol=1e-13), name


def test_n_minus_1_closed_form_gradient_equals_central_differences():
    """Independent of autograd: finite differences of the brute-force loss."""
    _check_gradient_by_finite_differences(old_gradient, _old_brute_force_loss, seed=3)


def test_n_minus_1_broadcasting_shapes():
    beta = torch.zeros(4, 1, dtype=F64)
    alpha = torch.linspace(0, 3, 5, dtype=F64)
    assert old_loss(beta, alpha, 2.0, 8, 32).shape == (4, 5)
    assert all(g.shape == (4, 5) for g in old_gradient(beta, alpha, 2.0, 8, 32))


# ----- the named variant: limits ---------------------------------------------------------------------------------
def test_n_minus_1_in_context_limit_loss_goes_to_zero():
    """ξ → ∞ with α, β large: the correct label's logit dominates; ℒ → 0 at the rate
    (N − 1) e^{−ξ(p − (1−p)/(N−1))} + (L − N) e^{−ξ p} (precision kept far below 1e-16)."""
    n_items, n_labels, beta, alpha = 8, 32, 6.0, 12.0
    values = [float(old_loss(beta, alpha, xi, n_items, n_labels)) for xi in (5, 10, 20, 40, 80)]
    assert all(b < a for a, b in itertools.pairwise(values))
    assert values[-1] < 1e-30
    p = float(old_label_attention(beta, alpha, n_items))
    for xi in (40.0, 80.0, 400.0):
        gap = p - (1 - p) / (n_items - 1)
        asymptote = (n_items - 1) * math.exp(-xi * gap) + (n_labels - n_items) * math.exp(-xi * p)
        assert float(old_loss(beta, alpha, xi, n_items, n_labels)) == pytest.approx(
            asymptote, rel=1e-6
        )
    # the in-context solution is reached by ξ alone once α > 0 (p > 1/N), whatever β
    assert float(old_loss(-3.0, 0.5, 1e6, n_items, n_labels)) < 1e-100


@pytest.mark.parametrize(("n_items", "n_labels"), [(8, 8), (8, 32), (3, 10)])
def test_n_minus_1_alpha_zero_plane_is_the_context_label_plateau(n_items, n_labels):
    """α = 0: ℒ = −ξ/N + log(N e^{ξ/N} + L − N), from log L at ξ = 0 down to log N as ξ → ∞
    (a uniform guess among the context labels); flat at log N when L = N, whatever β."""
    for beta in (-2.0, 0.0, 3.0):
        for xi in (0.0, 1.0, 10.0, 100.0):
            closed = -xi / n_items + math.log(n_items * math.exp(xi / n_items) + n_labels - n_items)
            assert float(old_loss(beta, 0.0, xi, n_items, n_labels)) == pytest.approx(
                closed, rel=1e-13
            )
    assert float(old_loss(0.0, 0.0, 1e4, n_items, n_labels)) == pytest.approx(
        math.log(n_items), rel=1e-12
    )
    if n_labels == n_items:
        flat = old_gradient(1.0, 0.0, torch.tensor([0.5, 5.0, 50.0], dtype=F64), n_items, n_labels)
        assert torch.equal(flat.xi, torch.zeros(3, dtype=F64))
        assert torch.equal(flat.beta, torch.zeros(3, dtype=F64))
        assert (flat.alpha < 0).all()  # ... but α is pushed once ξ ≠ 0: a saddle, not a minimum


# ----- the named variant: gradient flow --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def old_flow_8_32():
    return old_gradient_flow((0.0, 0.0, 0.0), 8, 32, lr=0.1, steps=3000, record_every=1)


def test_n_minus_1_flow_grows_xi_then_alpha_then_beta(old_flow_8_32):
    for threshold in (0.01, 0.1, 0.5, 1.0):
        growth = al.growth_order(old_flow_8_32, threshold)
        assert growth["order"] == ["xi", "alpha", "beta"], (threshold, growth)
        assert growth["matches_expected_order"] is True
    loss = old_flow_8_32["loss"].to_numpy()
    assert loss[0] == pytest.approx(math.log(32), abs=1e-14)
    assert (loss[1:] - loss[:-1] <= 1e-15).all()  # gradient descent with a small step: monotone
    assert loss[-1] < 0.01


def test_n_minus_1_flow_drop_is_abrupt(old_flow_8_32):
    """The loss falls slowly while ξ alone grows, then steeply once all three have grown (the
    cliff): its steepest per-step fall is many times the first step's (N = 8, L = 32: 72x)."""
    fall = -old_flow_8_32["loss"].diff().iloc[1:]
    assert fall.max() > 20 * fall.iloc[0]
    steepest = int(old_flow_8_32["step"].iloc[fall.idxmax()])
    assert steepest > al.growth_order(old_flow_8_32, 0.1)["rise_step"]["beta"]


def test_n_minus_1_growth_order_is_robust_near_the_origin():
    g = torch.Generator().manual_seed(4)
    for n_items, n_labels in [(2, 32), (4, 8), (8, 9), (8, 32)]:
        init = ((torch.rand(3, generator=g, dtype=F64) * 2 - 1) * 1e-3).tolist()
        trajectory = old_gradient_flow(init, n_items, n_labels, lr=0.1, steps=3000, record_every=1)
        growth = al.growth_order(trajectory, 0.1)
        assert growth["order"] == ["xi", "alpha", "beta"], (n_items, n_labels, growth)
        assert trajectory["loss"].iloc[-1] < 0.01


def test_n_minus_1_integrator_tracks_the_flow():
    """Explicit Euler: halving lr doubles the steps; the rise *times* (step · lr) agree."""
    coarse = al.growth_order(old_gradient_flow(lr=0.1, steps=300, record_every=1), 0.5)
    fine = al.growth_order(old_gradient_flow(lr=0.05, steps=600, record_every=1), 0.5)
    for name in al.SEQUENTIAL_ORDER:
        assert 0.1 * coarse["rise_step"][name] == pytest.approx(
            0.05 * fine["rise_step"][name], rel=0.05
        )


def test_n_minus_1_L_equals_N_from_the_origin_learns_nothing():
    trajectory = old_gradient_flow((0.0, 0.0, 0.0), 8, 8, lr=0.1, steps=2000, record_every=50)
    assert (trajectory[list(al.PARAMETERS)] == 0.0).all().all()
    assert (trajectory["loss"] == trajectory["loss"].iloc[0]).all()
    assert trajectory["loss"].iloc[0] == pytest.approx(math.log(8), abs=1e-15)
    # every point with α = ξ = 0 is stationary: a β perturbation changes nothing else
    shifted = old_gradient_flow((0.7, 0.0, 0.0), 8, 8, lr=0.1, steps=500, record_every=50)
    assert (shifted[["alpha", "xi"]] == 0.0).all().all() and (shifted["beta"] == 0.7).all()
    assert growth_is_empty(al.growth_order(trajectory, 0.1))


def growth_is_empty(growth):
    return growth["order"] == [] and growth["matches_expected_order"] is None


def test_n_minus_1_L_equals_N_with_a_perturbation_escapes_a_saddle_slowly(old_flow_8_32):
    """L = N, ξ(0) = ε: ξ and α grow like ε e^{rt}, r = (N − 1)/(2N²) (the saddle's unstable
    rate at β = 0), so the plateau lasts ≈ log(1/ε)/r; for L > N, ξ is pushed at once."""
    n, lr = 8, 0.1
    half_log_n = 0.5 * math.log(n)
    reference = _first_step(old_flow_8_32, old_flow_8_32["loss"] < half_log_n)
    escapes = {}
    for eps in (1e-3, 1e-6):
        trajectory = old_gradient_flow((0.0, 0.0, eps), n, n, lr=lr, steps=3200, record_every=1)
        escapes[eps] = _first_step(trajectory, trajectory["loss"] < half_log_n)
        assert escapes[eps] is not None and trajectory["loss"].iloc[-1] < 0.05
    assert escapes[1e-6] > 5 * reference  # N = 8: about 2695 against 240 steps
    rate_per_step = lr * (n - 1) / (2 * n**2)
    predicted = math.log(1e3) / rate_per_step  # 1263 steps between ε = 1e-3 and 1e-6
    assert escapes[1e-6] - escapes[1e-3] == pytest.approx(predicted, rel=0.02)


def test_n_minus_1_growth_order_by_half_rise_step(old_flow_8_32):
    """Half-rise steps (the definition shared with the dynamics analysis, interp_icl.curves)."""
    from interp_icl.curves import half_rise_step

    indexed = old_flow_8_32.set_index("step")
    growth = al.growth_order(old_flow_8_32, threshold=None)
    for name in al.PARAMETERS:
        assert growth["rise_step"][name] == half_rise_step(indexed[name])
    assert growth["criterion"] == "half-rise step"
    assert all(isinstance(s, int) for s in growth["rise_step"].values())


# ----- the named variant: landscape and figures ------------------------------------------------------------------
def test_n_minus_1_landscape_grid_and_figures(old_flow_8_32):
    grid = old_landscape(8, 32, x="alpha", y="xi", fixed_value=0.5, resolution=11)
    assert list(grid.columns) == ["beta", "alpha", "xi", "loss"] and len(grid) == 121
    assert (grid["beta"] == 0.5).all()
    row = grid.iloc[37]
    assert row["loss"] == pytest.approx(
        float(old_loss(row["beta"], row["alpha"], row["xi"], 8, 32)), rel=1e-15
    )
    fig, data = al.landscape_figure(grid, old_flow_8_32.iloc[::100])
    assert fig.data[0].z.shape == (11, 11) and list(fig.data[0].x) == sorted(grid["alpha"].unique())
    assert set(data["kind"]) == {"landscape", "trajectory"}
    growth = al.growth_order(old_flow_8_32)
    fig, data = al.trajectory_figure(old_flow_8_32, growth)
    assert len(fig.data) == 4 and set(data["quantity"]) == {"xi", "alpha", "beta", "loss"}
    assert isinstance(data, pd.DataFrame) and len(data) == 4 * len(old_flow_8_32)


@pytest.mark.parametrize(
    ("n_items", "n_labels"), [(1, 4), (8, 4), (2.5, 8)], ids=["one-item", "L<N", "fractional"]
)
def test_n_minus_1_bad_sizes_are_refused(n_items, n_labels):
    with pytest.raises(InterpICLError, match="n_"):
        al.loss(0.0, 0.0, 0.0, n_items, n_labels)
    with pytest.raises(InterpICLError, match="n_"):
        old_loss(0.0, 0.0, 0.0, n_items, n_labels)
