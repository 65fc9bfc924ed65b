"""The patching engine against TransformerLens's own patching functions and hand-checkable truths."""

import contextlib
import copy
import io
import math

import pytest
import torch
from transformer_lens import patching as tl_patching

from interp_icl.errors import InterpICLError
from interp_icl.models import build_model
from interp_icl.models.handmade_gih import gih_for_parents
from interp_icl.patching import Metric, Target, ablation, activation_patching, target_loss
from interp_icl.runs import load_run
from interp_icl.runs import create_run
from tests.conftest import tiny_config

ORACLES = {
    ("resid_pre", "pos"): tl_patching.get_act_patch_resid_pre,
    ("resid_mid", "pos"): tl_patching.get_act_patch_resid_mid,
    ("attn_out", "pos"): tl_patching.get_act_patch_attn_out,
    ("mlp_out", "pos"): tl_patching.get_act_patch_mlp_out,
    ("z", "pos"): tl_patching.get_act_patch_attn_head_out_by_pos,
    ("q", "pos"): tl_patching.get_act_patch_attn_head_q_by_pos,
    ("k", "pos"): tl_patching.get_act_patch_attn_head_k_by_pos,
    ("v", "pos"): tl_patching.get_act_patch_attn_head_v_by_pos,
    ("pattern", "pos"): tl_patching.get_act_patch_attn_head_pattern_by_pos,
    ("z", "all"): tl_patching.get_act_patch_attn_head_out_all_pos,
    ("q", "all"): tl_patching.get_act_patch_attn_head_q_all_pos,
    ("k", "all"): tl_patching.get_act_patch_attn_head_k_all_pos,
    ("v", "all"): tl_patching.get_act_patch_attn_head_v_all_pos,
    ("pattern", "all"): tl_patching.get_act_patch_attn_head_pattern_all_pos,
}
SEQ_LEN = 10


@pytest.fixture(scope="module")
def models(tiny_trained_run):
    """A randomly initialised and a trained standard model (TL-native bridges; the trained one is
    the session's `tiny_config()` run)."""
    config = tiny_config()
    random = build_model(config.model, 3, config.task.seq_len, seed=5).eval()
    return {"random": random, "trained": load_run(tiny_trained_run).model}


def metrics():
    """A metric reading every row and one reading only the last row, per sequence."""
    every = Metric(
        lambda out: torch.log_softmax(out, -1)[..., 0].mean(-1) + out[..., 1].mean(-1),
        None,
        "every",
    )
    last = Metric(
        lambda out: 3 * torch.log_softmax(out[:, -1], -1)[:, 2] - out[:, -1, 0], (-1,), "last"
    )
    return [every, last]


def tl_oracle(function, model, clean, corrupted, metric):
    _, clean_cache = model.run_with_cache(clean)
    with contextlib.redirect_stderr(io.StringIO()):  # TransformerLens's tqdm bar
        return function(model, corrupted, clean_cache, lambda out: metric(out).mean())


@pytest.mark.parametrize("weights", ["random", "trained"])
@pytest.mark.parametrize("batch", [1, 16])
def test_every_sweep_equals_transformer_lens(models, weights, batch):
    model = models[weights]
    generator = torch.Generator().manual_seed(batch)
    clean = torch.randint(0, 3, (batch, SEQ_LEN), generator=generator)
    corrupted = torch.randint(0, 3, (batch, SEQ_LEN), generator=generator)
    for (site, by), oracle in ORACLES.items():
        for metric in metrics():
            expected = tl_oracle(oracle, model, clean, corrupted, metric)
            for engine in ("fast", "hooks"):
                result = activation_patching(
                    model, clean, corrupted, Target(site, by), metric, engine=engine
                )
                assert result.mean.shape == expected.shape, (site, by, engine)
                error = (result.mean - expected).abs().max().item()
                assert error < 1e-5, (site, by, metric.name, engine, error)


