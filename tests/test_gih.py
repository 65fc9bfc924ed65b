"""The gih model against its equations, a hand-set limit model, and its own fast paths."""

import math

import pytest
import torch

from interp_icl.config import TaskConfig
from interp_icl.errors import TokenError
from interp_icl.models import GIHConfig, GIHModel
from interp_icl.tasks import MarkovTask
from interp_icl.theory.estimators import context_counts, sgram_probs


def _random_model(seed=0, **kw):
    cfg = GIHConfig(d_vocab=3, n_ctx=40, n_heads=3, window=4, max_degree=2, **kw)
    model = GIHModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.w_rpe.copy_(torch.randn(model.w_rpe.shape, generator=g))
        model.c.copy_(torch.randn(model.c.shape, generator=g))
        model.a.fill_(3.0)
    return model


def _naive_forward(model, seq):
    """REFERENCE §1 written as loops over positions, for one sequence (a list of ints)."""
    cfg = model.cfg
    d, H, M = cfg.d_vocab, cfg.n_heads, cfg.window
    T = len(seq)
    onehot = [[1.0 if k == x else 0.0 for k in range(d)] for x in seq]
    w = model.w_rpe.detach().tolist()
    v_bar = []
    for i in range(T):
        heads = []
        for h in range(H):
            z = sum(math.exp(w[h][r - 1]) for r in range(1, M + 1))  # softmax over all M offsets
            v = [0.0] * d
            for r in range(1, M + 1):
                if i - r >= 0:  # offsets before the start point at the empty pad (value 0)
                    for k in range(d):
                        v[k] += math.exp(w[h][r - 1]) / z * onehot[i - r][k]
            norm = math.sqrt(sum(e * e for e in v) + 1e-12)
            heads.append([e / norm for e in v])
        v_bar.append(heads)
    c = model.c.detach().tolist()
    total = sum(e * e for e in c)
    p = [e * e / total for e in c]

    def sim(i, l):
        out = 0.0
        for k, subset in enumerate(model.subsets):
            term = 1.0
            for h in subset:
                term *= sum(a * b for a, b in zip(v_bar[i][h], v_bar[l][h]))
            out += p[k] * term
        return out

    a = model.a.item()
    probs = [[1.0 / d] * d]
    for i in range(1, T):
        scores = [a * sim(i, l) for l in range(i)]
        m = max(scores)
        weights = [math.exp(s - m) for s in scores]
        total_w = sum(weights)
        probs.append([sum(weights[l] * onehot[l][k] for l in range(i)) / total_w for k in range(d)])
    return torch.tensor(probs)


def test_forward_matches_the_equations_written_as_loops():
    model = _random_model()
    tokens = torch.randint(0, 3, (2, 12), generator=torch.Generator().manual_seed(1))
    out = model(tokens)
    for b in range(2):
        torch.testing.assert_close(out[b], _naive_forward(model, tokens[b].tolist()), atol=1e-5, rtol=0)


def test_fast_last_row_and_dense_hooked_path_equal_the_plain_forward():
    model = _random_model(seed=2)
    tokens = torch.randint(0, 3, (5, 40), generator=torch.Generator().manual_seed(3))
    plain = model(tokens)
    torch.testing.assert_close(model.forward_last(tokens), plain[:, -1], atol=1e-6, rtol=0)
    hooked = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda x, hook: x)])
    torch.testing.assert_close(hooked, plain, atol=1e-6, rtol=0)


def test_hook_shapes_and_pattern_edits_reach_the_output():
    model = _random_model(seed=4)
    tokens = torch.randint(0, 3, (2, 10), generator=torch.Generator().manual_seed(5))
    out, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 3, 10, 10)
    assert cache["blocks.0.attn.hook_z"].shape == (2, 10, 3, 3)
    assert cache["blocks.0.mlp.hook_feature"].shape == (2, 10, model.feature_size)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 1, 10, 10)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern[:, :, 4:].sum(-1), torch.ones(2, 3, 6))  # full windows sum to 1
    assert torch.all(pattern.triu() == 0)  # never attends to itself or the future
    l2 = cache["blocks.1.attn.hook_pattern"]
    assert torch.all(l2[:, :, 1:].sum(-1).sub(1).abs() < 1e-6) and torch.all(l2.triu() == 0)

    def previous_token_only(pattern, hook):
        return torch.diag_embed(torch.ones(9), offset=-1).expand_as(pattern).clone()

    edited = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", previous_token_only)])
    assert not torch.allclose(edited, out)


