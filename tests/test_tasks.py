"""Samplers: statistical agreement with the drawn kernels, the prior, determinism."""

import pytest
import torch

from interp_icl.config import TaskConfig
from interp_icl.errors import ConfigError
from interp_icl.tasks import MarkovTask, RepeatedTokensTask, make_task
from interp_icl.theory.estimators import context_index


@pytest.mark.parametrize("parents", [(1,), (1, 2), (2, 4)])
def test_markov_transitions_match_drawn_kernels(parents):
    """Calibration z-test: within each bin of the kernel probability pi(k | z_t), the frequency of
    x_t = k matches the mean of pi(k | z_t) (independent Bernoulli draws given the past)."""
    task = MarkovTask(TaskConfig(vocab_size=3, parents=parents, alpha=0.5, seq_len=200))
    batch = task.sample(1000, torch.Generator().manual_seed(0))
    z = context_index(batch.tokens, parents, 3)
    start = max(parents)
    kernels = batch.metadata["kernels"]
    rows = torch.gather(kernels, 1, z[:, start:, None].expand(-1, -1, 3)).double()  # [B, T', 3]
    hits = torch.nn.functional.one_hot(batch.tokens[:, start:], 3).double()
    edges = torch.linspace(0, 1, 11, dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (rows >= lo) & (rows < hi)
        if in_bin.sum() < 100:
            continue
        q = rows[in_bin]
        observed, expected = hits[in_bin].sum(), q.sum()
        sd = torch.sqrt((q * (1 - q)).sum())
        assert abs(observed - expected) < 5 * sd, (lo, hi, observed, expected)


def test_first_tokens_are_uniform_and_kernels_follow_the_dirichlet_prior():
    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1, 3), alpha=0.1, seq_len=8))
    batch = task.sample(20000, torch.Generator().manual_seed(1))
    first = torch.nn.functional.one_hot(batch.tokens[:, :3], 3).double().mean((0, 1))
    assert torch.allclose(first, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01)
    rows = batch.metadata["kernels"].reshape(-1, 3).double()
    assert torch.allclose(rows.sum(-1), torch.ones(len(rows), dtype=torch.float64), atol=1e-5)
    # Dirichlet(0.1 * 1_3): mean 1/3, variance (1/3)(2/3)/(3*0.1 + 1)
    assert torch.allclose(rows.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.005)
    assert abs(float(rows[:, 0].var()) - (2 / 9) / 1.3) < 0.005


def test_sampler_is_deterministic_given_the_generator_seed():
    task = make_task(TaskConfig())
    a = task.sample(8, torch.Generator().manual_seed(5))
    b = task.sample(8, torch.Generator().manual_seed(5))
    c = task.sample(8, torch.Generator().manual_seed(6))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.metadata["kernels"], b.metadata["kernels"])
    assert not torch.equal(a.tokens, c.tokens)


def test_bayes_beats_unigram_and_matches_true_kernel_loss_at_long_context():
    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1,), alpha=1.0, seq_len=400))
    batch = task.sample(500, torch.Generator().manual_seed(2))
    from interp_icl.theory.estimators import mean_nll

    last = slice(-50, None)
    bayes = mean_nll(task.bayes_probs(batch), batch.tokens, last)
    truth = mean_nll(task.true_probs(batch), batch.tokens, last)
    unigram = mean_nll(task.baselines(batch, 0.01)["unigram"], batch.tokens, last)
    assert truth <= bayes < truth + 0.02  # the posterior concentrates on the drawn kernel
    assert bayes < unigram - 0.1


def test_repeated_tokens_repeat_the_block():
    task = RepeatedTokensTask(TaskConfig(name="repeated", vocab_size=50, block_len=7, n_repeats=3))
    batch = task.sample(4, torch.Generator().manual_seed(0))
    assert batch.tokens.shape == (4, 21)
    assert torch.equal(batch.tokens[:, :7], batch.tokens[:, 7:14])
    assert torch.equal(batch.tokens[:, :7], batch.tokens[:, 14:])
    probs = task.bayes_probs(batch)
    assert torch.allclose(probs[:, :7], torch.full_like(probs[:, :7], 1 / 50))
    assert torch.equal(probs[:, 7:].argmax(-1), batch.tokens[:, 7:])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"vocab_size": 1}, "vocab_size"),
        ({"parents": ()}, "parents is empty"),
        ({"parents": (0, 1)}, "positive integer"),
        ({"parents": (1, 5), "seq_len": 5}, "seq_len"),
        ({"alpha": 0.0}, "alpha"),
        ({"name": "lm"}, "unknown task"),
    ],
)
def test_impossible_task_parameters_are_one_line_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        TaskConfig(**kwargs)
    assert "\n" not in str(info.value)


