"""Run a sweep on Ray: every cell an ordinary run directory, then the results and summary tables.

    DIR/
      spec.json                      the spec the directory was made with
      runs/<cell>/                   one run directory per cell (`interp_icl.runs.load_run` loads it)
      cells/<cell>.json              a finished cell's row (written when the cell ends)
      results.{parquet,csv}          one row per cell
      summary.{parquet,csv}          one row per setting
      report.html, report_data/      the sweep report
      .lock                          held while a sweep runs here

Ray does all the scheduling: without an address a local Ray instance is started with `workers`
CPUs (each cell asks for one CPU, and runs torch on one thread); ``address="auto"`` or
``"HOST:PORT"`` joins a running Ray cluster, where each cell also asks for `gpus_per_cell` GPUs
(a fraction shares one). Rerunning a sweep skips the cells that finished (their row exists and
their config is unchanged) and resumes the others from their newest checkpoints, so a sweep
killed at any point and rerun ends with the same tables. A cell that raises is recorded as
failed with its one-line error; the others go on.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp_icl.errors import ConfigError, require
from interp_icl.jsonable import plain
from interp_icl.runs import rundir
from interp_icl.runs.files import check_output_dir, write_json
from interp_icl.runs.tables import write_table
from interp_icl.sweeps.aggregate import results_table, summary_table
from interp_icl.sweeps.cell import run_cell
from interp_icl.sweeps.spec import Cell, SweepSpec

SPEC_FILE = "spec.json"
CELLS_DIR = "cells"
RUNS_DIR = "runs"
LOCK_FILE = ".lock"


@dataclass
class Sweep:
    """A sweep directory's tables: `results` (one row per cell), `summary` (one per setting)."""

    path: Path
    spec: SweepSpec
    results: pd.DataFrame
    summary: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        if self.results.empty:
            return []
        return self.results.loc[self.results["status"] != "done", "cell"].tolist()


def run_sweep(
    spec: SweepSpec | dict | str | Path,
    out: str | Path,
    workers: int | None = None,
    address: str | None = None,
    force: bool = False,
    gpus_per_cell: float = 0.0,
    on_progress: Callable[[dict[str, int]], None] | None = None,
) -> Sweep:
    """Run every unfinished cell of `spec` into `out`, then write its tables (the report:
    `interp_icl.viz.sweep_report.build_sweep_report`).

    `spec`: a SweepSpec, its dict, or a JSON file. Everything is validated first (every cell's
    config is built); a directory made with another spec is refused unless `force` (then
    finished cells whose config is unchanged are kept). `on_progress` receives counts
    {total, done, failed, running} whenever a cell ends."""
    spec = _as_spec(spec)
    cells = spec.cells()
    out = Path(out)
    check_output_dir(out, "--out")
    require(workers is None or workers >= 1, f"--workers must be >= 1, got {workers}")
    require(gpus_per_cell >= 0, f"--gpus-per-cell must be >= 0, got {gpus_per_cell}")
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        _check_spec(out, spec, force)
        pending = [cell for cell in cells if not _finished(out, cell)]
        if force:
            for cell in pending:
                _drop_if_config_changed(cell_run_dir(out, cell.name), cell)
        counts = {"total": len(cells), "done": len(cells) - len(pending), "failed": 0, "running": 0}
        if pending:
            _run_on_ray(out, spec, pending, workers, address, gpus_per_cell, counts, on_progress)
        return _write_tables(out, spec, cells)


def load_sweep(path: str | Path) -> Sweep:
    """The spec and the two tables of a finished sweep directory."""
    path = Path(path)
    require(path.is_dir(), f"sweep directory {path} does not exist")
    require((path / SPEC_FILE).is_file(), f"{path} is not a sweep directory (no {SPEC_FILE})")
    require((path / "results.parquet").is_file(), f"{path} has no results yet; run the sweep")
    spec = SweepSpec.from_file(path / SPEC_FILE)
    return Sweep(path, spec, pd.read_parquet(path / "results.parquet"), pd.read_parquet(path / "summary.parquet"))


def cell_run_dir(sweep_dir: Path, cell: str) -> Path:
    """The run directory of `cell` in a sweep directory (an ordinary run: `load_run` loads it)."""
    return Path(sweep_dir) / RUNS_DIR / cell


# ----------------------------------------------------------------------------- pieces