def test_the_softmax_update_for_unchanged_queries_equals_transformer_lens_with_many_changed_keys(models, monkeypatch):
    """Rows whose query is the base run's get the base softmax updated at the changed keys
    (`FastEngine._updated_rows`). Point patches change one key per patch; with the sparse limit
    lifted every multi-key patch (all positions of k / v, the layer after a resid_pre patch) takes
    that path too, and must still equal TransformerLens."""
    import interp_icl.patching.fast_engine as fast_engine

    monkeypatch.setattr(fast_engine, "SPARSE_KEYS", 10_000)
    model = models["trained"]
    generator = torch.Generator().manual_seed(3)
    clean = torch.randint(0, 3, (4, SEQ_LEN), generator=generator)
    corrupted = torch.randint(0, 3, (4, SEQ_LEN), generator=generator)
    for (site, by), oracle in ORACLES.items():
        if site not in ("k", "v", "resid_pre", "z"):
            continue
        metric = metrics()[0]  # reads every row
        expected = tl_oracle(oracle, model, clean, corrupted, metric)
        result = activation_patching(model, clean, corrupted, Target(site, by), metric, engine="fast")
        assert (result.mean - expected).abs().max().item() < 1e-5, (site, by)


def test_chunking_and_engines_agree_per_sequence(models):
    model = models["trained"]
    generator = torch.Generator().manual_seed(0)
    clean, corrupted = torch.randint(0, 3, (2, 5, SEQ_LEN), generator=generator)
    metric = target_loss(model, corrupted)
    for site in ("resid_pre", "k", "z"):
        whole = activation_patching(model, clean, corrupted, Target(site), metric, engine="fast")
        one_by_one = activation_patching(
            model, clean, corrupted, Target(site), metric, engine="fast", memory_mb=1e-6
        )
        hooks = activation_patching(
            model, clean, corrupted, Target(site), metric, engine="hooks", memory_mb=1e-6
        )
        assert one_by_one.info["chunk_size"] == 1 and whole.info["chunk_size"] > 1
        torch.testing.assert_close(whole.values, one_by_one.values, atol=1e-5, rtol=0)
        torch.testing.assert_close(whole.values, hooks.values, atol=1e-5, rtol=0)


