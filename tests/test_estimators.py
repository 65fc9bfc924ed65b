"""Oracles against independent truths: direct counting and brute-force posterior integration."""

import itertools

import numpy as np
import pytest
import torch

from interp_icl.theory.estimators import (
    context_counts,
    dirichlet_posterior_probs,
    mean_nll,
    sgram_probs,
    unigram_probs,
    weak_parent_posterior_probs,
)


def _direct_sgram(seq, offsets, d, beta):
    """Plain-Python S-gram estimator with the documented unigram fallback."""
    out = []
    for t in range(len(seq)):
        uni = [sum(1 for l in range(t) if seq[l] == k) for k in range(d)]
        if t + d * beta > 0:
            uni_p = [(uni[k] + beta) / (t + d * beta) for k in range(d)]
        else:
            uni_p = [1.0 / d] * d
        if not offsets:
            out.append(uni_p)
            continue
        if t < max(offsets):
            out.append(uni_p)
            continue
        ctx = tuple(seq[t - s] for s in offsets)
        counts = [0] * d
        for l in range(max(offsets), t):
            if tuple(seq[l - s] for s in offsets) == ctx:
                counts[seq[l]] += 1
        total = sum(counts)
        if total == 0:
            out.append(uni_p)
        else:
            out.append([(counts[k] + beta) / (total + d * beta) for k in range(d)])
    return out


@pytest.mark.parametrize("offsets", [(), (1,), (1, 2), (1, 3), (2, 4)])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_sgram_equals_direct_counting(offsets, beta):
    g = torch.Generator().manual_seed(3)
    d = 3
    tokens = torch.randint(0, d, (4, 40), generator=g)
    probs = sgram_probs(tokens, offsets, d, beta)
    for b in range(tokens.shape[0]):
        expected = np.array(_direct_sgram(tokens[b].tolist(), offsets, d, beta))
        np.testing.assert_allclose(probs[b].numpy(), expected, atol=1e-6)


def test_context_counts_count_only_earlier_positions():
    tokens = torch.tensor([[0, 1, 0, 1, 0, 1]])
    counts, defined = context_counts(tokens, (1,), 2)
    assert defined.tolist() == [[False, True, True, True, True, True]]
    # position 5: context x4 = 0; earlier positions with context 0 are l = 1, 3 (tokens 1, 1)
    assert counts[0, 5].tolist() == [0.0, 2.0]
    # position 2: context x1 = 1; no earlier position had context 1
    assert counts[0, 2].tolist() == [0.0, 0.0]


def test_unigram_at_first_position_is_uniform_and_loss_is_infinite_without_smoothing():
    tokens = torch.tensor([[0, 0, 1]])
    probs = unigram_probs(tokens, 2, beta=0.0)
    assert probs[0, 0].tolist() == [0.5, 0.5]
    assert probs[0, 2].tolist() == [1.0, 0.0]
    assert mean_nll(probs, tokens) == float("inf")


def _brute_force_predictive(seq, parents, d, alpha, nodes=24):
    """P(x_t | x_<t) by integrating the joint likelihood over every kernel row (d = 2 only).

    Each row pi(.|z) = (p_z, 1 - p_z) with p_z ~ Beta(alpha, alpha); the likelihood is a
    polynomial in the p_z, so Gauss-Legendre quadrature on the full product grid is exact.
    """
    assert d == 2
    x, w = np.polynomial.legendre.leggauss(nodes)
    p = (x + 1) / 2
    from math import gamma

    beta_pdf = p ** (alpha - 1) * (1 - p) ** (alpha - 1) * gamma(2 * alpha) / gamma(alpha) ** 2
    weight = w / 2 * beta_pdf
    n_ctx = d ** len(parents)

    def marginal(prefix):
        total = 0.0
        for idx in itertools.product(range(nodes), repeat=n_ctx):
            lik = 1.0
            for t in range(max(parents), len(prefix)):
                z = sum(prefix[t - s] * d**k for k, s in enumerate(parents))
                pz = p[idx[z]]
                lik *= pz if prefix[t] == 0 else 1 - pz
            total += lik * np.prod([weight[i] for i in idx])
        return total

    out = []
    for t in range(len(seq)):
        if t < max(parents):
            out.append([0.5, 0.5])
            continue
        joint = [marginal(list(seq[:t]) + [k]) for k in range(d)]
        out.append([j / sum(joint) for j in joint])
    return np.array(out)


