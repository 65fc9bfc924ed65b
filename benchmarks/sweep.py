"""A sweep of 8 small runs with 2 workers against the same 8 runs one after another.

Serial: 8 × ``interp-icl train --config cell.json`` (fresh processes, as a user would script it).
Sweep: ``interp-icl sweep spec.json --workers 2`` (Ray start-up, its worker processes' imports
and the tables included). Both train only (``do: ["train"]``). Also timed: a bare local Ray
start + shutdown, and each cell's own wall time inside its worker (``wall_s``), from which the
per-cell overhead follows. Run on an idle machine.

    python benchmarks/sweep.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

CLI = str(Path(sys.executable).with_name("interp-icl"))
BASE = {
    "name": "bench", "seed": 0,
    "task": {"vocab_size": 3, "parents": [1, 2], "alpha": 0.5, "seq_len": 48},
    "model": {"family": "standard", "d_model": 32, "d_head": 16, "n_heads": 2, "d_mlp": 64},
    "train": {"steps": 300, "batch_size": 16, "lr": 3e-3, "eval_every": 100, "n_eval": 128,
              "checkpoint_every": 100},
}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def ray_startup() -> float:
    code = ("import os, time; os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'; "
            "t = time.perf_counter(); import ray; "
            "ray.init(num_cpus=2, include_dashboard=False, logging_level='ERROR'); "
            "ray.shutdown(); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    base = {**BASE, "train": {**BASE["train"], "steps": args.steps}}
    spec = {"base": {"config": base}, "axes": {"task.alpha": [0.5, 1.0]}, "seeds": [0, 1, 2, 3],
            "do": ["train"]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "spec.json").write_text(json.dumps(spec))
        from interp_icl.sweeps import SweepSpec

        cells = SweepSpec.from_dict(spec).cells()
        serial = []
        for cell in cells:
            config = tmp / f"{cell.name}.json"
            config.write_text(cell.config.to_json())
            serial.append(timed([CLI, "train", "--config", str(config), "--out-dir", str(tmp / "serial"),
                                 "--no-progress"]))
        sweep = timed([CLI, "sweep", str(tmp / "spec.json"), "--out", str(tmp / "sweep"), "--workers", "2",
                       "--no-progress", "--no-report"])
        cell_seconds = pd.read_parquet(tmp / "sweep" / "results.parquet")["wall_s"].tolist()
    startup = ray_startup()
    result = {
        "cells": len(cells),
        "steps_per_run": args.steps,
        "serial_seconds": round(sum(serial), 2),
        "serial_per_run": [round(t, 2) for t in serial],
        "sweep_seconds": round(sweep, 2),
        "sweep_over_serial": round(sweep / sum(serial), 3),
        "ray_startup_seconds": round(startup, 2),
        "cell_wall_seconds": [round(t, 2) for t in cell_seconds],
        "overhead_per_cell_seconds": round((2 * sweep - sum(cell_seconds)) / len(cells), 2),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
