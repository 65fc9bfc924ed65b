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
    token_by_token_updates,
)
from interp_icl.config import ModelConfig
from interp_icl.errors import InterpICLError
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
    from interp_icl.training.loading import load_run
    from interp_icl.training.trainer import Trainer
    from tests.conftest import tiny_config

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config = tiny_config(train={"steps": 40, "eval_every": 40, "checkpoint_every": 40})
    Trainer.create(config, run_dir, force=True, progress=False).run()
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