@pytest.mark.parametrize("parents,alpha,nodes", [((1,), 1.0, 24), ((1,), 2.0, 24), ((1, 2), 1.0, 8)])
def test_bayes_predictor_equals_brute_force_posterior(parents, alpha, nodes):
    seq = [0, 1, 1, 0, 1, 1, 1, 0]
    tokens = torch.tensor([seq])
    probs = dirichlet_posterior_probs(tokens, parents, 2, alpha)[0].numpy()
    expected = _brute_force_predictive(seq, parents, 2, alpha, nodes)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


# ----- weak-parent mixture oracle ----------------------------------------------------------------
def test_weak_parent_posterior_reduces_to_one_component_at_the_ends():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 3, (3, 30), generator=g)
    # q = 1: the all-parents posterior everywhere
    q1 = weak_parent_posterior_probs(tokens, (1, 3), (3,), 3, 0.5, 1.0)
    torch.testing.assert_close(q1, dirichlet_posterior_probs(tokens, (1, 3), 3, 0.5))
    # q = 0: the strong-parents posterior, counting positions from max(parents) on
    q0 = weak_parent_posterior_probs(tokens, (1, 3), (3,), 3, 0.5, 0.0)
    strong = dirichlet_posterior_probs(tokens[:, 2:], (1,), 3, 0.5)  # drops x_0, x_1: l >= 3 - 1
    torch.testing.assert_close(q0[:, 3:], strong[:, 1:])
    assert torch.equal(q0[:, :3], torch.full_like(q0[:, :3], 1 / 3))


def test_weak_parent_posterior_equals_monte_carlo_over_the_prior():
    """p(x_t = k | x_<t) = E[pi(k | ctx_t) L(x_<t | pi)] / E[L(x_<t | pi)] over kernels pi drawn
    from the prior with numpy (independent of the library's sampler); L counts t >= max(pa)."""
    seq = [0, 1, 0, 0, 1, 0, 1]
    parents, weak, q, d, n = (1, 2), (2,), 0.5, 2, 1_000_000
    rng = np.random.default_rng(0)
    full = rng.beta(1.0, 1.0, size=(n, 4))  # p(x = 0 | z), z = x_{t-1} + 2 x_{t-2}
    strong = rng.beta(1.0, 1.0, size=(n, 2))  # p(x = 0 | x_{t-1})
    uses_weak = rng.random(n) < q
    p0 = np.where(uses_weak[:, None], full, strong[:, [0, 1, 0, 1]])  # [n, 4]
    tokens = torch.tensor([seq])
    probs = weak_parent_posterior_probs(tokens, parents, weak, d, 1.0, q)[0, :, 0].double().numpy()
    # alternatives the Monte Carlo truth must reject: either pure component, and the strong
    # posterior that also counts x_1 (drawn uniformly, not from the kernel)
    wrong = {
        "q=1": weak_parent_posterior_probs(tokens, parents, weak, d, 1.0, 1.0)[0, :, 0].double().numpy(),
        "q=0": weak_parent_posterior_probs(tokens, parents, weak, d, 1.0, 0.0)[0, :, 0].double().numpy(),
        "counts x_1": dirichlet_posterior_probs(tokens, (1,), d, 1.0)[0, :, 0].double().numpy(),
    }
    assert np.allclose(probs[:2], 0.5)
    lik = np.ones(n)
    z_scores, wrong_z = [], {k: 0.0 for k in wrong}
    for t in range(2, len(seq)):
        z = seq[t - 1] + 2 * seq[t - 2]
        a = p0[:, z] * lik
        ratio = a.mean() / lik.mean()
        se = np.sqrt(np.var(a - ratio * lik) / n) / lik.mean()  # delta-method stderr of the ratio
        z_scores.append(abs(probs[t] - ratio) / se)
        for k, v in wrong.items():
            wrong_z[k] = max(wrong_z[k], abs(v[t] - ratio) / se)
        lik = lik * (p0[:, z] if seq[t] == 0 else 1 - p0[:, z])
    assert max(z_scores) < 4.5, z_scores
    assert min(wrong_z.values()) > 50, wrong_z  # the check has power