def test_noising_is_denoising_with_the_runs_swapped(models):
    model = models["trained"]
    generator = torch.Generator().manual_seed(1)
    clean, corrupted = torch.randint(0, 3, (2, 4, SEQ_LEN), generator=generator)
    metric = metrics()[0]
    noised = activation_patching(model, clean, corrupted, Target("z"), metric, mode="noise")
    swapped = activation_patching(model, corrupted, clean, Target("z"), metric, mode="denoise")
    torch.testing.assert_close(noised.values, swapped.values)
    # patching every position of the whole residual stream at layer 0 turns one run into the other
    full = activation_patching(model, clean, corrupted, Target("resid_pre", by="all"), metric)
    torch.testing.assert_close(full.values[0], full.source, atol=1e-5, rtol=0)
    assert full.table["recovered"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_ablations_against_direct_hooks(models):
    model = models["trained"]
    tokens = torch.randint(0, 3, (6, SEQ_LEN), generator=torch.Generator().manual_seed(2))
    metric = target_loss(model, tokens)
    zero = ablation(model, tokens, Target("z", by="all"), metric, kind="zero")

    def zero_head(act, hook):
        act = act.clone()
        act[:, :, 1] = 0
        return act

    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
    torch.testing.assert_close(zero.values[1, 1], metric(logits), atol=1e-5, rtol=0)
    # resampling from the same sequences and mean-ablating with a batch of one sequence are no-ops
    same = ablation(
        model, tokens, Target("z", by="all"), metric, kind="resample", reference_tokens=tokens
    )
    torch.testing.assert_close(same.values, same.baseline.expand_as(same.values), atol=1e-5, rtol=0)
    one = ablation(
        model, tokens[:1], Target("mlp_out"), target_loss(model, tokens[:1]), kind="mean"
    )
    torch.testing.assert_close(one.values, one.baseline.expand_as(one.values), atol=1e-5, rtol=0)
    resampled = ablation(model, tokens, Target("z", by="all"), metric, kind="resample")
    assert resampled.info["ablation"] == "resample" and not torch.allclose(
        resampled.values, resampled.baseline
    )


def test_gih_models_patch_through_hooks():
    model = gih_for_parents((1, 2), vocab_size=3, n_ctx=12, window=3, distractor=True)
    generator = torch.Generator().manual_seed(3)
    clean, corrupted = torch.randint(0, 3, (2, 4, 12), generator=generator)
    metric = Metric(lambda out: torch.log(out[:, -1].clamp_min(1e-12))[:, 0], (-1,))
    result = activation_patching(model, clean, corrupted, Target("z", layers=(0,)), metric)
    assert result.info["engine"] == "hooks" and result.mean.shape == (1, 12, 3)
    _, cache = model.run_with_cache(clean)
    for pos, head in [(11, 0), (10, 1), (3, 2)]:

        def patch(act, hook, pos=pos, head=head):
            act = act.clone()
            act[:, pos, head] = cache["blocks.0.attn.hook_z"][:, pos, head]
            return act

        out = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.0.attn.hook_z", patch)])
        torch.testing.assert_close(result.values[0, pos, head], metric(out))
    with pytest.raises(InterpICLError, match="fast patching engine"):
        activation_patching(
            model, clean, corrupted, Target("z", layers=(0,)), metric, engine="fast"
        )
    with pytest.raises(InterpICLError, match="no hook"):
        activation_patching(model, clean, corrupted, Target("resid_pre"), metric)


def test_metric_reading_an_undeclared_row_gets_nan(models):
    model = models["trained"]
    tokens = torch.randint(0, 3, (2, 3, SEQ_LEN), generator=torch.Generator().manual_seed(4))
    sneaky = Metric(lambda out: out[:, 0, 0], (-1,))
    result = activation_patching(model, tokens[0], tokens[1], Target("z"), sneaky)
    assert torch.isnan(result.values).all()


def test_bad_input_is_rejected(models):
    from interp_icl.patching.attribution import attribution_patching

    model = models["trained"]
    tokens = torch.randint(0, 3, (2, SEQ_LEN))
    metric = metrics()[0]
    for bad, message in [
        (lambda: Target("embed"), "unknown patching site"),
        (lambda: Target("z", by="head"), "unknown granularity"),
        (
            lambda: activation_patching(model, tokens, tokens, Target("z", layers=(2,)), metric),
            "out of range",
        ),
        (
            lambda: activation_patching(model, tokens, tokens[:1], Target("z"), metric),
            "differ in shape",
        ),
        (lambda: activation_patching(model, tokens, tokens + 3, Target("z"), metric), "token"),
        (
            lambda: activation_patching(model, tokens, tokens, Target("z"), metric, mode="up"),
            "unknown patching mode",
        ),
        (
            lambda: activation_patching(model, tokens, tokens, Target("z"), metric, engine="gpu"),
            "unknown patching engine",
        ),
        (lambda: ablation(model, tokens, Target("z"), metric, kind="half"), "unknown ablation"),
        (
            lambda: attribution_patching(model, tokens, tokens, Target("z"), metric, mode="up"),
            "unknown patching mode",
        ),
        (
            lambda: activation_patching(
                model, tokens, tokens, Target("z"), Metric(metric.fn, (SEQ_LEN,))
            ),
            "outside",
        ),
    ]:
        with pytest.raises(InterpICLError, match=message):
            bad()
    assert math.isnan(
        float(
            activation_patching(model, tokens[:1], tokens[:1], Target("z"), metric).stderr[0, 0, 0]
        )
    )


def direct_path_oracle(model, clean, corrupted, metric, src, dst, component):
    """The direct path through the bridge's own LayerNorm and projection modules: the q/k/v input
    Linear reads LN(resid + source head's write), and only head `dst` keeps the result."""
    _, clean_cache = model.run_with_cache(clean)
    _, base_cache = model.run_with_cache(corrupted)
    z = "blocks.0.attn.hook_z"
    delta = (clean_cache[z][:, :, src] - base_cache[z][:, :, src]) @ model.blocks[0].attn.W_O[src]
    new_input = model.blocks[1].ln1(base_cache["blocks.1.hook_resid_pre"] + delta)
    captured = {}

    def grab(act, hook):
        captured["act"] = act.clone()
        return act

    model.run_with_hooks(
        corrupted,
        fwd_hooks=[
            (f"blocks.1.attn.{component}.hook_in", lambda act, hook: new_input),
            (f"blocks.1.attn.hook_{component}", grab),
        ],
    )

    def put(act, hook):
        act = act.clone()
        act[:, :, dst] = captured["act"][:, :, dst]
        return act

    return metric(
        model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.1.attn.hook_{component}", put)])
    )


def test_path_patching_equals_the_direct_path_through_the_models_own_modules(models):
    from interp_icl.patching.paths import path_patching

    model = models["trained"]
    clean, corrupted = torch.randint(
        0, 3, (2, 4, SEQ_LEN), generator=torch.Generator().manual_seed(6)
    )
    metric = metrics()[1]
    for component in ("q", "k", "v"):
        for engine in ("fast", "hooks"):
            result = path_patching(
                model, clean, corrupted, metric, component=component, engine=engine
            )
            assert result.axes == ("src_head", "dst_head") and result.values.shape == (2, 2, 4)
            assert list(
                result.table[["src_head", "dst_head"]].itertuples(index=False, name=None)
            ) == [(0, 0), (0, 1), (1, 0), (1, 1)]
            for src in range(2):
                for dst in range(2):
                    expected = direct_path_oracle(
                        model, clean, corrupted, metric, src, dst, component
                    )
                    torch.testing.assert_close(result.values[src, dst], expected, atol=1e-5, rtol=0)


def test_gih_paths_run_through_the_ffn_and_values_carry_nothing():
    from interp_icl.patching.paths import path_patching

    model = gih_for_parents((1, 2), vocab_size=3, n_ctx=12, window=3, distractor=True)
    clean, corrupted = torch.randint(0, 3, (2, 8, 12), generator=torch.Generator().manual_seed(7))
    metric = target_loss(model, clean, rows=(-1,))
    query = path_patching(model, clean, corrupted, metric, component="q")
    value = path_patching(model, clean, corrupted, metric, component="v")
    assert query.info["route"] == "all" and query.values.shape == (3, 1, 8)
    torch.testing.assert_close(value.values, value.baseline.expand_as(value.values))
    # the parent-copying heads move the query; the distractor (head 2) is not read by the FFN
    assert query.effect[:2].abs().min() > 10 * query.effect[2].abs().max()


def test_attribution_is_exact_to_first_order(models):
    from interp_icl.patching import patch_sweep
    from interp_icl.patching.attribution import attribution_sweep, compare_with_exact
    from interp_icl.patching.sources import cached_activations
    from interp_icl.patching.targets import hook_name

    model = copy.deepcopy(
        models["trained"]
    ).double()  # float64: effects ~1e-7; small nudges rarely cross a ReLU kink
    generator = torch.Generator().manual_seed(8)
    tokens = torch.randint(0, 3, (8, SEQ_LEN), generator=generator)
    metric = target_loss(model, tokens)
    for site in ("z", "resid_pre", "pattern", "k"):
        names = [hook_name(site, layer) for layer in range(2)]
        base = cached_activations(model, tokens, names)
        nudged = {
            n: a + 1e-6 * torch.randn(a.shape, generator=generator, dtype=a.dtype)
            for n, a in base.items()
        }
        exact = patch_sweep(model, tokens, nudged, Target(site), metric)
        estimate = attribution_sweep(model, tokens, nudged, Target(site), metric)
        comparison = compare_with_exact(estimate, exact)
        assert comparison["pearson"] > 0.999, (site, comparison)
        assert comparison["max_abs_error"] < 0.05 * comparison["exact_effect_range"], (
            site,
            comparison,
        )


def test_rank_correlation_uses_average_ranks_and_ignores_noise_level_patches():
    from types import SimpleNamespace

    from interp_icl.patching.attribution import _ranks, compare_with_exact

    values = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # brute force: the rank of a value is (#smaller) + (#equal - 1) / 2
    expected = [float((values < v).sum() + ((values == v).sum() - 1) / 2) for v in values]
    assert _ranks(values).tolist() == expected

    # 300 patches that cannot matter (exact 0 or float noise) and 6 that do, in the same order in
    # both sweeps: the estimate ranks the 6 correctly, so the rank correlation is 1, whatever
    # the order of the noise
    generator = torch.Generator().manual_seed(0)
    signal = torch.tensor([-1.5, -0.7, -0.2, 0.05, 0.4, 1.1], dtype=torch.float64)
    noise = torch.cat([torch.zeros(150), 1e-7 * torch.randn(150, generator=generator)]).double()
    exact = torch.cat([noise, signal])
    estimate = torch.cat([-noise, 0.9 * signal])  # noise ranks reversed
    comparison = compare_with_exact(
        SimpleNamespace(effect=estimate), SimpleNamespace(effect=exact)
    )
    assert comparison["n_ranked"] == 6 and comparison["spearman"] == pytest.approx(1.0)
    assert comparison["pearson"] > 0.99


def test_parent_corruption_changes_exactly_the_last_tokens_parents():
    from interp_icl.patching.experiment import parent_corruption
    from interp_icl.tasks import make_task

    task = make_task(tiny_config(task={"parents": [1, 3]}).task)
    clean = task.sample(50, torch.Generator().manual_seed(0)).tokens
    corrupted = parent_corruption(task, clean, torch.Generator().manual_seed(1))
    changed = (clean != corrupted).any(0).nonzero()[:, 0].tolist()
    seq_len = clean.shape[1]
    assert changed == [seq_len - 4, seq_len - 2]
    assert (clean[:, changed] != corrupted[:, changed]).all()


def test_patch_cli_writes_table_summary_and_offline_heatmap(tmp_path):
    import json

    import pandas as pd

    from tests.test_cli import run_cli

    run_dir = tmp_path / "tiny"
    create_run(
        tiny_config(train={"steps": 8, "checkpoint_every": 8}), run_dir, progress=False
    ).run()
    done = run_cli("patch", str(run_dir), "--n-sequences", "8", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "largest effects" in done.stdout and "attribution patching vs exact" in done.stdout
    out = run_dir / "patching"
    table = pd.read_parquet(out / "patch_z_pos_step8.parquet")
    assert len(table) == 2 * 24 * 2 and {
        "layer",
        "pos",
        "head",
        "effect",
        "effect_stderr",
        "recovered",
    } <= set(table)
    summary = json.loads((out / "patch_z_pos_step8.json").read_text())
    assert summary["engine"] == "fast" and summary["settings"]["corrupt"] == "parents"
    assert summary["versions"]["torch"] == torch.__version__
    html = (out / "patch_z_pos_step8.html").read_text()
    assert (
        '<script src="http' not in html and "Plotly.newPlot" in html
    )  # plotly.js inlined: offline
    before = sorted(p.name for p in out.iterdir())
    bad = run_cli("patch", str(run_dir), "--target", "embed", "--no-progress", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown patching site 'embed'")
    assert (
        len(bad.stderr.strip().splitlines()) == 1
        and sorted(p.name for p in out.iterdir()) == before
    )
