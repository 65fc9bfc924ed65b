"""Selection criteria: closed forms, the stationary law, Monte Carlo convergence."""

import pytest
import torch

from interp_icl.config import TaskConfig
from interp_icl.tasks.markov import MarkovTask
from interp_icl.theory.selection import (
    criteria_for_joint,
    estimate_selection,
    selection_grid,
    stationary_joint,
    window_subsets,
)


def test_symmetric_binary_chain_closed_form():
    # pi = [[1-e, e], [e, 1-e]]: stationary law uniform, mu(z, e) = pi(e|z) / 2
    e = 0.2
    kernel = torch.tensor([[[1 - e, e], [e, 1 - e]]])
    joint = stationary_joint(kernel, (1,), 2, 2)
    sq = 2 * ((1 - e) ** 2 + e**2)
    at_1 = criteria_for_joint(joint, (1,))
    assert float(at_1["chi2_mi"]) == pytest.approx(sq - 1)  # 0.36
    assert float(at_1["modified_chi2_mi"]) == pytest.approx(0.5 * sq - 0.5)  # 0.18
    # offset 2 carries less: x_{l-2} predicts x_l through two steps, pi^2
    e2 = 2 * e * (1 - e)
    assert float(criteria_for_joint(joint, (2,))["chi2_mi"]) == pytest.approx(2 * ((1 - e2) ** 2 + e2**2) - 1)


def test_stationary_joint_is_shift_invariant_with_the_kernel_as_conditional():
    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1, 3), alpha=0.5, seq_len=50))
    kernels = task.sample_kernels(5, torch.Generator().manual_seed(0))
    joint = stationary_joint(kernels, (1, 3), 3, 3)  # axes: x_l, x_{l-1}, x_{l-2}, x_{l-3}
    assert torch.allclose(joint.sum((1, 2, 3, 4)), torch.ones(5, dtype=torch.float64))
    # the law of (x_l, x_{l-1}, x_{l-2}) equals that of (x_{l-1}, x_{l-2}, x_{l-3})
    assert torch.allclose(joint.sum(4), joint.sum(1), atol=1e-12)
    # conditional of x_l given the window is the kernel row of its parents (x_{l-1}, x_{l-3})
    window = joint.sum(1, keepdim=True)
    conditional = joint / window
    for a in range(3):
        for b in range(3):
            for c in range(3):
                z = a + 3 * c  # parents sorted: x_{l-1} d^0 + x_{l-3} d^1
                assert torch.allclose(conditional[:, :, a, b, c], kernels[:, z].double(), atol=1e-6)


def test_stationary_joint_matches_a_long_simulated_chain():
    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1, 2), alpha=1.0, seq_len=60001))
    batch = task.sample(1, torch.Generator().manual_seed(4))
    joint = stationary_joint(batch.metadata["kernels"], (1, 2), 3, 2)[0]
    x = batch.tokens[0, 100:]
    empirical = torch.zeros(3, 3, 3, dtype=torch.float64)
    empirical.index_put_((x[2:], x[1:-1], x[:-2]), torch.ones(len(x) - 2, dtype=torch.float64), accumulate=True)
    empirical /= empirical.sum()
    assert (empirical - joint).abs().max() < 0.01


def test_default_task_predictions_and_monte_carlo_convergence():
    big = estimate_selection(3, (1, 2), 0.1, window=3, max_degree=2, n_kernels=1600, seed=1)
    assert big.predicted["modified_chi2_mi"] == (1, 2)
    assert big.predicted["chi2_mi"] == (1, 2) and big.tied_with_best["modified_chi2_mi"] == [(1, 2)]
    full = estimate_selection(3, (1, 2), 0.1, window=3, max_degree=3, n_kernels=400, seed=1)
    assert full.predicted["modified_chi2_mi"] == (1, 2)
    assert set(full.tied_with_best["chi2_mi"]) == {(1, 2), (1, 2, 3)}  # a superset of the parents ties
    small = estimate_selection(3, (1, 2), 0.1, window=3, max_degree=2, n_kernels=400, seed=1)
    ratio = small.table["stderr"] / big.table["stderr"]
    assert ratio.between(1.6, 2.5).all(), ratio.describe()  # stderr ~ 1/sqrt(n): 4x kernels, ~2x smaller
    assert window_subsets(3, 2) == [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3)]


def test_weak_parent_prior_moves_the_criteria_apart():
    """Without the weak parent (q = 0) the chain has the strong parent only and both criteria
    pick it; at q = 1 both pick the full set; at a small q the standard criterion (never lower
    on a superset) takes the full set while the modified one keeps the strong parent."""
    base = {"vocab_size": 3, "parents": (1, 2), "alpha": 1.0, "window": 3, "max_degree": 2, "weak_parents": (2,)}
    settings = [{**base, "weak_parent_prob": q} for q in (0.0, 0.1, 1.0)]
    grid = selection_grid(settings, n_kernels=400, seed=0)
    assert grid["chi2_mi_best"].tolist() == ["{1}", "{1,2}", "{1,2}"]
    assert grid["modified_chi2_mi_best"].tolist() == ["{1}", "{1}", "{1,2}"]
    assert grid["agree"].tolist() == [True, False, True]
    small_q = grid.iloc[1]
    assert small_q["chi2_mi_runner_up"] != "{1,2}" and small_q["modified_chi2_mi_runner_up"] == "{1,2}"
    assert small_q["modified_chi2_mi_gap"] > 4 * small_q["modified_chi2_mi_gap_stderr"]
    assert grid.iloc[0]["weak_parents"] == "{2}" and grid.iloc[0]["weak_parent_prob"] == 0.0


def test_theory_pass_uses_the_tasks_weak_parents():
    from interp_icl.analysis.theory import theory

    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1, 3), alpha=1.0, seq_len=20,
                                 weak_parents=(1,), weak_parent_prob=0.0))
    summary = theory(task, n_kernels=100).summary
    assert summary["predicted"]["chi2_mi"] == [3] and summary["predicted"]["modified_chi2_mi"] == [3]
    assert summary["weak_parents"] == [1] and summary["weak_parent_prob"] == 0.0
