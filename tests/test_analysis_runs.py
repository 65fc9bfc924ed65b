"""Analysis of trained runs: the pipeline, its cache, dynamics and `interp-icl analyze`."""

import json

import pandas as pd
import pytest

import interp_icl.runs.analysis as runs_analysis
from interp_icl.analysis.dynamics import half_rise_step, stage_order
from interp_icl.analysis.pipeline import AnalysisSettings
from interp_icl.errors import InterpICLError
from interp_icl.runs import analyze_checkpoint, create_run, dynamics, store
from tests.test_cli import run_cli

FAST = dict(n_sequences=16, n_kernels=50)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import tiny_config

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    create_run(tiny_config(train={"steps": 8, "checkpoint_every": 8}), run_dir, progress=False).run()
    return run_dir


def test_checkpoint_analysis_is_cached_and_deterministic(tiny_run, monkeypatch):
    settings = AnalysisSettings(**FAST)
    first = analyze_checkpoint(tiny_run, "last", settings, use_cache=False)
    assert set(first.results) == {"copier", "selector", "classifier", "head_scores", "theory"}
    where = store.entry_dir(tiny_run, "analysis", 8, settings.key())
    assert (where / "table.parquet").is_file() and where.name.startswith("step_00000008-")
    # other settings get their own folder in the run's result store
    assert store.entry_dir(tiny_run, "analysis", 8, AnalysisSettings(n_sequences=17, n_kernels=50).key()) != where
    table = first.table()
    assert {"step", "pass", "unit", "metric", "mean", "stderr", "n"} <= set(table.columns)
    assert (table["step"] == 8).all()

    monkeypatch.setattr(runs_analysis, "analyze_model", lambda *a, **k: pytest.fail("cache not used"))
    cached = analyze_checkpoint(tiny_run, "last", settings)
    assert cached.summary()["selector"] == json.loads(json.dumps(first.summary()["selector"]))
    pd.testing.assert_series_equal(cached.table()["mean"], table["mean"], check_names=False)
    monkeypatch.undo()
    again = analyze_checkpoint(tiny_run, "last", settings, use_cache=False)
    pd.testing.assert_frame_equal(again.table(), table)  # same seed, same numbers
    # an analysis with other settings does not evict this one
    analyze_checkpoint(tiny_run, "last", AnalysisSettings(passes=("copier",), n_sequences=8))
    monkeypatch.setattr(runs_analysis, "analyze_model", lambda *a, **k: pytest.fail("cache evicted"))
    analyze_checkpoint(tiny_run, "last", settings)


def test_dynamics_table_and_stage_order(tiny_run):
    settings = AnalysisSettings(passes=("copier", "selector", "classifier"), **FAST)
    table, analyses = dynamics(tiny_run, "all", settings)
    assert sorted(table["step"].unique()) == sorted(analyses) and len(analyses) >= 3
    assert {"step", "pass", "unit", "metric", "value", "stderr"} <= set(table.columns)
    order = stage_order(table, analyses[max(analyses)])
    assert set(order["half_rise_step"]) <= {"selector", "copier", "classifier"}


def test_stage_order_of_tied_roles_is_undetermined(monkeypatch):
    import interp_icl.analysis.dynamics as dyn

    steps = [0, 1, 2, 4]
    def curves(rises):
        return {role: pd.Series([0.0 if s < at else 1.0 for s in steps], index=steps) for role, at in rises.items()}

    table = pd.DataFrame({"step": steps})
    monkeypatch.setattr(dyn, "role_curves", lambda *_: curves({"selector": 1, "copier": 2, "classifier": 4}))
    assert stage_order(table, None)["matches_paper_order"] is True
    monkeypatch.setattr(dyn, "role_curves", lambda *_: curves({"selector": 4, "copier": 2, "classifier": 1}))
    assert stage_order(table, None)["matches_paper_order"] is False
    monkeypatch.setattr(dyn, "role_curves", lambda *_: curves({"selector": 4, "copier": 4, "classifier": 4}))
    tied = stage_order(table, None)
    assert tied["ties"] == [4] and tied["matches_paper_order"] is None


def test_half_rise_step():
    curve = pd.Series([0.0, 0.1, 0.4, 0.6, 1.0], index=[0, 1, 2, 4, 8])
    assert half_rise_step(curve) == 4
    assert half_rise_step(pd.Series([5.0, 3.0, 1.0], index=[0, 1, 2])) == 1  # falling curves too
    assert half_rise_step(pd.Series([1.0, 1.0], index=[0, 1])) is None


def test_settings_and_steps_reject_bad_input(tiny_run):
    from interp_icl.runs import resolve_steps
    from interp_icl.cli import _parse_step

    with pytest.raises(InterpICLError, match="unknown analysis pass"):
        AnalysisSettings(passes=("copier", "telepathy"))
    with pytest.raises(InterpICLError, match="n_sequences must be an integer >= 2"):
        AnalysisSettings(n_sequences=1)
    with pytest.raises(InterpICLError, match="--step must be a checkpoint step"):
        _parse_step("soon")
    with pytest.raises(InterpICLError, match="no checkpoint at step 5"):
        resolve_steps(tiny_run, 5)


def test_cli_analyze_writes_tables_and_rejects_bad_input(tiny_run, tmp_path):
    cwd = tiny_run.parent
    out = tmp_path / "out"
    result = run_cli("analyze", str(tiny_run), "--n-sequences", "16", "--n-kernels", "50", "--out", str(out), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "copier: copied" in result.stdout and "classifier:" in result.stdout and "selector:" in result.stdout
    for suffix in ("csv", "parquet", "json"):
        assert (out / f"analysis_step8.{suffix}").is_file()
    summary = json.loads((out / "analysis_step8.json").read_text())
    assert "selected_offsets" in summary["headline"]

    result = run_cli("analyze", str(tiny_run), "--step", "all", "--passes", "copier,selector,classifier",
                     "--n-sequences", "16", "--out", str(out), "--no-progress", cwd=cwd)
    assert result.returncode == 0, result.stderr
    dyn = pd.read_parquet(out / "dynamics.parquet")
    assert dyn["step"].nunique() >= 3 and "half-rise steps" in result.stdout

    for args, message in [
        (["--step", "7"], "no checkpoint at step 7"),  # checkpoints: 0, 1, 2, 3, 4, 6, 8
        (["--passes", "copier,magic"], "unknown analysis pass"),
    ]:
        bad = run_cli("analyze", str(tiny_run), *args, "--out", str(tmp_path / "bad"), cwd=cwd)
        assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and message in bad.stderr
        assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
        assert not (tmp_path / "bad").exists()
    missing = run_cli("analyze", str(tmp_path / "nope"), cwd=cwd)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
