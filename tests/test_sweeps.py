"""Sweeps on a real local Ray instance: tables identical with 1 and 2 workers and equal to the cells
run alone, SIGKILL + rerun, failed cells, the lock, a changed spec; specs validated up front;
Wilson intervals against published values."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from interp_icl.analysis.pipeline import AnalysisSettings
from interp_icl.errors import ConfigError
from interp_icl.runs import analyze_checkpoint, create_run, load_run
from interp_icl.sweeps import SweepSpec, load_sweep, run_sweep, wilson_interval
from interp_icl.viz.sweep_report import build_sweep_report
from tests.test_cli import run_cli

BASE = {
    "name": "tiny", "seed": 1,
    "task": {"vocab_size": 3, "parents": [1], "alpha": 0.5, "seq_len": 24},
    "model": {"family": "standard", "d_model": 16, "d_head": 8, "n_heads": 2, "d_mlp": 32},
    "train": {"steps": 60, "batch_size": 8, "lr": 3e-3, "eval_every": 40, "n_eval": 32, "checkpoint_every": 20},
}
SPEC = {
    "base": {"config": BASE},
    "axes": {"task.parents": [[1], [2]]},
    "seeds": [0, 1],
    "do": ["train", "analyze", "roles", "circuit"],
    "analysis": {"n_sequences": 16, "n_kernels": 20},
    "roles": {"n_sequences": 8},
    "circuit": {"n_sequences": 8},
}


def without_wall_time(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in table.columns if not c.startswith("wall_s")]]


# every test here on the session's local 2-CPU Ray instance (tests/conftest.py); a test that
# needs another shuts it down and restarts it
pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    addresses = []

    def on_progress(counts):  # called by the driver while its local Ray instance is up
        import ray

        addresses.append(ray.get_runtime_context().gcs_address)

    sweep = run_sweep(SPEC, tmp_path_factory.mktemp("sweep") / "two", workers=2, on_progress=on_progress)
    sweep.addresses = addresses
    return sweep


def test_a_local_ray_instance_talks_on_loopback_only(two_workers):
    assert two_workers.addresses and all(a.startswith("127.0.0.1:") for a in two_workers.addresses)


def test_a_cell_equals_its_config_trained_and_analysed_alone(two_workers, tmp_path):
    cell = SweepSpec.from_dict(SPEC).cells()[2]  # parents [2], seed 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a cell runs on
    try:
        final = create_run(cell.config, tmp_path / "alone", progress=False).run().final
        headline = analyze_checkpoint(tmp_path / "alone", "last", AnalysisSettings(n_sequences=16, n_kernels=20)).headline()
    finally:
        torch.set_num_threads(threads)
    row = two_workers.results.set_index("cell").loc[cell.name]
    assert row["eval_loss"] == final["eval_loss"] and row["loss_over_bayes"] == final["eval_loss"] / final["bayes_loss"]
    assert row["selection_margin"] == headline["selection_margin"]
    for key, holds in headline["verdicts"].items():
        assert row[f"verdict.{key}"] == holds
    # the cell's run directory is an ordinary run: it loads with the same weights
    ours, theirs = load_run(two_workers.path / "runs" / cell.name), load_run(tmp_path / "alone")
    for name, value in ours.model.state_dict().items():
        assert torch.equal(value, theirs.model.state_dict()[name])


def test_summary_rates_and_intervals_come_from_the_cells(two_workers):
    results, summary = two_workers.results, two_workers.summary
    for setting, group in results.groupby("setting"):
        row = summary.set_index("setting").loc[setting]
        holds = group["verdict.copier_covers_parents"].astype(bool)
        assert row["verdict.copier_covers_parents_rate"] == holds.mean()
        low, high = wilson_interval(int(holds.sum()), len(holds))
        assert (row["verdict.copier_covers_parents_low"], row["verdict.copier_covers_parents_high"]) == (low, high)
        assert row["loss_over_bayes_mean"] == pytest.approx(group["loss_over_bayes"].mean(), abs=1e-12)
        assert row["loss_over_bayes_stderr"] == pytest.approx(group["loss_over_bayes"].std(ddof=1) / 2 ** 0.5, abs=1e-12)


def test_the_circuit_step_is_the_runs_stored_circuit_and_its_rates(two_workers):
    from interp_icl.runs.circuits import run_circuit

    results = two_workers.results.set_index("cell")
    for cell in results.index:
        report = run_circuit(two_workers.path / "runs" / cell, "last", "exact", n_sequences=8, role_sequences=8)  # stored
        row = results.loc[cell]
        assert row["circuit.edges_needed"] == report.circuit_size and row["circuit.added_edges"] == len(report.added)
        assert row["circuit.hypothesis_recovered"] == pytest.approx(report.hypothesis["recovered"], nan_ok=True)
        for name, t in report.hypothesis["types"].items():
            value = row[f"circuit.contains.{name}"]
            assert (value is pd.NA) if not t["edges"] else bool(value) == (t["in_circuit"] == len(t["edges"]))
    summary = two_workers.summary.set_index("setting")
    for column in [c for c in two_workers.results.columns if c.startswith("circuit.contains.")]:
        for setting, group in two_workers.results.groupby("setting"):
            decided = group[column].dropna().astype(bool)
            assert summary.loc[setting, f"{column}_n"] == len(decided)
            if len(decided):
                assert summary.loc[setting, f"{column}_rate"] == decided.mean()


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 0/10 -> 0 to 0.2775; 5/10 -> 0.2366 to 0.7634; 9/10 -> 0.5958 to 0.9821
    for k, expected in [(0, (0.0, 0.2775)), (5, (0.2366, 0.7634)), (9, (0.5958, 0.9821))]:
        assert wilson_interval(k, 10) == pytest.approx(expected, abs=1e-4)


def test_sweep_report_has_settings_losses_and_cell_links(two_workers):
    path = build_sweep_report(two_workers)
    text = open(path).read()
    assert "s001-seed1" in text and "interp-icl report" in text
    data = two_workers.path / "report_data"
    assert (data / "summary.csv").is_file() and (data / "loss_over_bayes.csv").is_file()
    assert "<script src" not in text and "<link" not in text  # offline: everything inlined


def test_sigkill_then_rerun_ends_with_the_same_tables(two_workers, tmp_path):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "interp_icl.cli", "sweep", str(spec_path), "--out", str(out), "--workers", "2",
         "--no-progress", "--no-report"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill once a cell has checkpoints
        if any((out / "runs").glob("*/checkpoints/step_00000040.safetensors")):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the Ray processes it started
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert not (out / "results.parquet").exists()
    again = run_sweep(spec_path, out, workers=2)
    pd.testing.assert_frame_equal(without_wall_time(again.results), without_wall_time(two_workers.results))
    pd.testing.assert_frame_equal(without_wall_time(again.summary), without_wall_time(two_workers.summary))


def small_spec(**changes):
    spec = {"base": {"config": {**BASE, "train": {**BASE["train"], "steps": 4, "checkpoint_every": 4}}},
            "seeds": [0], "do": ["train"]}
    spec.update(changes)
    return spec


def test_a_failing_cell_is_recorded_and_the_command_exits_1_naming_it(tmp_path):
    spec = small_spec(axes={"train.device": ["cpu", "cuda:7"]})
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA for the failing cell")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = run_cli("sweep", "spec.json", "--out", "out", "--no-progress", "--no-report", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: 1 of 2 cells failed: s001-seed0: ") and "CUDA" in done.stderr
    results = load_sweep(tmp_path / "out").results.set_index("cell")
    assert results.loc["s000-seed0", "status"] == "done" and results.loc["s001-seed0", "status"] == "failed"
    summary = load_sweep(tmp_path / "out").summary.set_index("setting")
    assert summary.loc[1, "n_failed"] == 1 and summary.loc[0, "n_failed"] == 0


def test_lock_changed_spec_and_force(tmp_path):
    out = tmp_path / "out"
    first = run_sweep(small_spec(), out, workers=1)
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another sweep is running"):
            run_sweep(small_spec(), out, workers=1)
    changed = small_spec(seeds=[0, 1])
    with pytest.raises(ConfigError, match="made with another spec"):
        run_sweep(changed, out, workers=1)
    before = (out / "cells" / "s000-seed0.json").read_text()
    forced = run_sweep(changed, out, workers=1, force=True)
    assert forced.results["cell"].tolist() == ["s000-seed0", "s000-seed1"]
    assert (out / "cells" / "s000-seed0.json").read_text() == before  # kept, not rerun
    assert first.results.iloc[0]["eval_loss"] == forced.results.iloc[0]["eval_loss"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"axes": {"task.alpha": [0.5, -1.0]}}, "sweep cell s001-seed0 (task.alpha=-1.0): invalid config.task"),
        ({"axes": {"trian.lr": [0.1]}}, "unknown config key 'trian.lr'"),
        ({"do": ["analyze"]}, '"do" must begin with it'),
        ({"seeds": []}, "sweep spec seeds"),
        ({"zip": [["task.alpha", "train.lr"]], "axes": {"task.alpha": [1.0], "train.lr": [0.1, 0.2]}}, "different lengths"),
        ({"bogus": 1}, "sweep spec bogus"),
    ],
)
def test_a_bad_spec_is_refused_whole_before_any_cell_runs(tmp_path, change, message):
    (tmp_path / "spec.json").write_text(json.dumps(small_spec(**change)))
    done = run_cli("sweep", "spec.json", "--out", "out", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_zip_groups_vary_together_and_axes_form_a_grid():
    spec = SweepSpec.from_dict(small_spec(
        axes={"task.vocab_size": [3, 4], "task.seq_len": [20, 30], "train.lr": [0.1, 0.2]},
        zip=[["task.vocab_size", "task.seq_len"]], seeds=[0, 5],
    ))
    settings = spec.settings()
    assert settings == [
        {"task.vocab_size": 3, "task.seq_len": 20, "train.lr": 0.1},
        {"task.vocab_size": 3, "task.seq_len": 20, "train.lr": 0.2},
        {"task.vocab_size": 4, "task.seq_len": 30, "train.lr": 0.1},
        {"task.vocab_size": 4, "task.seq_len": 30, "train.lr": 0.2},
    ]
    cells = spec.cells()
    assert [c.name for c in cells][:2] == ["s000-seed0", "s000-seed5"] and len(cells) == 8
    assert cells[5].config.task.vocab_size == 4 and cells[5].config.train.lr == 0.1 and cells[5].config.seed == 5


def test_report_heatmaps_pool_counts_over_the_other_axes(tmp_path):
    """A synthetic 2 x 2 x 2 grid, 2 seeds: every pair of axes gets a heatmap whose rates are the
    verdict counts pooled over the third axis (counted here by hand)."""
    import itertools

    from interp_icl.sweeps.aggregate import results_table, summary_table
    from interp_icl.sweeps.driver import Sweep

    axes = ["task.alpha", "train.lr", "model.n_heads"]
    spec = SweepSpec.from_dict(small_spec(axes={"task.alpha": [0.1, 1.0], "train.lr": [0.01, 0.1],
                                                 "model.n_heads": [1, 2]}, seeds=[0, 1]))
    rows = []
    for (index, setting), seed in itertools.product(enumerate(spec.settings()), spec.seeds):
        holds = setting["task.alpha"] == 1.0 and (seed == 0 or setting["model.n_heads"] == 2)
        rows.append({"cell": f"s{index:03d}-seed{seed}", "setting": index, "seed": seed, **setting,
                     "loss_over_bayes": 1.0 + index / 100, "verdict.selector_selected_set": holds,
                     "wall_s": 1.0, "status": "done", "error": None})
    results = results_table(rows, axes)
    sweep = Sweep(tmp_path, spec, results, summary_table(results, axes))
    build_sweep_report(sweep)
    data = tmp_path / "report_data"
    maps = sorted(p.name for p in data.glob("heatmap_*.csv"))
    assert len(maps) == 3  # alpha x lr, alpha x heads, lr x heads
    by_alpha_heads = pd.read_csv(data / "heatmap_verdict.selector_selected_set_task.alpha_model.n_heads.csv")
    rate = by_alpha_heads.set_index(["model.n_heads", "task.alpha"])["rate"]
    # alpha 1.0: 2 heads always hold (4 of 4 cells over lr x seed), 1 head only seed 0 (2 of 4)
    assert rate.loc[(2, 1.0)] == 1.0 and rate.loc[(1, 1.0)] == 0.5 and rate.loc[(1, 0.1)] == 0.0


def test_loss_over_bayes_only_where_the_bayes_loss_is_not_zero():
    from interp_icl.sweeps.cell import _losses

    assert _losses({"eval_loss": 0.5, "bayes_loss": 0.25})["loss_over_bayes"] == 2.0
    noiseless = _losses({"eval_loss": 0.06, "bayes_loss": 4e-16})  # least squares, no noise
    assert "loss_over_bayes" not in noiseless and noiseless["bayes_loss"] == 4e-16
    assert "loss_over_bayes" not in _losses({"eval_loss": 0.06})


# Last in the module: it restarts the Ray instance, whose new worker processes start cold (they
# import torch and the project again: the shared sweep took 20 s on them against 7 s on warm ones).
def test_tables_are_identical_with_one_and_two_workers(two_workers, tmp_path):
    import ray

    from interp_icl.sweeps.driver import start_local_ray

    ray.shutdown()  # run_sweep starts its own 1-CPU instance: one cell at a time
    try:
        one = run_sweep(SPEC, tmp_path / "one", workers=1)
    finally:
        start_local_ray(2)
    pd.testing.assert_frame_equal(without_wall_time(one.results), without_wall_time(two_workers.results))
    pd.testing.assert_frame_equal(without_wall_time(one.summary), without_wall_time(two_workers.summary))
    results = two_workers.results
    assert results["cell"].tolist() == ["s000-seed0", "s000-seed1", "s001-seed0", "s001-seed1"]
    assert (results["status"] == "done").all() and results["error"].isna().all()
    assert results["task.parents"].tolist() == ["[1]", "[1]", "[2]", "[2]"]
    loaded = load_sweep(two_workers.path)
    pd.testing.assert_frame_equal(loaded.results, two_workers.results)
