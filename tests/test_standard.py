"""The standard family: a TransformerBridge whose training module and bridge agree exactly."""

import math

import pytest
import torch

from interp_icl.config import ModelConfig
from interp_icl.errors import TokenError
from interp_icl.models import build_model, next_token_log_probs, target_offset, training_module

D_VOCAB, N_CTX = 5, 16
OPTIONS = {
    "default": {},
    "attn_only": {"attn_only": True},
    "no_norm": {"norm": "none"},
    "rotary": {"positional": "rotary"},
}


def small(seed=0, **options):
    config = ModelConfig(family="standard", n_heads=2, d_model=16, d_head=8, d_mlp=32, **options)
    return build_model(config, D_VOCAB, N_CTX, seed)


def tokens(n=4, seq=N_CTX, seed=0):
    return torch.randint(0, D_VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_bridge_and_training_module_give_the_same_logits_before_and_after_training(options):
    model = small(**options)
    module = training_module(model)
    x = tokens()
    with torch.no_grad():
        assert torch.allclose(model(x), module(x), atol=1e-5)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for step in range(3):
        loss = torch.nn.functional.cross_entropy(module(x)[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        trained = module(x)
        assert not torch.allclose(trained, small(**options)(x), atol=1e-3)  # training moved it
        assert torch.allclose(model(x), trained, atol=1e-5)  # and the bridge sees the same weights


def test_attention_patterns_are_causal_distributions_under_tl_hook_names():
    model = small()
    _, cache = model.run_with_cache(tokens(n=3))
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (3, 2, N_CTX, N_CTX)
        assert torch.allclose(pattern.sum(-1), torch.ones(3, 2, N_CTX), atol=1e-5)
        assert float(pattern.triu(diagonal=1).abs().max()) == 0.0


def test_options_change_the_architecture():
    names = lambda m: [n for n, _ in training_module(m).named_parameters()]  # noqa: E731
    count = lambda m: sum(p.numel() for p in training_module(m).parameters())  # noqa: E731
    full, attn_only, no_norm = small(), small(attn_only=True), small(norm="none")
    assert any("mlp" in n for n in names(full)) and not any("mlp" in n for n in names(attn_only))
    assert count(attn_only) < count(full)
    assert count(no_norm) < count(full)
    assert model_cfg(full) == (2, 16, 2, D_VOCAB, N_CTX)


def model_cfg(model):
    cfg = model.cfg
    return cfg.n_heads, cfg.d_model, cfg.n_layers, cfg.d_vocab, cfg.n_ctx


def test_seed_fixes_the_initial_weights():
    a, b, c = (training_module(small(seed=s)).state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_next_token_log_probs_are_target_aligned_and_causal():
    model = small()
    x = tokens()
    assert target_offset(model) == 1
    with torch.no_grad():
        logits = model(x)
        rows = next_token_log_probs(model, x)
        last = next_token_log_probs(model, x, last_only=True)
    assert rows.shape == (4, N_CTX, D_VOCAB)
    assert torch.allclose(rows[:, 0], torch.full((4, D_VOCAB), -math.log(D_VOCAB)))
    assert torch.allclose(rows[:, 1:], torch.log_softmax(logits[:, :-1], -1), atol=1e-6)
    assert torch.allclose(rows.exp().sum(-1), torch.ones(4, N_CTX), atol=1e-5)
    assert torch.allclose(last, rows[:, -1], atol=1e-5)
    t = 7
    changed = x.clone()
    changed[:, t] = (changed[:, t] + 1) % D_VOCAB
    with torch.no_grad():
        rows_changed = next_token_log_probs(model, changed)
    assert torch.allclose(rows_changed[:, : t + 1], rows[:, : t + 1], atol=1e-6)  # row t ignores token t
    assert not torch.allclose(rows_changed[:, t + 1 :], rows[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((2, 4), D_VOCAB), r"token ids must lie in \[0, 4\]"),
        (torch.full((2, 4), -1), r"token ids must lie in \[0, 4\]"),
        (torch.zeros(2, 4), "must be integer ids"),
        (torch.zeros(4, dtype=torch.long), r"shape \[batch, seq\]"),
        (torch.zeros(2, N_CTX + 1, dtype=torch.long), "exceeds the model's context"),
    ],
)
def test_bad_tokens_are_one_line_errors(bad, message):
    with pytest.raises(TokenError, match=message) as info:
        next_token_log_probs(small(), bad)
    assert "\n" not in str(info.value)