def _hand_set(parents, window, a=200.0):
    """Sharp copiers: head h copies offset parents[h]; p_S one-hot on S = all heads; large a."""
    cfg = GIHConfig(d_vocab=3, n_ctx=120, n_heads=len(parents), window=window, max_degree=len(parents))
    model = GIHModel(cfg)
    with torch.no_grad():
        model.w_rpe.fill_(-30.0)
        for h, s in enumerate(parents):
            model.w_rpe[h, s - 1] = 30.0
        model.c.zero_()
        model.c[model.subsets.index(tuple(range(len(parents))))] = 1.0
        model.a.fill_(a)
    return model


@pytest.mark.parametrize("parents,window", [((1,), 3), ((1, 2), 3), ((1, 3), 4)])
def test_hand_set_limit_model_is_the_in_context_sgram_estimator(parents, window):
    task = MarkovTask(TaskConfig(vocab_size=3, parents=parents, alpha=0.3, seq_len=120))
    batch = task.sample(32, torch.Generator().manual_seed(7))
    model = _hand_set(parents, window)
    probs = model(batch.tokens)
    expected = sgram_probs(batch.tokens, parents, 3, beta=0.0)
    counts, defined = context_counts(batch.tokens, parents, 3)
    seen = defined & (counts.sum(-1) > 0)  # positions whose parent context occurred before
    assert seen.float().mean() > 0.8
    err = (probs - expected).abs().amax(-1)[seen]
    assert float(err.detach().max()) < 1e-4


def test_out_of_range_tokens_are_rejected():
    model = _random_model()
    with pytest.raises(TokenError, match=r"token ids must lie in \[0, 2\]"):
        model(torch.tensor([[0, 1, 3]]))
    with pytest.raises(TokenError, match="exceeds the model's context"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(TokenError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(TokenError, match="at least one sequence of at least one token"):
        model.forward_last(torch.zeros(2, 0, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_narrow_integer_tokens_give_the_int64_result(dtype):
    from interp_icl.models import next_token_log_probs

    model = _random_model()
    x = torch.randint(0, 3, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x.to(dtype)), model(x))
        assert torch.equal(model.forward_last(x.to(dtype)), model.forward_last(x))
        first = next_token_log_probs(model, x[:, :1].to(dtype), last_only=True)
    assert torch.allclose(first, torch.full((2, 3), -math.log(3)))


@pytest.mark.parametrize("window", [1, 3, 4])
def test_window_code_kernel_path_equals_per_position_path(window):
    cfg = GIHConfig(d_vocab=3, n_ctx=60, n_heads=3, window=window, max_degree=2)
    model = GIHModel(cfg)
    g = torch.Generator().manual_seed(window)
    with torch.no_grad():
        model.w_rpe.copy_(2 * torch.randn(model.w_rpe.shape, generator=g))
        model.c.copy_(torch.randn(model.c.shape, generator=g))
        model.a.fill_(5.0)
    tokens = torch.randint(0, 3, (6, 60), generator=g)
    fast = model.forward_last(tokens)
    torch.testing.assert_close(fast, model._forward_last_by_position(tokens), atol=1e-5, rtol=0)
    torch.testing.assert_close(fast, model(tokens)[:, -1], atol=1e-5, rtol=0)
    # gradients agree too
    grads = []
    for fn in (model.forward_last, lambda t: model(t)[:, -1]):
        model.zero_grad()
        torch.log(fn(tokens).gather(-1, tokens[:, -1:])).sum().backward()
        grads.append([p.grad.clone() for p in (model.w_rpe, model.c, model.a)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_rpe_noise_gives_a_seeded_non_aligned_start():
    from interp_icl.config import ModelConfig
    from interp_icl.models.gih import build_gih

    reference = build_gih(ModelConfig(family="gih", n_heads=3, window=3), 3, 20, seed=5)
    expected = torch.full((3, 3), 0.1) + 2.9 * torch.eye(3)
    assert torch.equal(reference.w_rpe.detach(), expected)  # no noise: the reference code's start
    flat = dict(family="gih", n_heads=3, window=3, w_plus=0.0, w_minus=0.0, rpe_noise=0.3)
    first = build_gih(ModelConfig(**flat), 3, 20, seed=5).w_rpe.detach()
    again = build_gih(ModelConfig(**flat), 3, 20, seed=5).w_rpe.detach()
    other = build_gih(ModelConfig(**flat), 3, 20, seed=6).w_rpe.detach()
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert 0.1 < float(first.std()) < 0.6  # N(0, 0.3²) entries: heads differ, none is sharp
    assert float(torch.softmax(first, -1).max()) < 0.8
