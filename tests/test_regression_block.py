"""The `block` family (one softmax attention + MLP block on regression tokens): forward against an
independent plain-torch computation, hooks, input checks, config rules, and training, resuming
and loading through the project's trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interp_icl.config import ModelConfig, RunConfig
from interp_icl.errors import ConfigError, TokenError
from interp_icl.models import build_model, is_regression_block, training_module
from interp_icl.presets import PRESETS

D_X, N_POINTS = 3, 6
SIZES = {"d_model": 12, "n_heads": 2, "d_head": 4, "d_mlp": 20}


def block(seed=0, **options):
    config = ModelConfig(family="block", **{**SIZES, **options})
    return build_model(config, D_X + 1, N_POINTS + 1, seed).double()


def inputs(n=4, seed=0, seq=N_POINTS + 1):
    e = torch.randn(
        n, seq, D_X + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    e[:, -1, -1] = 0.0
    return e


def reference_forward(model, e):
    """The readout [B, T], written out with torch.nn.functional (no module code reused)."""
    state = {k: v for k, v in model.state_dict().items()}
    norm = model.cfg.normalization_type == "LN"

    def ln(x, name):
        if not norm:
            return x
        return F.layer_norm(x, x.shape[-1:], state[f"{name}.w"], state[f"{name}.b"], eps=1e-5)

    r = e @ state["embed.W_E"] + state["embed.b_E"]
    a, m = "blocks.0.attn.", "blocks.0.mlp."
    x = ln(r, "blocks.0.ln1")
    heads = []
    for h in range(model.cfg.n_heads):
        q = x @ state[a + "W_Q"][h] + state[a + "b_Q"][h]
        k = x @ state[a + "W_K"][h] + state[a + "b_K"][h]
        v = x @ state[a + "W_V"][h] + state[a + "b_V"][h]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        heads.append(z @ state[a + "W_O"][h])
    r = r + sum(heads) + state[a + "b_O"]
    z = ln(r, "blocks.0.ln2")
    mlp = (
        F.relu(z @ state[m + "W_in"] + state[m + "b_in"]) @ state[m + "W_out"] + state[m + "b_out"]
    )
    r = r + mlp if model.cfg.mlp_skip else mlp
    return (r @ state["unembed.W_U"] + state["unembed.b_U"])[..., 0]


@pytest.mark.parametrize(
    ("norm", "mlp_skip"), [("LN", True), ("none", True), ("LN", False), ("none", False)]
)
def test_forward_matches_a_plain_torch_block(norm, mlp_skip):
    model = block(1, norm=norm, mlp_skip=mlp_skip)
    with torch.no_grad():  # nonzero biases and LN parameters, so that none goes unchecked
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, dtype=param.dtype))
    e = inputs()
    with torch.no_grad():
        out = model(e)
        torch.testing.assert_close(out, reference_forward(model, e), rtol=0, atol=1e-12)
        assert torch.equal(model.predict(e), out[:, -1])
        # causal and position-free: the query alone is the last row of a length-1 sequence, and the
        # readout of position t does not depend on later tokens
        alone = model.predict(e[:, -1:])
        assert not torch.allclose(alone, out[:, -1])
        torch.testing.assert_close(model(e[:, :3]), out[:, :3], rtol=0, atol=1e-12)


def test_hooks_and_shapes():
    model = block()
    e = inputs(n=2)
    _, cache = model.run_with_cache(e)
    t, d, h, k = N_POINTS + 1, SIZES["d_model"], SIZES["n_heads"], SIZES["d_head"]
    shapes = {
        "hook_embed": (2, t, d),
        "blocks.0.hook_resid_pre": (2, t, d),
        "blocks.0.ln1.hook_normalized": (2, t, d),
        "blocks.0.attn.hook_q": (2, t, h, k),
        "blocks.0.attn.hook_pattern": (2, h, t, t),
        "blocks.0.attn.hook_z": (2, t, h, k),
        "blocks.0.hook_attn_out": (2, t, d),
        "blocks.0.mlp.hook_in": (2, t, d),
        "blocks.0.mlp.hook_pre": (2, t, SIZES["d_mlp"]),
        "blocks.0.hook_mlp_out": (2, t, d),
        "blocks.0.hook_resid_post": (2, t, d),
    }
    for name, shape in shapes.items():
        assert tuple(cache[name].shape) == shape, name
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(()).double())
    assert (pattern.triu(1) == 0).all()
    assert is_regression_block(model) and training_module(model) is model


def test_input_checks_are_one_line_token_errors():
    model = block()
    for bad, message in [
        (torch.zeros(2, 4, D_X + 1, dtype=torch.long), "float vectors"),
        (torch.zeros(2, 4, D_X + 2), "shape"),
        (torch.zeros(2, N_POINTS + 2, D_X + 1), "exceeds"),
    ]:
        with pytest.raises(TokenError, match=message):
            model(bad)


@pytest.mark.parametrize(
    "task_fields,model_fields,message",
    [
        ({"name": "markov"}, {"family": "block"}, "cannot learn task 'markov'"),
        ({"name": "regression"}, {"family": "standard"}, "needs model.family 'lsa' or 'block'"),
        ({"name": "regression"}, {"family": "block", "d_mlp": 0}, "model.d_mlp must be"),
        ({"name": "regression"}, {"family": "block", "norm": "RMS"}, "model.norm must be"),
        ({"name": "regression"}, {"family": "block", "attn_only": True}, "has an MLP"),
    ],
)
def test_config_rules(task_fields, model_fields, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({"task": task_fields, "model": model_fields})


def tiny_block_config(**train):
    return RunConfig.from_dict(
        {
            "name": "tiny-block",
            "seed": 0,
            "task": {"name": "regression", "x_dim": D_X, "n_points": N_POINTS},
            "model": {"family": "block", **SIZES},
            "train": {
                "steps": 40,
                "batch_size": 32,
                "optimizer": "adam",
                "lr": 3e-3,
                "eval_every": 10,
                "n_eval": 64,
                "checkpoint_every": 20,
                **train,
            },
        }
    )


def test_trains_resumes_exactly_and_loads(tmp_path):
    from interp_icl.runs import rundir
    from interp_icl.runs import load_run
    from interp_icl.runs import create_run, resume_run

    cfg = tiny_block_config()
    create_run(cfg, tmp_path / "full", progress=False).run()
    create_run(cfg, tmp_path / "cut", progress=False).run(stop_after=27)
    resumed = resume_run(tmp_path / "cut", progress=False)
    assert resumed.step == 24
    resumed.run()

    def rows(run):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rundir.read_metrics(run)]

    assert rows(tmp_path / "cut") == rows(tmp_path / "full")
    first, last = rows(tmp_path / "full")[0], rows(tmp_path / "full")[-1]
    assert {"eval_loss", "gd1_loss", "bayes_loss", "zero_loss", "loss_minus_bayes"} <= set(last)
    assert last["eval_loss"] < first["eval_loss"]
    loaded = load_run(tmp_path / "full")
    other = load_run(tmp_path / "cut")
    assert loaded.step == 40 and is_regression_block(loaded.model)
    for (name, v), (_, w) in zip(
        loaded.model.state_dict().items(), other.model.state_dict().items()
    ):
        assert torch.equal(v, w), name
    batch = loaded.task.sample(64, torch.Generator().manual_seed(9))
    with torch.no_grad():
        loss = float(loaded.task.train_loss(loaded.model, batch.tokens))
    assert loss == pytest.approx(float(loaded.task.evaluate(loaded.model, batch)["eval_loss"]))
    assert load_run(tmp_path / "full", step=0).step == 0


def test_preset_is_a_valid_block_run():
    cfg = PRESETS["implicit-update"]()
    assert cfg.model.family == "block" and cfg.task.name == "regression"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model.mlp_skip and cfg.task.x_dist == "uniform"  # the project's extension
    source = PRESETS["implicit-update-source"]()
    assert RunConfig.from_dict(source.to_dict()) == source
    assert not source.model.mlp_skip and source.model.norm == "none"
    assert source.task.x_dist == "normal" and source.task.x_scale == 1.0


def test_mlp_skip_default_builds_the_same_model_and_false_drops_the_skip():
    """Defaults are unchanged: mlp_skip true gives the same parameters and outputs as a config
    that does not mention it; false feeds only the MLP output to the readout."""
    e = inputs()
    default, with_skip, source = block(2), block(2, mlp_skip=True), block(2, mlp_skip=False)
    assert ModelConfig(family="block").mlp_skip is True
    for name, param in default.state_dict().items():
        assert torch.equal(param, with_skip.state_dict()[name])
        assert torch.equal(param, source.state_dict()[name])  # same initial weights
    with torch.no_grad():
        assert torch.equal(default(e), with_skip(e))
        _, cache = source.run_with_cache(e)
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_post"], cache["blocks.0.hook_mlp_out"], rtol=0, atol=0
    )
    assert not torch.allclose(default(e), source(e))
