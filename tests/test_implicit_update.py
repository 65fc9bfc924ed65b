"""The implicit weight update (REFERENCE §4) against TransformerLens's own block computation.

Truths used here, none of them the module's own attention code:
  * with context: ``blocks.{l}.hook_resid_post`` at q from a normal TransformerLens forward;
  * without context, W + ΔW: a copy of the model whose state dict has ΔW added to the MLP input
    weight (``blocks.{l}.mlp.in.weight``, nn.Linear orientation) and ΔA to the MLP output bias,
    whose block module is then called on the query's block input alone (a length-1 sequence, so
    the query can only attend to itself); and the same copy run as a whole model with a
    ``hook_pattern`` hook that makes row q one-hot on q.
  * token by token: the query seeing only context positions 0..i-1 is TransformerLens's forward
    with row q of ``hook_pattern`` restricted to those keys and renormalised.
"""

import copy

import pytest
import torch

from interp_icl.analysis.implicit_update import (
    implicit_update,
    implicit_weight_update,
    no_update_output,
    query_alone_output,
    relative_difference,
    step_norm_slope,
    token_by_token_updates,
)
from interp_icl.config import ModelConfig
from interp_icl.errors import InterpICLError, TokenError
from interp_icl.models import build_model

D_VOCAB, N_CTX = 5, 16
# n_heads * d_head (8) != d_model (12) != d_mlp (20): a transposed weight cannot go unnoticed.
SIZES = {"n_heads": 2, "d_model": 12, "d_head": 4, "d_mlp": 20}
VARIANTS = {
    "LN": {},
    "no_norm": {"norm": "none"},
    "rotary": {"positional": "rotary"},
    "gelu": {"act_fn": "gelu"},
}
EXACT = 1e-10  # float64: the identities hold to rounding (~1e-15)


def small(seed=0, **options):
    config = ModelConfig(family="standard", **{**SIZES, **options})
    return build_model(config, D_VOCAB, N_CTX, seed).double()


