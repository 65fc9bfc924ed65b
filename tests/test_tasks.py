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