def _as_spec(spec: SweepSpec | dict | str | Path) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, dict):
        return SweepSpec.from_dict(spec)
    return SweepSpec.from_file(spec)


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` (released by the kernel even if the process is killed)."""
    handle = open(out / LOCK_FILE, "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another sweep is running in {out} (it holds {out / LOCK_FILE}); wait for it or "
                "choose another --out"
            ) from None
        yield
    finally:
        handle.close()


def _check_spec(out: Path, spec: SweepSpec, force: bool) -> None:
    path = out / SPEC_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != spec.to_dict():
            require(
                force,
                f"{out} was made with another spec ({path}); pass --force to run this one there "
                "(finished cells whose config is unchanged are kept) or choose another --out",
            )
    write_json(path, spec.to_dict())


def _config_record(cell: Cell) -> dict[str, Any]:
    record = cell.config.to_dict()
    record.pop("versions", None)
    return plain(record)


def _finished(out: Path, cell: Cell) -> bool:
    path = out / CELLS_DIR / f"{cell.name}.json"
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return row.get("status") == "done" and row.get("config") == _config_record(cell)


def _drop_if_config_changed(run_dir: Path, cell: Cell) -> None:
    if rundir.is_run_dir(run_dir):
        stored = rundir.read_config(run_dir).to_dict()
        stored.pop("versions", None)
        if plain(stored) != _config_record(cell):
            shutil.rmtree(run_dir)


def _cell_task(cell: Cell, spec: SweepSpec, run_dir: str) -> dict[str, Any]:
    """What a Ray worker runs: one cell, its row."""
    return run_cell(cell, spec, Path(run_dir))


def _run_on_ray(
    out: Path,
    spec: SweepSpec,
    cells: list[Cell],
    workers: int | None,
    address: str | None,
    gpus_per_cell: float,
    counts: dict[str, int],
    on_progress: Callable[[dict[str, int]], None] | None,
) -> None:
    import ray

    started_here = not ray.is_initialized()  # else: the caller's instance (a notebook, tests)
    if started_here and address is None:
        start_local_ray(workers or os.cpu_count() or 1, gpus=None if gpus_per_cell else 0)
    elif started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_cell, max_retries=0)(_cell_task)
        refs = {remote.remote(cell, spec, str(cell_run_dir(out, cell.name))): cell for cell in cells}
        slots = workers or int(ray.cluster_resources().get("CPU", 1))
        counts["running"] = min(slots, len(refs))
        if on_progress is not None:
            on_progress(dict(counts))
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            cell = refs.pop(ready[0])
            try:
                row = ray.get(ready[0])
            except Exception as exc:  # the worker itself died (killed, out of memory)
                row = {"cell": cell.name, "setting": cell.index, "seed": cell.seed, "status": "failed",
                       "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500]}
            _record(out, cell, row)
            counts["done" if row["status"] == "done" else "failed"] += 1
            counts["running"] = min(slots, len(refs))
            if on_progress is not None:
                on_progress(dict(counts))
    finally:
        if started_here:
            ray.shutdown()


def start_local_ray(cpus: int, gpus: int | None = 0) -> None:
    """Start a local Ray instance with `cpus` CPUs (and `gpus` GPUs; None: detect) that binds and
    talks on 127.0.0.1 only, not on the machine's network address: Ray's own single-machine switch
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), read when ray is imported and inherited by its
    worker processes. `run_sweep` starts one this way when none is running."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import sys

    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray was imported before the variable was set
        constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false", "False")
    import ray

    options = {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    ray.init(**options, **({} if gpus is None else {"num_gpus": gpus}))


def _record(out: Path, cell: Cell, row: dict[str, Any]) -> None:
    from interp_icl.sweeps.cell import axis_value

    row = {**row, **{k: axis_value(v) for k, v in cell.setting.items()}, "config": _config_record(cell)}
    write_json(out / CELLS_DIR / f"{cell.name}.json", row)


def _write_tables(out: Path, spec: SweepSpec, cells: list[Cell]) -> Sweep:
    rows = []
    for cell in cells:
        path = out / CELLS_DIR / f"{cell.name}.json"
        if path.is_file():
            row = json.loads(path.read_text())
            row.pop("config", None)
            rows.append(row)
    axes = list(spec.axes)
    results = results_table(rows, axes)
    summary = summary_table(results, axes)
    write_table(results, out, "results")
    write_table(summary, out, "summary")
    return Sweep(out, spec, pd.read_parquet(out / "results.parquet"), pd.read_parquet(out / "summary.parquet"))
