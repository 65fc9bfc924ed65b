"""The standard family: a TransformerLens TransformerBridge checked against its training module,
a from-the-weights reference forward, its own configuration, and the target-aligned adapter."""

import math

import pytest
import torch
import torch.nn.functional as F

from interp_icl.config import ModelConfig
from interp_icl.errors import InterpICLError, TokenError
from interp_icl.models import build_model, next_token_log_probs, target_offset, training_module

D_VOCAB, N_CTX = 5, 16
# n_heads * d_head (8) != d_model (12) != d_mlp (20): a transposed weight cannot go unnoticed.
SIZES = {"n_heads": 2, "d_model": 12, "d_head": 4, "d_mlp": 20}
OPTIONS = {
    "default": {},
    "attn_only": {"attn_only": True},
    "no_norm": {"norm": "none"},
    "rotary": {"positional": "rotary"},
}


def config(**options) -> ModelConfig:
    return ModelConfig(family="standard", **{**SIZES, **options})


def small(seed=0, **options):
    return build_model(config(**options), D_VOCAB, N_CTX, seed)


def tokens(n=4, seq=N_CTX, seed=0):
    return torch.randint(0, D_VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


def close(actual, expected, atol):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def param_names(model):
    return [name for name, _ in training_module(model).named_parameters()]


def n_params(model):
    return sum(p.numel() for p in training_module(model).parameters())


# --------------------------------------------------------------------------------------------
# An independent reference: a pre-LN transformer written out from the bridge's weights and the
# ModelConfig that was asked for (not from the bridge's own config).


def _layer_norm(x, sd, name, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _rope(x, base=10000.0):
    """Rotate adjacent pairs (2i, 2i+1) of x [B, T, H, dh] by angle pos * base^(-2i/dh)."""
    _, seq, _, d_head = x.shape
    theta = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * theta[None, :]  # [T, dh/2]
    rot = torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d_head // 2, 2).contiguous())
    return torch.view_as_real(pairs * rot).reshape(x.shape).to(x.dtype)


def reference_forward(model, cfg: ModelConfig, x, pattern_override=None):
    """Logits [B, T, d] and per-layer patterns [B, H, T, T]; `pattern_override[l]` replaces the
    softmax pattern of layer l (before it multiplies the values)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    batch, seq = x.shape
    H, dh = cfg.n_heads, cfg.d_head
    norm = (lambda h, name: _layer_norm(h, sd, name)) if cfg.norm == "LN" else (lambda h, name: h)
    act = {
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu_new": lambda h: F.gelu(h, approximate="tanh"),
        "silu": F.silu,
    }[cfg.act_fn]

    def linear(h, name):
        return h @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    resid = sd["embed.weight"][x]
    if cfg.positional == "standard":
        resid = resid + sd["pos_embed.weight"][:seq]
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    patterns = []
    for layer in range(2):
        p = f"blocks.{layer}"
        h = norm(resid, f"{p}.ln1")
        q, k, v = (linear(h, f"{p}.attn.{m}").view(batch, seq, H, dh) for m in "qkv")
        if cfg.positional == "rotary":
            q, k = _rope(q), _rope(k)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        pattern = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        if pattern_override is not None and layer in pattern_override:
            pattern = pattern_override[layer].expand_as(pattern)
        patterns.append(pattern)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v).reshape(batch, seq, H * dh)
        resid = resid + linear(z, f"{p}.attn.o")
        if not cfg.attn_only:
            hidden = act(linear(norm(resid, f"{p}.ln2"), f"{p}.mlp.in"))
            resid = resid + linear(hidden, f"{p}.mlp.out")
    logits = norm(resid, "ln_final") @ sd["unembed.weight"].T
    if "unembed.bias" in sd:
        logits = logits + sd["unembed.bias"]
    return logits, patterns


def _perturb(model, seed, scale=0.3):
    """Add noise to every trainable parameter (fresh init has zero biases and unit LN scales,
    which would hide a missing bias or scale)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in training_module(model).parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# --------------------------------------------------------------------------------------------
# 1. bridge == training module (shared parameters), and both == the reference


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_bridge_and_training_module_give_the_same_logits_before_and_after_training(options):
    model = small(**options)
    module = training_module(model)
    assert module is model.original_model and module is not model
    x = tokens()
    with torch.no_grad():
        bridge_out, module_out = model(x), module(x)
    # the bridge's forward returns a plain logits tensor, [B, T, d_vocab]
    assert type(bridge_out) is torch.Tensor and type(module_out) is torch.Tensor
    assert bridge_out.shape == module_out.shape == (4, N_CTX, D_VOCAB)
    close(bridge_out, module_out, atol=1e-5)

    # the bridge owns no parameter of its own: it exposes exactly the training module's tensors
    assert {id(p) for p in model.parameters()} == {id(p) for p in module.parameters()}

    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(module(x)[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # the steps really trained the module

    fresh = small(**options)
    with torch.no_grad():
        trained_module, trained_bridge, untrained = module(x), model(x), fresh(x)
    assert (trained_module - untrained).abs().max() > 1e-2  # training moved the logits
    close(trained_bridge, trained_module, atol=1e-5)
    # and the bridge's (TransformerLens-named) state dict holds the trained weights too
    trained_sd, fresh_sd = model.state_dict(), fresh.state_dict()
    changed = [k for k in trained_sd if not torch.equal(trained_sd[k], fresh_sd[k])]
    assert "embed.weight" in changed and "blocks.1.attn.q.weight" in changed


REFERENCE_OPTIONS = {
    **OPTIONS,
    "gelu": {"act_fn": "gelu"},
    "bare": {"attn_only": True, "norm": "none", "positional": "rotary"},
}


@pytest.mark.parametrize("options", REFERENCE_OPTIONS.values(), ids=REFERENCE_OPTIONS.keys())
def test_bridge_matches_a_reference_transformer_written_from_its_weights(options):
    cfg = config(**options)
    model = build_model(cfg, D_VOCAB, N_CTX, seed=1)
    _perturb(model, seed=2)
    x = tokens(n=3, seed=3)
    with torch.no_grad():
        logits, cache = model.run_with_cache(x)
    expected, patterns = reference_forward(model, cfg, x)
    close(logits, expected, atol=1e-5)
    close(training_module(model)(x).detach(), expected, atol=1e-5)
    for layer in range(2):
        close(cache[f"blocks.{layer}.attn.hook_pattern"], patterns[layer], atol=1e-6)


# --------------------------------------------------------------------------------------------
# 2. TransformerLens hook names


@pytest.mark.parametrize("options", [{}, {"positional": "rotary"}], ids=["standard", "rotary"])
def test_attention_patterns_are_causal_distributions_under_tl_hook_names(options):
    model = small(**options)
    x = tokens(n=3, seq=10)
    with torch.no_grad():
        logits, cache = model.run_with_cache(x)
        plain = model(x)
    close(logits, plain, atol=0)  # caching does not change the output
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (3, SIZES["n_heads"], 10, 10)  # [batch, head, query, key]
        assert torch.all(pattern >= 0)
        close(pattern.sum(-1), torch.ones(3, SIZES["n_heads"], 10), atol=1e-5)
        assert float(pattern.triu(diagonal=1).abs().max()) == 0.0  # never attends to the future
        assert torch.all(pattern[..., 0, 0] == 1.0)  # the first query can only see itself
        assert cache[f"blocks.{layer}.hook_resid_pre"].shape == (3, 10, SIZES["d_model"])


def test_editing_hook_pattern_reweights_the_values_like_the_reference():
    cfg = config()
    model = build_model(cfg, D_VOCAB, N_CTX, seed=4)
    _perturb(model, seed=5)
    x = tokens(n=2, seq=8, seed=6)
    uniform = torch.ones(8, 8).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)

    def uniform_causal(pattern, hook):
        return uniform.expand_as(pattern).clone()

    with torch.no_grad():
        edited = model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_pattern", uniform_causal)])
        plain = model(x)
    expected, _ = reference_forward(model, cfg, x, pattern_override={0: uniform})
    assert (edited - plain).abs().max() > 1e-3
    close(edited, expected, atol=1e-5)
    with torch.no_grad():  # the hook was temporary
        close(model(x), plain, atol=0)


# --------------------------------------------------------------------------------------------
# 3. options change the architecture


def _expected_param_count(cfg: ModelConfig) -> int:
    d, H, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    ln = 2 * d if cfg.norm == "LN" else 0
    attn = 3 * (d * H * dh + H * dh) + H * dh * d + d
    mlp = 0 if cfg.attn_only else d * cfg.d_mlp + cfg.d_mlp + cfg.d_mlp * d + d
    block = (1 if cfg.attn_only else 2) * ln + attn + mlp
    pos = N_CTX * d if cfg.positional == "standard" else 0
    return D_VOCAB * d + pos + 2 * block + ln + d * D_VOCAB  # embed, pos, blocks, final LN, head


@pytest.mark.parametrize("options", REFERENCE_OPTIONS.values(), ids=REFERENCE_OPTIONS.keys())
def test_parameter_count_follows_the_options(options):
    cfg = config(**options)
    model = build_model(cfg, D_VOCAB, N_CTX, seed=0)
    assert n_params(model) == _expected_param_count(cfg)


def test_options_remove_the_parts_they_name():
    full, attn_only, no_norm, rotary = (small(**o) for o in OPTIONS.values())
    assert any("mlp" in n for n in param_names(full))
    assert not any("mlp" in n for n in param_names(attn_only))
    assert n_params(attn_only) < n_params(full)
    is_norm = lambda n: ".ln" in n or n.startswith("ln")  # noqa: E731  (ln1, ln2, ln_out)
    assert sum(map(is_norm, param_names(full))) == 2 * (2 + 2) + 2
    assert not any(map(is_norm, param_names(no_norm)))
    assert n_params(no_norm) < n_params(full)
    assert any(n.startswith("pos.") for n in param_names(full))
    assert not any(n.startswith("pos.") for n in param_names(rotary))
    assert (full.cfg.attn_only, attn_only.cfg.attn_only) == (False, True)
    assert (full.cfg.normalization_type, no_norm.cfg.normalization_type) == ("LN", None)
    positional = (full.cfg.positional_embedding_type, rotary.cfg.positional_embedding_type)
    assert positional == ("standard", "rotary")


def test_sizes_are_reflected_in_model_cfg_and_weight_shapes():
    cfg = ModelConfig(family="standard", n_heads=3, d_model=10, d_head=6, d_mlp=7, act_fn="gelu")
    model = build_model(cfg, d_vocab=4, n_ctx=9, seed=0)
    c = model.cfg
    assert (c.n_heads, c.d_model, c.d_head, c.d_mlp, c.n_layers) == (3, 10, 6, 7, 2)
    assert (c.d_vocab, c.n_ctx, c.act_fn) == (4, 9, "gelu")
    sd = model.state_dict()
    assert sd["blocks.0.attn.q.weight"].shape == (3 * 6, 10)
    assert sd["blocks.1.attn.o.weight"].shape == (10, 3 * 6)
    assert sd["blocks.1.mlp.in.weight"].shape == (7, 10)
    assert sd["pos_embed.weight"].shape == (9, 10)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.zeros(2, 9, dtype=torch.long))
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 3, 9, 9)
    assert cache["blocks.0.attn.hook_z"].shape == (2, 9, 3, 6)


# --------------------------------------------------------------------------------------------
# 4. seeds


def test_weights_depend_only_on_the_seed():
    torch.manual_seed(100)
    a = training_module(small(seed=3)).state_dict()
    after_build = torch.rand(3)
    torch.manual_seed(100)
    expected_draw = torch.rand(3)
    torch.manual_seed(200)  # a different global RNG state must not matter
    b = training_module(small(seed=3)).state_dict()
    c = training_module(small(seed=4)).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    matrices = [k for k in a if a[k].ndim == 2]  # embeddings and linear weights (randomly drawn)
    assert len(matrices) >= 10
    assert all(not torch.equal(a[k], c[k]) for k in matrices)
    assert torch.equal(after_build, expected_draw)  # building a model leaves the global RNG alone


# --------------------------------------------------------------------------------------------
# 5. target-aligned next-token log-probabilities


@pytest.mark.parametrize("options", [{}, {"positional": "rotary"}], ids=["standard", "rotary"])
def test_next_token_log_probs_rows_are_shifted_bridge_logits(options):
    model = small(**options)
    _perturb(model, seed=7)
    x = tokens()
    assert target_offset(model) == 1
    with torch.no_grad():
        logits = model(x)  # the bridge: an independent path from the training module
        rows = next_token_log_probs(model, x)
        last = next_token_log_probs(model, x, last_only=True)
    assert rows.shape == (4, N_CTX, D_VOCAB) and last.shape == (4, D_VOCAB)
    close(rows[:, 0], torch.full((4, D_VOCAB), math.log(1 / D_VOCAB)), atol=1e-6)
    for t in range(1, N_CTX):
        close(rows[:, t], torch.log_softmax(logits[:, t - 1], -1), atol=1e-5)
    close(rows.exp().sum(-1), torch.ones(4, N_CTX), atol=1e-5)
    close(last, rows[:, -1], atol=1e-5)
    # shorter inputs: the same rows, and last_only picks the last of them
    for length in (2, 7):
        with torch.no_grad():
            prefix = next_token_log_probs(model, x[:, :length])
            prefix_last = next_token_log_probs(model, x[:, :length], last_only=True)
        close(prefix, rows[:, :length], atol=1e-5)
        close(prefix_last, rows[:, length - 1], atol=1e-5)


@pytest.mark.parametrize("t", [0, 6, N_CTX - 2])
def test_row_t_does_not_see_token_t_but_later_rows_do(t):
    model = small()
    _perturb(model, seed=8)
    x = tokens(seed=9)
    changed = x.clone()
    changed[:, t] = (changed[:, t] + 1) % D_VOCAB
    with torch.no_grad():
        rows, rows_changed = next_token_log_probs(model, x), next_token_log_probs(model, changed)
    close(rows_changed[:, : t + 1], rows[:, : t + 1], atol=1e-6)
    # the very next row reads it
    assert (rows_changed[:, t + 1] - rows[:, t + 1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "dtype",
    [torch.int32, torch.int16, torch.uint8],
    ids=["int32", "int16", "uint8"],
)
def test_every_integer_dtype_check_tokens_accepts_gives_the_int64_result(dtype):
    model = small()
    x = tokens(n=2, seq=6)
    with torch.no_grad():
        expected = next_token_log_probs(model, x)
        close(next_token_log_probs(model, x.to(dtype)), expected, atol=0)
        last = next_token_log_probs(model, x.to(dtype), last_only=True)
    close(last, expected[:, -1], atol=1e-5)


def test_last_only_on_a_single_token_is_the_uniform_first_row():
    model = small()
    x = tokens(n=2, seq=1)
    with torch.no_grad():
        full = next_token_log_probs(model, x)
        last = next_token_log_probs(model, x, last_only=True)
    close(full[:, 0], torch.full((2, D_VOCAB), math.log(1 / D_VOCAB)), atol=1e-6)
    close(last, full[:, 0], atol=1e-6)


# --------------------------------------------------------------------------------------------
# 6. bad tokens


@pytest.mark.parametrize("last_only", [False, True], ids=["all_rows", "last_only"])
@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.tensor([[0, 1, D_VOCAB]]), r"must lie in \[0, 4\], got values in \[0, 5\]"),
        (torch.tensor([[0, -1, 2]]), r"must lie in \[0, 4\], got values in \[-1, 2\]"),
        (torch.zeros(2, 4), r"tokens must be integer ids, got dtype torch\.float32"),
        (torch.zeros(4, dtype=torch.long), r"tokens must have shape \[batch, seq\], got \(4,\)"),
        (
            torch.zeros(2, N_CTX + 1, dtype=torch.long),
            rf"sequence length {N_CTX + 1} exceeds .*n_ctx={N_CTX}",
        ),
    ],
    ids=["too_large", "negative", "float", "one_dim", "too_long"],
)
def test_bad_tokens_raise_one_line_token_errors(bad, message, last_only):
    with pytest.raises(TokenError, match=message) as info:
        next_token_log_probs(small(), bad, last_only=last_only)
    assert isinstance(info.value, InterpICLError)
    assert "\n" not in str(info.value)


def test_an_empty_sequence_is_a_token_error():
    with pytest.raises(TokenError):
        next_token_log_probs(small(), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(TokenError, match="at least one sequence"):
        next_token_log_probs(small(), torch.zeros(0, 4, dtype=torch.long))
