"""The CLI as a user runs it: exit codes, one-line errors, SIGKILL + --resume.

Most tests run the command line in-process (`interp_icl.cli.run`, the console script's body), so
they do not pay the TransformerLens import per command; a few run the installed console script in
a real subprocess (`run_cli_subprocess`), including the SIGKILL test.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from interp_icl import cli
from interp_icl.runs import create_run, rundir
from tests.conftest import copy_run, tiny_config

CLI = [sys.executable, "-m", "interp_icl.cli"]


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd) -> Completed:
    """Run `interp-icl ARGS` in-process in folder `cwd`; its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.run([str(a) for a in args])
    finally:
        os.chdir(before)
    return Completed(code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args, cwd) -> subprocess.CompletedProcess:
    """Run `interp-icl ARGS` as a separate process, as a user's shell does."""
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_refused(cases, folder):
    """Each (args, message): one `error:` line containing message, exit 2, `folder` unchanged."""
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    for args, message in cases:
        result = run_cli(*args, cwd=folder)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr, (args, result.stderr)
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before, args


def _write_config(path, **sections):
    path.write_text(tiny_config(**sections).to_json())
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--vocab-size", "1"], "task.vocab_size must be an integer >= 2"),
        (["train", "--parents", ""], "task.parents is empty"),
        (["train", "--family", "gih", "--parents", "1,5"], "beyond the gih window"),
        (["train", "--parents", "1,200"], "must exceed the largest parent offset"),
        (["train", "--steps", "0"], "train.steps must be >= 1"),
        (["train", "--batch-size", "-3"], "train.batch_size must be >= 1"),
        (["train", "--optimizer", "lion"], "unknown optimizer 'lion'"),
        (["train", "--family", "mamba"], "unknown model family 'mamba'"),
        (["train", "--config", "missing.json"], "config file missing.json does not exist"),
        (["train", "--preset", "gpt2"], "unknown preset 'gpt2'"),
        (["runs", "--out-dir", "nowhere"], "nowhere does not exist"),
        (["report", "runs/nowhere"], "run directory runs/nowhere does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_malformed_config_files(tmp_path):
    (tmp_path / "a.json").write_text('{"task": {"vocab": 3}}')
    (tmp_path / "b.json").write_text('{"task": ')
    (tmp_path / "c.json").write_text('{"train": {"steps": "many"}}')
    for name, message in [("a.json", "unknown key(s) in config.task: vocab"), ("b.json", "not valid JSON"), ("c.json", "invalid config.train")]:
        result = run_cli("train", "--config", name, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--bogus"], "No such option: --bogus"),
        (["train", "--steps", "abc"], "Invalid value for '--steps'"),
        (["analyze"], "Missing argument 'run'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["train", "--preset"], "Option '--preset' requires an argument"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and message in result.stderr
    assert "Usage" not in result.stderr


def test_output_paths_are_checked_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    cases = [
        (["train", "--out-dir", "afile", "--steps", "1"], "--out-dir afile is a file"),
        (["runs", "--out-dir", "afile"], "--out-dir afile is a file"),
        (["analyze", "afile"], "afile is a file, not a run directory"),
        (["report", "nowhere", "--out", "afile/r.html"], "run directory nowhere does not exist"),
    ]
    for args, message in cases:
        result = run_cli(*args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_console_script_smoke(tmp_path):
    """The installed entry point in a real process: help, a bad input, a tiny training run."""
    bad = run_cli_subprocess("train", "--steps", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ") and "train.steps must be >= 1" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    cfg = _write_config(tmp_path / "tiny.json", train={"steps": 2, "eval_every": 1})
    done = run_cli_subprocess("train", "--config", str(cfg), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Bayes-optimal" in done.stdout and rundir.list_checkpoints(tmp_path / "runs" / "tiny")


def test_train_runs_and_existing_run_needs_force(tmp_path):
    cfg = _write_config(tmp_path / "tiny.json", train={"steps": 6})
    first = run_cli("train", "--config", str(cfg), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Bayes-optimal" in first.stdout
    metrics = (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text()
    again = run_cli("train", "--config", str(cfg), "--no-progress", cwd=tmp_path)
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text() == metrics
    listing = run_cli("runs", cwd=tmp_path)
    assert listing.returncode == 0 and "tiny" in listing.stdout and "standard" in listing.stdout
    other = run_cli("train", "--config", str(cfg), "--resume", "--seed", "5", "--no-progress", cwd=tmp_path)
    assert other.returncode == 2 and "differs in seed" in other.stderr


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = _write_config(
        tmp_path / "tiny.json",
        task={"seq_len": 48},
        train={"steps": 600, "checkpoint_every": 50, "eval_every": 50},
    )
    reference = run_cli("train", "--config", str(cfg), "--name", "reference", "--no-progress", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr

    proc = subprocess.Popen([*CLI, "train", "--config", str(cfg), "--no-progress"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "checkpoints").is_dir() and any(s >= 100 for s in rundir.list_checkpoints(run_dir)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = rundir.list_checkpoints(run_dir)[-1]
    assert killed_at < 600

    resumed = run_cli("train", "--config", str(cfg), "--resume", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(rundir.read_metrics(run_dir)) == strip(rundir.read_metrics(tmp_path / "runs" / "reference"))
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["step"] == 600


def test_quickstart_smoke(tmp_path):
    result = run_cli("quickstart", "--steps", "3", "--n-sequences", "64", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "model loss / Bayes loss" in result.stdout
    assert "three roles at step 3" in result.stdout and "GIH hypothesis test" in result.stdout
    assert "one seed's" in result.stdout and "analyses/sweeps/quickstart_seeds.json" in result.stdout
    assert (tmp_path / "runs" / "quickstart" / "report_data" / "circuit_faithfulness.csv").is_file()
    assert "circuit (eap-ig, 64 sequences):" in " ".join(result.stdout.split())
    again = run_cli("quickstart", "--steps", "3", "--n-sequences", "64", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_bad_inputs_found_by_a_new_user_are_refused_before_any_work(tmp_path):
    """Each gets one `error:` line, exit 2, and leaves the folder as it was (the run is a
    release-0.1.0 fixture, copied: nothing may be added to it either)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "release-0.1.0-standard", run)
    (tmp_path / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    (tmp_path / "cfgdir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["train", "--config", "latin1.json"], "is not UTF-8 text"),
        (["train", "--config", "cfgdir"], "config file cfgdir is a directory"),
        (["train", "--alpha", "inf"], "task.alpha must be a finite number"),
        (["train", "--alpha", "nan"], "task.alpha must be a finite number"),
        (["train", "--steps", "abc"], "Invalid value for '--steps'"),
        (["train", "--parents", "1,1"], "task.parents has duplicate offset(s) 1"),
        (["runs", "--out-dir", "afile"], "is a file, not a directory"),
        (["analyze", "run", "--out", "afile"], "--out afile is a file"),
        (["patch", "run", "--out", "afile"], "--out afile is a file"),
        (["patch", "run", "--roles", "--out", "afile"], "--out afile is a file"),
        (["report", "run", "--out", "afile/r.html"], "afile is a file"),
    ]
    assert_refused(cases, tmp_path)


def test_circuit_scores_every_edge_and_writes_the_tables(tmp_path, tiny_trained_run):
    run = copy_run(tiny_trained_run, tmp_path / "run")
    result = run_cli("circuit", run, "--method", "exact", "--n-sequences", "8", "--edges", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "top 5 of 46 edges" in result.stdout and "circuit (the fewest edges keeping 0.9 of the gap)" in result.stdout
    assert "GIH hypothesis" in result.stdout
    stem = run / "circuits" / "circuit_exact_step40"
    edges = pd.read_csv(f"{stem}.csv")
    assert len(edges) == 46 and list(edges["rank"]) == list(range(1, 47))
    assert (edges["score"].abs().diff().dropna() <= 0).all()  # ranked by |score|
    summary = json.loads(Path(f"{stem}.json").read_text())
    assert edges["in_circuit"].sum() == summary["circuit_edges"]  # the first edges_needed of the ranking
    assert edges.loc[edges["in_circuit"] & edges["hypothesis"].isna(), "edge"].tolist() == summary["added"]
    curve = pd.read_csv(f"{stem}_faithfulness.csv")
    assert curve["edges"].iloc[0] == 0 and curve["recovered"].iloc[-1] == pytest.approx(1.0)
    # greedy pruning at a threshold no edge reaches drops every edge: the circuit is the empty set
    pruned = run_cli("circuit", run, "--method", "acdc", "--threshold", "100", "--n-sequences", "8", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert "circuit (pruned at 100 nats): 0 edges" in " ".join(pruned.stdout.split())
    assert json.loads((run / "circuits" / "circuit_acdc_step40.json").read_text())["circuit_edges"] == 0


def test_circuit_refuses_bad_input_before_any_work(tmp_path, tiny_trained_run):
    import shutil

    run = copy_run(tiny_trained_run, tmp_path / "run")
    gih = tmp_path / "gih"
    shutil.copytree(Path(__file__).parent / "fixtures" / "release-0.1.0-gih", gih)
    repeated = tmp_path / "repeated"
    create_run(tiny_config(task={"name": "repeated", "block_len": 10, "n_repeats": 2, "seq_len": 20},
                           train={"steps": 2, "checkpoint_every": 2}), repeated, progress=False).run()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["circuit", run, "--method", "acd"], "unknown method 'acd'"),
        (["circuit", run, "--method", "acdc", "--threshold", "-1"], "--threshold must be >= 0"),
        (["circuit", run, "--edges", "0"], "--edges must be at least 1"),
        (["circuit", run, "--ig-steps", "0"], "--ig-steps must be at least 1"),
        (["circuit", run, "--out", "afile"], "--out afile is a file"),
        (["circuit", repeated], "circuit needs an in-context Markov task"),
    ]
    assert_refused(cases, tmp_path)
    done = run_cli("circuit", gih, "--method", "exact", "--n-sequences", "8", cwd=tmp_path)  # the gih graph
    assert done.returncode == 0, done.stderr
    assert "F[0,1]" in done.stdout and "selector->classifier.q" in done.stdout