def tokens(n=4, seq=N_CTX, seed=0, d_vocab=D_VOCAB):
    return torch.randint(0, d_vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def block_alone(model, x, layer):
    """TransformerLens's block module on block inputs ``[B, d]`` as length-1 sequences."""
    with torch.no_grad():
        out = model.blocks[layer](x[:, None])
    return (out[0] if isinstance(out, tuple) else out)[:, 0]


def edited(model, layer, delta_w, bias_shift, into=None):
    """A copy of `model` (or `into`, an earlier copy, overwritten) with ΔW ``[d_mlp, d_model]``
    added to the MLP input weight and ΔA to the MLP output bias, through the state dict."""
    into = copy.deepcopy(model) if into is None else into
    state = model.state_dict()
    state[f"blocks.{layer}.mlp.in.weight"] = state[f"blocks.{layer}.mlp.in.weight"] + delta_w
    state[f"blocks.{layer}.mlp.out.bias"] = state[f"blocks.{layer}.mlp.out.bias"] + bias_shift
    into.load_state_dict(state)
    return into


def alone_pattern_hook(q, keys=None):
    """hook_pattern edit: row q sees only `keys` (default: itself), renormalised."""

    def hook(pattern, hook):
        pattern = pattern.clone()
        row = torch.zeros_like(pattern[:, :, q])
        if keys is None:
            row[..., q] = 1.0
        else:
            row[..., keys] = pattern[:, :, q, keys]
            row = row / row.sum(-1, keepdim=True)
        pattern[:, :, q] = row
        return pattern

    return hook


def resid_post(model, toks, layer, q, hooks=()):
    """``blocks.{layer}.hook_resid_post`` at q ``[B, d]`` from a TransformerLens forward (with
    `hooks` applied)."""
    name, store = f"blocks.{layer}.hook_resid_post", {}

    def read(resid, hook):
        store["resid"] = resid[:, q].clone()

    with torch.no_grad():
        model.run_with_hooks(toks, fwd_hooks=[*hooks, (name, read)])
    return store["resid"]


def resid_posts(model, toks):
    """``blocks.{l}.hook_resid_post`` of every layer, ``{l: [B, T, d]}``, from one normal forward."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    return {layer: cache[name] for layer, name in enumerate(names)}


def weight_edited_outputs(model, update, toks, whole_model=False):
    """Per sequence: the edited copy's block output at q without context ``[B, d]``."""
    layer, q = update.layer, update.query_pos
    outs, copy_ = [], None
    for b in range(toks.shape[0]):
        copy_ = edited(model, layer, update.delta_w[b], update.bias_shift[b], copy_)
        torch.testing.assert_close(
            copy_.blocks[layer].mlp.W_in, model.blocks[layer].mlp.W_in + update.delta_w_in[b]
        )
        if whole_model:
            hook = (f"blocks.{layer}.attn.hook_pattern", alone_pattern_hook(q))
            outs.append(resid_post(copy_, toks[b : b + 1], layer, q, [hook])[0])
        else:
            outs.append(block_alone(copy_, update.resid_pre[b : b + 1], layer)[0])
    return torch.stack(outs)


CASES = [(v, seed) for v in ("LN", "no_norm") for seed in (0, 1, 2)]
CASES += [("rotary", 0), ("rotary", 1), ("gelu", 0)]


@pytest.mark.parametrize(("variant", "seed"), CASES)
def test_update_reproduces_the_block_with_context(variant, seed):
    model = small(seed, **VARIANTS[variant])
    toks = tokens(seed=seed)
    truths = resid_posts(model, toks)  # (1) TL, with context
    for layer in (0, 1):
        for query_pos in (1, 6, -1):
            update = implicit_weight_update(model, toks, layer, query_pos)
            truth = truths[layer][:, update.query_pos]
            assert torch.equal(truth, update.resid_post)
            assert relative_difference(update.output_with_context, truth).max() < EXACT
            # (2) TL's block, weights edited, query alone
            alone = weight_edited_outputs(model, update, toks)
            assert relative_difference(alone, truth).max() < EXACT
            assert relative_difference(update.output_updated, truth).max() < EXACT
            assert relative_difference(query_alone_output(model, toks, update), truth).max() < EXACT
            # (3) rank one, or zero where the context is indistinguishable from the query: with
            # rotary positions (no absolute position in the residual stream) a context of copies
            # of the query token gives every position the same keys' values, in every layer
            singular = torch.linalg.svdvals(update.delta_w)
            moved = singular[:, 0] > 1e-12
            assert (singular[moved, 1] / singular[moved, 0]).max() < 1e-10
            for b in torch.nonzero(~moved).flatten():
                q = update.query_pos
                assert variant == "rotary"
                assert (toks[b, : q + 1] == toks[b, q]).all()
                assert update.bias_shift[b].abs().max() < 1e-12
            # (4) without ΔW and ΔA the block without context is a different block
            unedited = block_alone(model, update.resid_pre, layer)
            assert relative_difference(unedited, truth)[moved].min() > 1e-3
            assert relative_difference(update.output_without_context, unedited).max() < EXACT
            if query_pos == -1:
                no_update = no_update_output(model, toks, layer, query_pos)
                assert relative_difference(no_update, unedited).max() < EXACT


def test_whole_model_with_edited_weights_and_a_self_only_pattern():
    model = small(0)
    toks = tokens(n=3, seed=5)
    for layer in (0, 1):
        update = implicit_weight_update(model, toks, layer, 9)
        truth = resid_post(model, toks, layer, 9)
        alone = weight_edited_outputs(model, update, toks, whole_model=True)
        assert relative_difference(alone, truth).max() < EXACT
        # and the same whole-model run with the original weights is not the truth
        hook = (f"blocks.{layer}.attn.hook_pattern", alone_pattern_hook(9))
        assert relative_difference(resid_post(model, toks, layer, 9, [hook]), truth).min() > 1e-3


def test_token_by_token_updates_match_masked_transformer_lens():
    model = small(1, positional="rotary")
    toks = tokens(n=3, seed=2)
    layer, q = 1, 11
    steps = token_by_token_updates(model, toks, layer, q)
    full = implicit_weight_update(model, toks, layer, q)
    assert steps.update_left.shape == (3, q + 1, SIZES["d_mlp"])
    assert steps.step_norms.shape == (3, q)
    assert steps.delta_w(0).abs().max() == 0
    torch.testing.assert_close(steps.delta_w(q), full.delta_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(steps.bias_shift[:, q], full.bias_shift, rtol=0, atol=1e-12)
    for i in (1, 4, 10):
        keys = [*range(i), q]
        hook = (f"blocks.{layer}.attn.hook_pattern", alone_pattern_hook(q, keys))
        truth = resid_post(model, toks, layer, q, [hook])  # TL: query sees 0..i-1 and itself
        outs, copy_ = [], None
        for b in range(toks.shape[0]):
            copy_ = edited(model, layer, steps.delta_w(i)[b], steps.bias_shift[b, i], copy_)
            outs.append(block_alone(copy_, full.resid_pre[b : b + 1], layer)[0])
        assert relative_difference(torch.stack(outs), truth).max() < EXACT
    frobenius = torch.stack(
        [
            (steps.delta_w(i) - steps.delta_w(i - 1)).flatten(1).norm(dim=-1)
            for i in range(1, q + 1)
        ],
        1,
    )
    torch.testing.assert_close(steps.step_norms, frobenius, rtol=1e-10, atol=0)


def test_pass_table_and_summary():
    model = small(2)
    result = implicit_update(model, tokens(n=6, seed=3), layer=1, query_pos=-1)
    table, summary = result.table, result.summary
    assert {"unit", "metric", "mean", "stderr", "n", "layer", "query_pos"} <= set(table.columns)
    metrics = set(table["metric"])
    assert {"relative_difference", "delta_w_rank", "delta_w_norm", "bias_shift_norm"} <= metrics
    assert (table["n"] == 6).all()
    assert summary["max_relative_difference"] < EXACT
    assert summary["mean_relative_difference_no_update"] > 1e-3
    assert summary["max_recompute_error"] < EXACT
    assert summary["delta_w_rank"] == 1 and summary["max_delta_w_singular_ratio"] < 1e-10
    assert len(summary["step_norms"]) == N_CTX - 1
    steps = table[table["metric"] == "step_norm"]
    assert list(steps["context_size"]) == list(range(1, N_CTX))
    assert '"max_relative_difference"' in result.to_json()


def test_float32_model_is_exact_to_float32_rounding():
    model = build_model(ModelConfig(family="standard", **SIZES), D_VOCAB, N_CTX, 0)
    summary = implicit_update(model, tokens(n=8), layer=0, token_by_token=False).summary
    assert summary["dtype"] == "float32"
    assert summary["max_relative_difference"] < 1e-5
    assert summary["delta_w_rank"] == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from interp_icl.runs import load_run
    from interp_icl.runs import create_run
    from tests.conftest import tiny_config

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config = tiny_config(train={"steps": 40, "eval_every": 40, "checkpoint_every": 40})
    create_run(config, run_dir, force=True, progress=False).run()
    return load_run(run_dir).model.double()


@pytest.mark.parametrize("layer", [0, 1])
def test_trained_model(trained, layer):
    toks = tokens(n=8, seq=24, seed=7, d_vocab=3)
    truths = resid_posts(trained, toks)
    for query_pos in (3, 12, -2, -1):
        update = implicit_weight_update(trained, toks, layer, query_pos)
        truth = truths[layer][:, update.query_pos]
        alone = weight_edited_outputs(trained, update, toks)
        assert relative_difference(alone, truth).max() < EXACT
        assert relative_difference(update.output_with_context, truth).max() < EXACT
        singular = torch.linalg.svdvals(update.delta_w)
        assert (singular[:, 1] / singular[:, 0]).max() < 1e-10
    summary = implicit_update(trained, toks, layer).summary
    assert summary["max_relative_difference"] < EXACT and summary["delta_w_rank"] == 1
    steps = summary["step_norms"]
    assert len(steps) == 23 and all(s >= 0 for s in steps)


def test_unsupported_blocks_and_bad_positions():
    attn_only = build_model(
        ModelConfig(family="standard", attn_only=True, **SIZES), D_VOCAB, N_CTX, 0
    )
    with pytest.raises(InterpICLError, match="attention-only"):
        implicit_update(attn_only, tokens())
    gih = build_model(
        ModelConfig(family="gih", n_heads=2, window=2, max_degree=1), D_VOCAB, N_CTX, 0
    )
    with pytest.raises(InterpICLError, match="gih"):
        implicit_update(gih, tokens())
    model = small(0)
    with pytest.raises(InterpICLError, match="layer"):
        implicit_update(model, tokens(), layer=2)
    with pytest.raises(InterpICLError, match="context token"):
        implicit_update(model, tokens(), query_pos=0)
    with pytest.raises(InterpICLError, match="outside"):
        implicit_update(model, tokens(), query_pos=N_CTX)


# ----- the regression block (family "block"): float vector tokens, no positions ------------------
# Truths: with context, the block's own ``hook_resid_post`` / `predict` at q; without context with
# W + ΔW, a deepcopy whose state dict has ΔWᵀ added to ``blocks.0.mlp.W_in`` (TransformerLens
# orientation) and ΔA to ``blocks.0.mlp.b_out``, run as a whole model on the query token alone (a
# length-1 sequence: with no positional embedding this is exactly the block without context).
# Token by token, the query seeing context 0..i-1 is the model run on those i tokens + the query.

REG_D, REG_N = 4, 12
REG_SIZES = {"n_heads": 2, "d_model": 12, "d_head": 4, "d_mlp": 20}


def regression_block(seed=0, norm="LN", mlp_skip=True):
    """A random block whose biases and LN parameters are perturbed too (none is left at 0/1);
    `mlp_skip` False is the source's block (the MLP output replaces the stream)."""
    config = ModelConfig(family="block", norm=norm, mlp_skip=mlp_skip, **REG_SIZES)
    model = build_model(config, REG_D + 1, REG_N + 1, seed).double()
    generator = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model


def regression_inputs(n=6, seed=0, d=REG_D, n_points=REG_N, x_dist="uniform"):
    """Model inputs ``[n, N + 1, d + 1]`` float64 (query y slot 0) and the targets ``[n]``."""
    from interp_icl.config import TaskConfig
    from interp_icl.tasks import make_task

    task = make_task(TaskConfig(name="regression", x_dim=d, n_points=n_points, x_dist=x_dist))
    tokens = task.sample(n, torch.Generator().manual_seed(seed)).tokens.double()
    return task.model_input(tokens), task.targets(tokens)


def block_edited(model, delta_w, bias_shift, into=None, layer=0):
    """Deepcopy of the regression block with ΔW ``[d_mlp, d_model]`` added (transposed) to
    ``blocks.{layer}.mlp.W_in`` and ΔA to ``blocks.{layer}.mlp.b_out``, via the state dict."""
    into = copy.deepcopy(model) if into is None else into
    state = model.state_dict()
    state[f"blocks.{layer}.mlp.W_in"] = state[f"blocks.{layer}.mlp.W_in"] + delta_w.T
    state[f"blocks.{layer}.mlp.b_out"] = state[f"blocks.{layer}.mlp.b_out"] + bias_shift
    into.load_state_dict(state)
    return into


def query_alone(model, e):
    """(``blocks.0.hook_resid_post``, prediction) of the model run on each row's last token alone
    ``e`` ``[B, 1, d + 1]``: ``[B, d_model]``, ``[B]``."""
    with torch.no_grad():
        prediction, cache = model.run_with_cache(e, names_filter="blocks.0.hook_resid_post")
    return cache["blocks.0.hook_resid_post"][:, -1], prediction[:, -1]


def check_regression_block(model, e, query_positions=(1, 5, -1)):
    """The implicit update reproduces the block (and ŷ) at each query position; returns the
    largest relative difference seen."""
    with torch.no_grad():
        readout, cache = model.run_with_cache(e, names_filter="blocks.0.hook_resid_post")
    worst = 0.0
    for query_pos in query_positions:
        update = implicit_weight_update(model, e, 0, query_pos)
        q = update.query_pos
        truth, truth_y = cache["blocks.0.hook_resid_post"][:, q], readout[:, q]
        assert torch.equal(update.resid_post, truth)
        outs, ys, copy_ = [], [], None
        for b in range(e.shape[0]):
            copy_ = block_edited(model, update.delta_w[b], update.bias_shift[b], copy_)
            out, y = query_alone(copy_, e[b : b + 1, q : q + 1])
            outs.append(out[0])
            ys.append(y[0])
        rel = relative_difference(torch.stack(outs), truth)
        assert rel.max() < EXACT
        assert (torch.stack(ys) - truth_y).abs().max() < EXACT * (1 + truth_y.abs().max())
        assert relative_difference(update.output_updated, truth).max() < EXACT
        assert relative_difference(query_alone_output(model, e, update), truth).max() < EXACT
        singular = torch.linalg.svdvals(update.delta_w)
        assert (singular[:, 0] > 1e-8).all()
        assert (singular[:, 1] / singular[:, 0]).max() < 1e-10  # rank 1
        unedited, _ = query_alone(model, e[:, q : q + 1])
        assert relative_difference(unedited, truth).min() > 1e-3  # the context matters
        assert relative_difference(update.output_without_context, unedited).max() < EXACT
        worst = max(worst, float(rel.max()))
    return worst


@pytest.mark.parametrize(("norm", "seed"), [(n, s) for n in ("LN", "none") for s in (0, 1, 2)])
def test_regression_block_update_reproduces_the_block(norm, seed):
    model = regression_block(seed, norm)
    e, _ = regression_inputs(seed=seed)
    assert check_regression_block(model, e) < EXACT


@pytest.mark.parametrize(("norm", "seed"), [(n, s) for n in ("LN", "none") for s in (0, 1, 2)])
def test_source_block_without_mlp_skip_update_reproduces_the_block(norm, seed):
    """The source's block (no MLP skip; Gaussian x): W + ΔW alone reproduces it, no bias shift."""
    model = regression_block(seed, norm, mlp_skip=False)
    e, _ = regression_inputs(seed=seed, x_dist="normal")
    assert check_regression_block(model, e) < EXACT
    update = implicit_weight_update(model, e)
    assert torch.equal(update.bias_shift, torch.zeros_like(update.bias_shift))
    assert relative_difference(update.attn_with_context, update.attn_without_context).min() > 1e-3
    # the skip's bias shift is what the block with the skip needs; without it, it is wrong here
    wrong = block_edited(
        model, update.delta_w[0], update.attn_with_context[0] - update.attn_without_context[0]
    )
    out, _ = query_alone(wrong, e[:1, -1:])
    assert relative_difference(out, update.resid_post[:1]).min() > 1e-3


@pytest.mark.parametrize("mlp_skip", [True, False])
def test_regression_block_token_by_token_is_a_shorter_context(mlp_skip):
    model = regression_block(3, mlp_skip=mlp_skip)
    e, _ = regression_inputs(n=4, seed=4)
    q = REG_N
    steps = token_by_token_updates(model, e, 0, q)
    assert steps.step_norms.shape == (4, q)
    for i in (0, 1, 5, q):
        shorter = torch.cat([e[:, :i], e[:, q : q + 1]], dim=1)  # context 0..i-1, then the query
        with torch.no_grad():
            _, cache = model.run_with_cache(shorter, names_filter="blocks.0.hook_resid_post")
        truth = cache["blocks.0.hook_resid_post"][:, -1]
        outs, copy_ = [], None
        for b in range(4):
            copy_ = block_edited(model, steps.delta_w(i)[b], steps.bias_shift[b, i], copy_)
            outs.append(query_alone(copy_, e[b : b + 1, q : q + 1])[0][0])
        assert relative_difference(torch.stack(outs), truth).max() < EXACT
        if i > 0:
            singular = torch.linalg.svdvals(steps.delta_w(i))
            assert (singular[:, 1] / singular[:, 0]).max() < 1e-10


def test_regression_block_pass_and_float32():
    model = regression_block(0)
    e, _ = regression_inputs(n=8, seed=6)
    summary = implicit_update(model, e).summary
    assert summary["max_relative_difference"] < EXACT and summary["delta_w_rank"] == 1
    assert summary["mean_relative_difference_no_update"] > 1e-3
    assert len(summary["step_norms"]) == REG_N
    low, high = summary["step_norm_slope_interval"]
    assert low <= summary["step_norm_slope"] <= high
    single = implicit_update(model.float(), e.float(), token_by_token=False).summary
    assert single["dtype"] == "float32" and single["max_relative_difference"] < 1e-5
    with pytest.raises(TokenError, match="float vectors"):
        implicit_update(model, e.long())
    lsa = build_model(ModelConfig(family="lsa"), REG_D + 1, REG_N + 1, 0)
    with pytest.raises(InterpICLError, match="linear self-attention"):
        implicit_update(lsa, e)


def train_tiny_block(tmp_path_factory, name, task=None, model=None):
    """A tiny block trained 150 steps with the project's trainer (about 3 s on 1 core)."""
    from interp_icl.config import RunConfig
    from interp_icl.runs import create_run, load_run

    config = RunConfig.from_dict(
        {
            "name": name,
            "seed": 0,
            "task": {"name": "regression", "x_dim": REG_D, "n_points": REG_N, **(task or {})},
            "model": {"family": "block", **REG_SIZES, **(model or {})},
            "train": {
                "steps": 150,
                "batch_size": 64,
                "optimizer": "adam",
                "lr": 3e-3,
                "eval_every": 150,
                "n_eval": 256,
                "checkpoint_every": 150,
            },
        }
    )
    run_dir = tmp_path_factory.mktemp("runs") / name
    create_run(config, run_dir, force=True, progress=False).run()
    return load_run(run_dir)


@pytest.fixture(scope="module")
def trained_block(tmp_path_factory):
    return train_tiny_block(tmp_path_factory, "tiny-block")


@pytest.fixture(scope="module")
def trained_source_block(tmp_path_factory):
    """The source's setting, tiny: no MLP skip, no norm, x ~ N(0, I)."""
    return train_tiny_block(
        tmp_path_factory,
        "tiny-source-block",
        task={"x_dist": "normal"},
        model={"norm": "none", "mlp_skip": False},
    )


def test_trained_regression_block(trained_block):
    metrics = trained_block.metrics()
    assert metrics["eval_loss"].iloc[-1] < 0.8 * metrics["zero_loss"].iloc[-1]  # it learned
    model = trained_block.model.double()
    e, _ = regression_inputs(n=8, seed=7)
    assert check_regression_block(model, e, (2, 7, -1)) < EXACT
    summary = implicit_update(model, e).summary
    assert summary["max_relative_difference"] < EXACT and summary["delta_w_rank"] == 1


@pytest.mark.parametrize("setting", ["extension", "source"])
def test_study_script_on_the_trained_block(setting, request):
    """analyses/implicit_update.py's `study` on a few tasks, in both settings: equality, rank 1,
    the step-norm slope with its interval, and its factored fine-tuning agrees with the real model
    (the script checks that itself; without the MLP skip its context-free prediction must drop
    the h term)."""
    fixture = {"extension": "trained_block", "source": "trained_source_block"}[setting]
    trained_block = request.getfixturevalue(fixture)
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "analyses" / "implicit_update.py"
    spec = importlib.util.spec_from_file_location("implicit_update_study", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    task = trained_block.task
    tokens = task.sample(32, torch.Generator().manual_seed(8)).tokens.double()
    result = script.study(trained_block.model.double(), tokens, task)
    eq = result["equality"]
    assert eq["max_abs_prediction_difference"] < EXACT
    assert eq["max_abs_prediction_difference_copies"] < EXACT
    assert eq["loss_with_context"] == pytest.approx(eq["loss_updated_without_context"], abs=1e-12)
    assert eq["max_delta_w_rank"] == 1
    assert len(result["dynamics"]["mean_step_norms"]) == REG_N
    fit = result["dynamics"]["step_norm_slope"]
    assert fit["low"] <= fit["slope"] <= fit["high"] and fit["n_tasks"] == 32
    assert result["fine_tune_check"] < EXACT
    assert len(result["fine_tuning"]) == len(script.LEARNING_RATES)
    assert set(script.SETTINGS) == {"extension", "source"}
    untrained = build_model(trained_block.config.model, REG_D + 1, REG_N + 1, 0).double()
    controls = script.step_norm_controls(
        untrained, trained_block.model.double(), task.model_input(tokens)
    )
    assert set(controls) == {"untrained", "growing_context"}


# Step norms ‖ΔW(i) − ΔW(i−1)‖_F: log-log slope of their mean over tasks against i, with a
# bootstrap interval over tasks (`step_norm_slope`).


def test_step_norm_slope_statistic():
    """A power law i^-1 with multiplicative noise gives slope -1 with an interval below 0; steps
    with no trend give an interval that contains 0 (the check can fail)."""
    noise = torch.exp(
        0.3 * torch.randn(200, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    i = torch.arange(1, 21, dtype=torch.float64)
    power = step_norm_slope(noise / i)
    assert power.slope == pytest.approx(-1.0, abs=0.03) and power.significantly_negative
    assert power.low < power.slope < power.high and 0 < power.stderr < 0.05
    flat = step_norm_slope(noise)
    assert flat.low < 0 < flat.high and not flat.significantly_negative
    assert step_norm_slope(noise) == flat  # seeded bootstrap
    assert step_norm_slope(noise, seed=1) != flat
    for bad, message in [
        (noise[0], "must be"),
        (noise[:, :1], "q >= 2"),
        (-noise, "positive"),
    ]:
        with pytest.raises(InterpICLError, match=message):
            step_norm_slope(bad)


def growing_context(e):
    """Control: context example i (x_i, y_i) multiplied by i = 1..N (still y_i = <w, x_i>), so
    that later examples are larger; the query is unchanged. ``[B, N + 1, d + 1]``."""
    scale = torch.arange(1, e.shape[1], dtype=e.dtype)
    grown = e.clone()
    grown[:, :-1] *= scale[None, :, None]
    return grown


def test_trained_source_block_is_exact_and_its_step_norms_shrink(trained_source_block):
    """The source's setting trained for 150 steps: the update is exact, and the mean step norm
    falls with i (log-log slope < 0, 95% bootstrap interval over 256 tasks below 0). Controls,
    measured: on a context whose examples grow as i the slope is positive (the check fails
    there), and an untrained block's steps shrink as well — the shrinkage comes from the softmax
    averaging over i.i.d. examples, not from training (docs/analysis.md)."""
    from interp_icl.models import build_model

    metrics = trained_source_block.metrics()
    assert metrics["eval_loss"].iloc[-1] < 0.8 * metrics["zero_loss"].iloc[-1]  # it learned
    model = trained_source_block.model.double()
    assert not model.cfg.mlp_skip
    e, _ = regression_inputs(n=8, seed=7, x_dist="normal")
    assert check_regression_block(model, e, (2, 7, -1)) < EXACT
    e, _ = regression_inputs(n=256, seed=9, x_dist="normal")
    fit = step_norm_slope(token_by_token_updates(model, e).step_norms)
    assert fit.significantly_negative and fit.high < -0.5  # measured: -0.88 [-0.93, -0.83]
    grown = step_norm_slope(token_by_token_updates(model, growing_context(e)).step_norms)
    assert not grown.significantly_negative and grown.low > 0  # measured: 0.59 [0.52, 0.65]
    config = trained_source_block.config.model
    untrained = build_model(config, REG_D + 1, REG_N + 1, 0).double()
    fresh = step_norm_slope(token_by_token_updates(untrained, e).step_norms)
    assert fresh.significantly_negative  # measured: -0.72 [-0.78, -0.67]


def test_trained_extension_block_step_norms_shrink(trained_block):
    """The project's extension (pre-LN, MLP skip, uniform x): the same slope check. Controls,
    measured: the growing-context control does not fail here (LN1 removes the examples' scale),
    and the untrained block's steps shrink too."""
    from interp_icl.models import build_model

    model = trained_block.model.double()
    e, _ = regression_inputs(n=256, seed=9)
    fit = step_norm_slope(token_by_token_updates(model, e).step_norms)
    assert fit.significantly_negative and fit.high < -0.5  # measured: -0.94 [-0.98, -0.89]
    grown = step_norm_slope(token_by_token_updates(model, growing_context(e)).step_norms)
    assert grown.significantly_negative  # measured: -0.93 [-0.98, -0.89]
    untrained = build_model(trained_block.config.model, REG_D + 1, REG_N + 1, 0).double()
    fresh = step_norm_slope(token_by_token_updates(untrained, e).step_norms)
    assert fresh.significantly_negative  # measured: -0.92 [-0.95, -0.88]