# ----- weak parents ------------------------------------------------------------------------------
def _rows_tied_across_weak_values(kernels, parents, weak, d):
    """``[n]`` bool: every kernel row equals the row of the context with the weak parents' tokens
    set to 0 (the kernel ignores the weak parents)."""
    z = torch.arange(d ** len(parents))
    base = z.clone()
    for k, p in enumerate(parents):
        if p in weak:
            base -= (z // d**k) % d * d**k
    return (kernels == kernels[:, base]).all(-1).all(-1)


@pytest.mark.parametrize("parents,weak", [((1, 2), (2,)), ((1, 2), (1,)), ((1, 3), (1,))])
def test_weak_parents_are_ignored_when_the_weak_component_is_off(parents, weak):
    task = MarkovTask(TaskConfig(vocab_size=3, parents=parents, alpha=1.0, seq_len=10,
                                 weak_parents=weak, weak_parent_prob=0.0))
    kernels = task.sample(300, torch.Generator().manual_seed(0)).metadata["kernels"]
    assert _rows_tied_across_weak_values(kernels, parents, weak, 3).all()
    # the rows still differ across the strong parent's values
    strong_only = _rows_tied_across_weak_values(kernels, parents, parents, 3)
    assert not strong_only.any()


def test_about_weak_parent_prob_of_the_kernels_use_the_weak_parent():
    n, q = 2000, 0.5
    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1, 2), alpha=1.0, seq_len=10,
                                 weak_parents=(2,), weak_parent_prob=q))
    kernels = task.sample_kernels(n, torch.Generator().manual_seed(3))
    tied = _rows_tied_across_weak_values(kernels, (1, 2), (2,), 3).double().mean()
    assert abs(float(tied) - (1 - q)) < 4 * (q * (1 - q) / n) ** 0.5


def test_default_markov_sampler_draws_exactly_as_before_weak_parents():
    from interp_icl.theory.estimators import dirichlet_kernels

    task = make_task(TaskConfig(seq_len=16))
    g_task, g_old = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    kernels = task.sample_kernels(3, g_task)
    assert torch.equal(kernels, dirichlet_kernels(3, 9, 3, 0.1, g_old))
    assert torch.equal(g_task.get_state(), g_old.get_state())  # nothing extra drawn
    # tokens of release 1 (main before weak parents) for this seed
    tokens = task.sample(3, torch.Generator().manual_seed(11)).tokens.tolist()
    assert tokens == [
        [0, 0, 0, 2, 2, 0, 1, 1, 1, 1, 2, 0, 1, 1, 1, 1],
        [1, 2, 0, 0, 2, 2, 0, 0, 2, 2, 0, 0, 2, 2, 2, 0],
        [1, 1, 1, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2, 1, 1, 1],
    ]
    assert "weak_parents" not in task.describe()


def test_weak_parent_task_uses_the_mixture_oracle_and_describes_itself():
    from interp_icl.theory.estimators import weak_parent_posterior_probs

    config = TaskConfig(vocab_size=3, parents=(1, 2), seq_len=30, weak_parents=(2,), weak_parent_prob=0.3)
    task = MarkovTask(config)
    batch = task.sample(4, torch.Generator().manual_seed(0))
    expected = weak_parent_posterior_probs(batch.tokens, (1, 2), (2,), 3, 0.1, 0.3)
    assert torch.equal(task.bayes_probs(batch), expected)
    assert task.describe()["weak_parents"] == [2] and task.describe()["weak_parent_prob"] == 0.3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weak_parents": (3,)}, r"task.weak_parents \[3\] are not among task.parents"),
        ({"weak_parents": (2, 1)}, "task.weak_parents .* are all of task.parents"),
        ({"weak_parents": (2, 2)}, "task.weak_parents has duplicate"),
        ({"weak_parent_prob": 0.5}, "task.weak_parent_prob .* needs task.weak_parents"),
        ({"weak_parents": (2,), "weak_parent_prob": 1.5}, "task.weak_parent_prob"),
    ],
)
def test_impossible_weak_parent_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        TaskConfig(parents=(1, 2), **kwargs)
    assert "\n" not in str(info.value)
